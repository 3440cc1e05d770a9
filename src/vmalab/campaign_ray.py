"""The Ray backend of campaigns (``vmalab fuzz|explore --backend ray --address HOST:PORT``).

:func:`run` is a :class:`vmalab.campaign.Backend`: it connects to a running Ray cluster, cuts the indices
of a shard into small chunks and runs each chunk as a Ray task that calls
:func:`vmalab.campaign.run_case_record` on a worker, handing every record back to the calling process as it
arrives (so the shard's journal, progress and resume work as with the local backend).

A fuzz case compares the model with the *live kernel of the machine it runs on*, so a case must only run on
a worker whose kernel is the one the plan names.  Workers say which kernel they run through a Ray custom
resource, :func:`vmalab.campaign.kernel_resource_name` of their ``uname -r``
(``ray start ... --resources '{"vmalab-kernel-6.18.44": 1}'``), and every task asks for a sliver of that
resource, so Ray schedules it only there.  The worker checks again (``run_case_record`` refuses to run on
another kernel, and :func:`_run_chunk` refuses a worker whose vmalab differs from the driver's), so a
mislabelled worker stops the run with a one-line error instead of contributing records.

The pool is elastic: the number of tasks in flight follows the CPUs of the live workers that carry the
resource (re-read every few seconds), so workers that join during a run get work, and tasks of a worker
that dies are retried elsewhere (Ray's ``max_retries``).  If no live worker carries the resource for
``wait_seconds``, the run stops with a one-line error; what was done is journalled and a rerun resumes.

Ray is an optional extra: this module imports without it, and :func:`run` says which extra to install.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Sequence
from typing import Any

from .campaign import CampaignError, OnRecord, Plan, kernel_resource_name, run_case_record, vmalab_identity

#: the one-line error when ray is not installed
RAY_EXTRA_HINT = "the ray backend needs the ray extra: pip install 'vmalab[ray]'"
#: how much of the kernel resource a task asks for: any worker with the resource can run many at once
#: (the CPU request limits concurrency), and a worker without it can run none
RESOURCE_SLIVER = 0.001
#: seconds between re-reads of the cluster's live workers (the elastic window)
_RESIZE_SECONDS = 5.0


def import_ray() -> Any:
    """``import ray``, or a :class:`CampaignError` naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise CampaignError(RAY_EXTRA_HINT) from None
    return ray


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast with one line when nothing listens at ``HOST:PORT`` (``ray.init`` would retry forever,
    printing a warning every few seconds).  ``ray://`` client addresses and ``auto`` are left to Ray."""
    if address == "auto" or "://" in address:
        return
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise CampaignError(f"--address {address!r}: expected HOST:PORT of a Ray head (e.g. 10.0.0.5:6379)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise CampaignError(f"cannot connect to the Ray cluster at {address}: {e.strerror or e}") from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return type(e).__name__


def _worker_identity_error(plan: Plan) -> str | None:
    """Why this worker must not run ``plan`` (another vmalab version or source), or None."""
    mine = vmalab_identity()
    want = plan.vmalab
    for key in ("version", "source"):
        if want.get(key) and mine.get(key) and want[key] != mine[key]:
            return (f"worker {socket.gethostname()} runs vmalab {mine.get('version')} (source {mine.get('source')}), "
                    f"the campaign was planned with {want.get('version')} (source {want.get('source')}): "
                    "install the same vmalab on every worker")
    return None


def _run_chunk(plan: Plan, indices: list[int]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The Ray task: run ``indices`` of ``plan`` on this worker; return where it ran and the records."""
    why = _worker_identity_error(plan)
    if why is not None:
        raise CampaignError(why)
    records = [run_case_record(plan, i) for i in indices]
    where: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid(), "node": socket.gethostname()}
    try:
        import ray
        if ray.is_initialized():
            where["node"] = ray.get_runtime_context().get_node_id()
    except Exception:  # informational only
        pass
    return where, records


def _live_slots(ray: Any, resource: str) -> int:
    """CPUs of the live nodes that advertise ``resource`` (0: no worker can run the plan's cases)."""
    slots = 0
    for node in ray.nodes():
        res = node.get("Resources") or {}
        if node.get("Alive") and res.get(resource, 0) > 0:
            slots += max(1, int(res.get("CPU", 1)))
    return slots


def _task_error(ray: Any, e: BaseException, chunk: list[int], attempts: int) -> CampaignError:
    """A one-line :class:`CampaignError` for a task that failed for good."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, CampaignError):
        return CampaignError(str(cause))
    if isinstance(e, CampaignError) and not isinstance(e, ray.exceptions.RayError):
        return e
    where = f"cases {chunk[0]}..{chunk[-1]}" if len(chunk) > 1 else f"case {chunk[0]}"
    line = _first_line(cause if isinstance(cause, BaseException) else e)
    if "No module named 'vmalab" in str(e):
        line += " (install the same vmalab on every worker)"
    return CampaignError(f"ray: {where} failed after {attempts} attempt(s): {type(e).__name__}: {line}")


def run(plan: Plan, indices: Sequence[int], on_record: OnRecord, *, jobs: int | None = None,
        address: str | None = None, retries: int = 3, wait_seconds: float | None = None,
        chunk: int | None = None, report: bool = True) -> None:
    """Run ``indices`` of ``plan`` on the Ray cluster at ``address`` (``HOST:PORT`` of its head, or
    ``$RAY_ADDRESS``), calling ``on_record`` here for every record as it arrives.

    ``jobs``: tasks in flight (default: twice the CPUs of the live workers carrying the plan's kernel
    resource, re-read every few seconds so the pool follows workers that join or leave).  ``retries``:
    how often Ray reruns a task whose worker died.  ``wait_seconds`` (default ``$VMALAB_RAY_WAIT`` or 60):
    how long to wait for a worker with the right kernel before giving up.  ``chunk``: indices per task
    (default: up to 8, fewer for short runs).  ``report``: print one line to stderr at the end saying how
    many cases each node ran."""
    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        raise CampaignError("--backend ray needs --address HOST:PORT of a running Ray cluster (or RAY_ADDRESS)")
    if not indices:
        return
    if wait_seconds is None:
        try:
            wait_seconds = float(os.environ.get("VMALAB_RAY_WAIT", "60"))
        except ValueError:
            raise CampaignError("VMALAB_RAY_WAIT must be a number of seconds") from None
    release = plan.kernel.get("release", "")
    resource = kernel_resource_name(release)
    _check_reachable(address)
    started = False
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as e:  # ray raises many kinds: all mean "cannot use it"
            raise CampaignError(f"cannot connect to the Ray cluster at {address}: {_first_line(e)}") from None
        started = True
    try:
        _drive(ray, plan, list(indices), on_record, jobs=jobs, retries=retries, wait_seconds=wait_seconds,
               chunk=chunk, resource=resource, release=release, report=report)
    finally:
        if started:
            ray.shutdown()


def _drive(ray: Any, plan: Plan, indices: list[int], on_record: OnRecord, *, jobs: int | None, retries: int,
           wait_seconds: float, chunk: int | None, resource: str, release: str, report: bool) -> None:
    """Submit chunks, keep the window full, hand records back; see :func:`run`."""
    t_missing = time.monotonic()
    slots = _live_slots(ray, resource)
    while slots == 0:
        if time.monotonic() - t_missing > wait_seconds:
            raise CampaignError(f"no live Ray worker advertises kernel release {release} (resource {resource}) "
                                f"after {wait_seconds:g} s: start workers on that kernel with "
                                f"ray start --address ... --resources '{{\"{resource}\": 1}}'")
        time.sleep(min(1.0, max(0.05, wait_seconds / 10)))
        slots = _live_slots(ray, resource)
    size = chunk or max(1, min(8, len(indices) // (slots * 16)))
    queue = deque(indices[i:i + size] for i in range(0, len(indices), size))
    task = ray.remote(_run_chunk).options(num_cpus=1, resources={resource: RESOURCE_SLIVER},
                                          max_retries=retries, retry_exceptions=False,
                                          scheduling_strategy="SPREAD")
    plan_ref = ray.put(plan)
    pending: dict[Any, list[int]] = {}
    per_node: Counter[str] = Counter()
    t_resize = t_progress = time.monotonic()
    t_missing = 0.0
    done_cases = 0
    while queue or pending:
        window = jobs or 2 * max(1, slots)
        while queue and len(pending) < window:
            c = queue.popleft()
            pending[task.remote(plan_ref, c)] = c
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        now = time.monotonic()
        for ref in ready:
            c = pending.pop(ref)
            try:
                where, records = ray.get(ref)
            except Exception as e:  # mapped to one line
                raise _task_error(ray, e, c, retries + 1) from None
            per_node[f"{where.get('host')}/{str(where.get('node'))[:8]}"] += len(records)
            for rec in records:
                on_record(rec)
            done_cases += len(records)
            t_progress = now
        if now - t_resize > _RESIZE_SECONDS or (not ready and now - t_progress > _RESIZE_SECONDS):
            t_resize = now
            slots = _live_slots(ray, resource)
            if slots:
                t_missing = 0.0
            else:
                t_missing = t_missing or now
                if now - t_missing > wait_seconds:
                    raise CampaignError(f"no live Ray worker with kernel release {release} for {wait_seconds:g} s "
                                        f"({done_cases} of {len(indices)} cases done; rerun the same command to "
                                        "resume)")
    if report:
        nodes = ", ".join(f"{k} {n}" for k, n in sorted(per_node.items()))
        sys.stderr.write(f"ray: {done_cases} cases on {len(per_node)} node(s) with kernel {release}: {nodes}\n")


def resources_json(release: str | None = None, amount: int = 1) -> str:
    """The ``--resources`` value for ``ray start`` on this machine: ``{"vmalab-kernel-RELEASE": 1}``."""
    import json
    return json.dumps({kernel_resource_name(release or os.uname().release): amount})


if __name__ == "__main__":  # python -m vmalab.campaign_ray: what `ray start --resources` needs here
    print(resources_json())
