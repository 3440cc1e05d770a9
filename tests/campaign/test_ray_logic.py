"""The scheduling logic of the Ray backend (vmalab.campaign_ray) against a stand-in for ray: the window
of tasks in flight follows the live workers of the plan's kernel (workers that join get work), a run whose
workers all vanish stops with one line after the wait, and task failures become one-line errors.  The real
cluster is tests/campaign/test_ray.py; these run in well under a second."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest

from vmalab import campaign_ray
from vmalab.campaign import CampaignError, kernel_resource_name, plan_fuzz
from vmalab.oracle.fuzz import FuzzConfig


class RayError(Exception):
    pass


class TaskError(RayError):
    """Like ray.exceptions.RayTaskError: the worker's exception is ``cause``."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"task failed: {cause}")
        self.cause = cause


class Ref:
    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args


class FakeRay:
    """Enough of ray for campaign_ray._drive: nodes() comes from ``nodes_at(call)``; a task runs when
    ray.get() asks for it, unless ``fail`` says otherwise; ``stuck`` keeps tasks pending for ever."""

    exceptions = types.SimpleNamespace(RayError=RayError)

    def __init__(self, nodes_at: Callable[[int], list[dict[str, Any]]], fail: BaseException | None = None,
                 stuck: Callable[[int], bool] = lambda call: False) -> None:
        self.nodes_at, self.fail, self.stuck = nodes_at, fail, stuck
        self.node_calls = 0
        self.wait_calls = 0
        self.in_flight: list[int] = []   # tasks pending at each wait()
        self.options: dict[str, Any] = {}

    def nodes(self) -> list[dict[str, Any]]:
        self.node_calls += 1
        return self.nodes_at(self.node_calls)

    def put(self, obj: Any) -> Any:
        return obj

    def remote(self, fn: Callable[..., Any]) -> Any:
        fake = self

        class Task:
            def options(self, **kw: Any) -> Task:
                fake.options = kw
                return self

            def remote(self, *args: Any) -> Ref:
                return Ref(fn, args)
        return Task()

    def wait(self, refs: list[Ref], num_returns: int = 1, timeout: float | None = None) -> tuple[list[Ref], list[Ref]]:
        self.wait_calls += 1
        self.in_flight.append(len(refs))
        if self.stuck(self.wait_calls):
            import time
            time.sleep(0.01)
            return [], refs
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: Ref) -> Any:
        if self.fail is not None:
            raise self.fail
        try:
            return ref.fn(*ref.args)
        except Exception as e:
            raise TaskError(e) from e


RELEASE = "6.18.44-test"
RESOURCE = kernel_resource_name(RELEASE)


def node(cpus: int, resource: str = RESOURCE, alive: bool = True) -> dict[str, Any]:
    return {"Alive": alive, "Resources": {"CPU": float(cpus), resource: 1.0}}


@pytest.fixture
def plan(monkeypatch: pytest.MonkeyPatch) -> Any:
    # a case is a record of its index (the real per-case function runs the live kernel: test_ray.py)
    monkeypatch.setattr(campaign_ray, "run_case_record", lambda plan, i: {"i": i, "status": "agree", "digest": "agree"})
    monkeypatch.setattr(campaign_ray, "_RESIZE_SECONDS", 0.0)
    return plan_fuzz(5, 400, FuzzConfig())


def drive(fake: FakeRay, plan: Any, indices: list[int], **kw: Any) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    args: dict[str, Any] = dict(jobs=None, retries=3, wait_seconds=0.3, chunk=None, resource=RESOURCE,
                                release=RELEASE, report=False)
    args.update(kw)
    campaign_ray._drive(fake, plan, indices, got.append, **args)
    return got


def test_every_index_once_and_tasks_pinned_to_the_kernel_resource(plan: Any) -> None:
    fake = FakeRay(lambda call: [node(2), node(4, resource="vmalab-kernel-other")])
    got = drive(fake, plan, list(range(100)))
    assert sorted(r["i"] for r in got) == list(range(100))
    assert fake.options["resources"] == {RESOURCE: campaign_ray.RESOURCE_SLIVER}
    assert fake.options["num_cpus"] == 1 and fake.options["max_retries"] == 3
    # only the node with the plan's kernel counts: 2 CPUs -> 4 tasks in flight, never more
    assert max(fake.in_flight) == 4


def test_workers_that_join_get_work(plan: Any) -> None:
    # one worker with one CPU, then (from the 5th look at the cluster) three more with 2 CPUs each
    fake = FakeRay(lambda call: [node(1)] + ([node(2), node(2), node(2)] if call >= 5 else []))
    got = drive(fake, plan, list(range(400)), chunk=1)
    assert sorted(r["i"] for r in got) == list(range(400))
    assert fake.in_flight[0] == 2 and max(fake.in_flight) == 14   # 2 x (1 + 2 + 2 + 2) CPUs


def test_jobs_fixes_the_window(plan: Any) -> None:
    fake = FakeRay(lambda call: [node(8)])
    drive(fake, plan, list(range(50)), chunk=1, jobs=3)
    assert max(fake.in_flight) == 3


def test_no_worker_of_the_kernel(plan: Any) -> None:
    fake = FakeRay(lambda call: [node(4, resource="vmalab-kernel-other"), node(4, alive=False)])
    with pytest.raises(CampaignError, match=rf"no live Ray worker advertises kernel release {RELEASE} "
                                            rf"\(resource {RESOURCE}\) after 0.3 s"):
        drive(fake, plan, [0, 1, 2])


def test_workers_vanish_midway(plan: Any) -> None:
    # the worker is there for the first looks, then gone; its tasks never finish
    fake = FakeRay(lambda call: [node(1)] if call <= 2 else [], stuck=lambda call: call > 3)
    with pytest.raises(CampaignError, match=r"no live Ray worker with kernel release .* for 0.3 s "
                                            r"\(\d+ of 40 cases done; rerun the same command to resume\)"):
        drive(fake, plan, list(range(40)), chunk=1)


def test_a_refusing_worker_stops_the_run_with_its_message(plan: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(plan: Any, i: int) -> dict[str, Any]:
        raise CampaignError("this worker runs kernel A, the plan needs B")
    monkeypatch.setattr(campaign_ray, "run_case_record", refuse)
    with pytest.raises(CampaignError, match=r"^this worker runs kernel A, the plan needs B$"):
        drive(FakeRay(lambda call: [node(1)]), plan, [0, 1])


def test_a_worker_with_another_vmalab_is_refused(plan: Any) -> None:
    import dataclasses
    other = dataclasses.replace(plan, vmalab={**plan.vmalab, "source": "0" * 16})
    with pytest.raises(CampaignError, match=r"runs vmalab .* the campaign was planned with .*\(source 0{16}\): "
                                            r"install the same vmalab on every worker"):
        drive(FakeRay(lambda call: [node(1)]), other, [0])


def test_a_task_that_keeps_dying(plan: Any) -> None:
    fake = FakeRay(lambda call: [node(1)], fail=RayError("The worker died unexpectedly\nmore text"))
    with pytest.raises(CampaignError, match=r"^ray: cases 0\.\.3 failed after 4 attempt\(s\): RayError: "
                                            r"The worker died unexpectedly$"):
        drive(fake, plan, list(range(8)), chunk=4)


def test_address_checks() -> None:
    with pytest.raises(CampaignError, match="expected HOST:PORT"):
        campaign_ray._check_reachable("nohostport")
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # bound, not listening: refused
        with pytest.raises(CampaignError, match=f"cannot connect to the Ray cluster at 127.0.0.1:{port}"):
            campaign_ray._check_reachable(f"127.0.0.1:{port}")


def test_resources_json_names_this_kernel() -> None:
    import json
    import os
    assert json.loads(campaign_ray.resources_json()) == {"vmalab-kernel-" + os.uname().release.replace("+", "_"): 1}
    assert json.loads(campaign_ray.resources_json("6.1.0+rt 1")) == {"vmalab-kernel-6.1.0_rt_1": 1}


def test_run_needs_an_address(plan: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")  # run() imports ray first (tests/campaign/test_ray.py fails when it is missing)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(CampaignError, match=r"--backend ray needs --address HOST:PORT"):
        campaign_ray.run(plan, [0], lambda rec: None)
    monkeypatch.setenv("VMALAB_RAY_WAIT", "soon")
    with pytest.raises(CampaignError, match=r"VMALAB_RAY_WAIT must be a number of seconds"):
        campaign_ray.run(plan, [0], lambda rec: None, address="127.0.0.1:1")
