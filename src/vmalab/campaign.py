"""Campaigns: ``vmalab fuzz`` and ``vmalab explore`` split into shards, summaries, resume and merge.

A campaign is a deterministic list of cases: for ``fuzz`` case *i* is the scenario
:func:`vmalab.oracle.fuzz.generate_scenario` makes of ``(seed, i, config)``; for ``explore`` case *i* is the
*i*-th kernel profile of the selected list (every run of the explorer under that profile: its lock-order
graph spans the profile's shapes, so a profile is the smallest unit that gives the same findings as an
unsplit run).  ``--shard I/N`` (0-based ``I``) takes the ``I``-th of ``N`` contiguous, near-equal index
ranges of ``[start, start + cases)``.

A :class:`Plan` holds everything a worker needs to run a case: :func:`run_case_record` runs one case in
the calling process and returns its *record* (a small JSON object).  A :class:`Backend` runs a list of
indices and hands each record back to the process that owns the shard: :func:`run_cases_local` (worker
processes on this machine, the default) or ``vmalab.campaign_ray.run`` (``--backend ray``).

The owner keeps the shard's summary (:func:`new_summary`): format name and version, kind, seed, config,
ranges, vmalab version and git commit and a digest of its source, the kernel release and machine, counts,
every divergence (first difference, the shrunk scenario), every case that could not run and why, one
outcome digest per case (two runs compare case for case: :func:`case_digests`) and timing.  With
``--summary FILE`` it is written incrementally: every record is appended to ``FILE.journal`` as it
arrives, and the summary is rewritten atomically (temporary file and rename) every few seconds and at the
end.  A rerun with the same arguments loads both, runs only the cases not done yet, and ends with the same
summary as an uninterrupted run (timing aside).

:func:`merge_summaries` combines shard summaries (``vmalab campaign merge``): it checks that they come
from one campaign (kind, seed, config, vmalab version and source) and that, per kernel release, their
ranges neither overlap nor leave cases out; totals, divergences deduplicated by their first difference
(:func:`diff_key`) and grouped by kernel release, and the cases whose outcome differs between releases.
"""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import importlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

FORMAT = "vmalab-campaign-summary"
FORMAT_VERSION = 1
KINDS = ("fuzz", "explore")
#: seconds between two atomic rewrites of a summary while its shard runs
SNAPSHOT_SECONDS = 3.0


class CampaignError(ValueError):
    """A one-line error (bad shard spec, a summary from another run, a malformed file ...)."""


OnRecord = Callable[[dict[str, Any]], None]


# --- identity ------------------------------------------------------------------------------------------
_IDENTITY: dict[str, Any] = {}


def _package_dir() -> str:
    return os.path.dirname(os.path.abspath(__file__))


def source_digest() -> str:
    """A digest of the package's Python sources (path and content of every ``*.py``): two trees with the
    same digest run the same code, whatever their commit or install method."""
    if "source" not in _IDENTITY:
        root = _package_dir()
        h = hashlib.sha256()
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith(".py"):
                    path = os.path.join(dirpath, name)
                    h.update(os.path.relpath(path, root).encode() + b"\0")
                    with open(path, "rb") as f:
                        h.update(hashlib.sha256(f.read()).digest())
        _IDENTITY["source"] = h.hexdigest()[:16]
    return str(_IDENTITY["source"])


def git_commit() -> str | None:
    """The git commit of the checkout the package is imported from (None outside a git checkout)."""
    if "commit" not in _IDENTITY:
        commit = None
        try:
            r = subprocess.run(["git", "-C", _package_dir(), "rev-parse", "HEAD"], capture_output=True, text=True,
                               timeout=10, check=False)
            if r.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", r.stdout.strip()):
                commit = r.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            commit = None
        _IDENTITY["commit"] = commit
    commit = _IDENTITY["commit"]
    return None if commit is None else str(commit)


def vmalab_identity() -> dict[str, str | None]:
    """``{"version", "commit", "source"}`` of the running vmalab."""
    from . import __version__
    return {"version": __version__, "commit": git_commit(), "source": source_digest()}


def kernel_identity() -> dict[str, str]:
    """``{"release": uname -r, "machine": uname -m}`` of this machine."""
    u = os.uname()
    return {"release": u.release, "machine": u.machine}


def kernel_resource_name(release: str) -> str:
    """The name of the Ray custom resource a worker advertises for its kernel release."""
    return "vmalab-kernel-" + re.sub(r"[^A-Za-z0-9._-]", "_", release)


# --- plans ---------------------------------------------------------------------------------------------
def parse_shard(spec: str) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N`` (0-based, as Kubernetes' JOB_COMPLETION_INDEX)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if m is None:
        raise CampaignError(f"bad shard spec {spec!r}: expected I/N, e.g. 0/4 (I counts from 0)")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise CampaignError(f"bad shard spec {spec!r}: N must be at least 1")
    if i >= n:
        raise CampaignError(f"bad shard spec {spec!r}: I must be in 0..{n - 1} (shards count from 0)")
    return i, n


def shard_range(campaign: tuple[int, int], shard: tuple[int, int]) -> tuple[int, int]:
    """The ``I``-th of ``N`` contiguous, near-equal parts of ``[start, stop)``."""
    start, stop = campaign
    i, n = shard
    size = stop - start
    return start + i * size // n, start + (i + 1) * size // n


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs to run any case of a shard (picklable and JSON-able)."""

    kind: str
    seed: int
    config: dict[str, Any]
    campaign: tuple[int, int]
    shard: tuple[int, int]
    range: tuple[int, int]
    kernel: dict[str, str]
    vmalab: dict[str, str | None]

    def indices(self) -> builtins.range:
        return builtins.range(*self.range)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "seed": self.seed, "config": self.config, "campaign": list(self.campaign),
                "shard": list(self.shard), "range": list(self.range), "kernel": dict(self.kernel),
                "vmalab": dict(self.vmalab)}

    @staticmethod
    def from_json(d: dict[str, Any]) -> Plan:
        try:
            return Plan(str(d["kind"]), int(d["seed"]), dict(d["config"]), _pair(d["campaign"]), _pair(d["shard"]),
                        _pair(d["range"]), {k: str(v) for k, v in d["kernel"].items()},
                        {k: (None if v is None else str(v)) for k, v in d["vmalab"].items()})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CampaignError(f"not a campaign plan: {type(e).__name__}: {e}") from None

    def label(self) -> str:
        what = f"fuzz seed {self.seed}" if self.kind == "fuzz" else f"explore {self.config.get('driver')}"
        if self.shard[1] > 1:
            what += f" shard {self.shard[0]}/{self.shard[1]}"
        return f"{what} [{self.range[0]}, {self.range[1]})"


def _pair(v: Any) -> tuple[int, int]:
    if not isinstance(v, (list, tuple)) or len(v) != 2 or not all(isinstance(x, int) and not isinstance(x, bool)
                                                                    for x in v):
        raise ValueError(f"expected a pair of integers, got {v!r}")
    return int(v[0]), int(v[1])


def fuzz_config_json(config: Any) -> dict[str, Any]:
    """A :class:`~vmalab.oracle.fuzz.FuzzConfig` as JSON, with the op kinds it generates now."""
    from .oracle.fuzz import enabled_ops
    d = dataclasses.asdict(config)
    d["include"] = None if config.include is None else list(config.include)
    d["exclude"] = list(config.exclude)
    d["kinds"] = enabled_ops(config)
    return d


def fuzz_config_from_json(d: dict[str, Any]) -> Any:
    from .oracle.fuzz import FuzzConfig
    names = {f.name for f in dataclasses.fields(FuzzConfig)}
    kw = {k: v for k, v in d.items() if k in names}
    kw["include"] = None if kw.get("include") is None else tuple(kw["include"])
    kw["exclude"] = tuple(kw.get("exclude", ()))
    return FuzzConfig(**kw)


def _campaign_and_shard(start: int, cases: int, shard: str | tuple[int, int] | None) \
        -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    if start < 0:
        raise CampaignError(f"--start must be 0 or more, got {start}")
    sh = parse_shard(shard) if isinstance(shard, str) else (shard or (0, 1))
    campaign = (start, start + cases)
    return campaign, sh, shard_range(campaign, sh)


def plan_fuzz(seed: int, cases: int, config: Any, start: int = 0, shard: str | tuple[int, int] | None = None) -> Plan:
    """The plan of (a shard of) ``vmalab fuzz --seed SEED --cases CASES --start START``."""
    campaign, sh, rng = _campaign_and_shard(start, cases, shard)
    return Plan("fuzz", seed, fuzz_config_json(config), campaign, sh, rng, kernel_identity(), vmalab_identity())


def plan_explore(driver: str, profiles: Sequence[str], pairs: bool = True, driver_points: bool = False,
                 shard: str | tuple[int, int] | None = None) -> Plan:
    """The plan of (a shard of) ``vmalab explore DRIVER``: case ``i`` is ``profiles[i]``."""
    spec = os.path.abspath(driver) if os.path.exists(driver) else driver
    config = {"driver": spec, "profiles": list(profiles), "pairs": pairs, "driver_points": driver_points}
    campaign, sh, rng = _campaign_and_shard(0, len(profiles), shard)
    return Plan("explore", 0, config, campaign, sh, rng, kernel_identity(), vmalab_identity())


# --- running one case (in any process) -----------------------------------------------------------------
_PREPARED: dict[str, Any] = {}


def _plan_key(plan: Plan) -> str:
    return json.dumps(plan.to_json(), sort_keys=True)


def prepare_worker(plan: Plan) -> None:
    """Get this process ready to run cases of ``plan`` (idempotent): check the kernel release, build the
    kernel runner (fuzz) or load the driver (explore)."""
    key = _plan_key(plan)
    if _PREPARED.get("key") == key:
        return
    here = kernel_identity()["release"]
    if plan.kind == "fuzz" and here != plan.kernel.get("release"):
        raise CampaignError(f"this worker runs kernel {here}, the plan needs {plan.kernel.get('release')}")
    state: dict[str, Any] = {"key": key}
    if plan.kind == "fuzz":
        from .oracle.kernel import ensure_runner
        ensure_runner()
        state["config"] = fuzz_config_from_json(plan.config)
        state["kinds"] = list(plan.config["kinds"])
    elif plan.kind == "explore":
        from .explore import ExploreError, load_driver
        try:
            state["driver"] = load_driver(plan.config["driver"])
        except ExploreError as e:
            raise CampaignError(str(e)) from None
    else:
        raise CampaignError(f"unknown campaign kind {plan.kind!r}")
    _PREPARED.clear()
    _PREPARED.update(state)


def _h(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def run_case_record(plan: Plan, index: int) -> dict[str, Any]:
    """Run case ``index`` of ``plan`` in this process and return its record (JSON-able).

    fuzz: ``{"i", "status": agree|diverge|error, "digest", "seconds"}``; a divergence adds ``name``,
    ``nops``, ``first_diff`` (after shrinking), ``original_diff``, ``noise``, ``shrunk`` (scenario),
    ``diffs``, ``shrink_steps`` and the two results of the shrunk scenario (``kernel``, ``model``; the
    owner writes them to ``--out`` and keeps them out of the summary); an error adds ``name`` and ``error``.
    The digest is the status and a hash of the *unshrunk* first difference (shrinking has a time budget).
    explore: ``{"i", "status": findings|clean, "digest", "seconds", "profile", "report"}``."""
    prepare_worker(plan)
    try:
        if plan.kind == "fuzz":
            return _fuzz_record(plan, index)
        return _explore_record(plan, index)
    except CampaignError:
        raise
    except Exception as e:  # noqa: BLE001 - a bug in vmalab's generator or runner: one case, not the campaign
        return error_record(plan, index, f"vmalab raised {type(e).__name__}: {e}")


def _fuzz_record(plan: Plan, index: int) -> dict[str, Any]:
    from .oracle.fuzz import run_case
    o = run_case(plan.seed, index, _PREPARED["config"], _PREPARED["kinds"])
    rec: dict[str, Any] = {"i": index, "status": o.status, "seconds": round(o.seconds, 4)}
    if o.status == "agree":
        rec["digest"] = "agree"
    elif o.status == "error":
        rec.update(digest="error", name=o.name, error=o.error)
    else:
        rec.update(digest=("noise:" if o.noise else "diverge:") + _h(o.original_diff or o.first_diff), name=o.name,
                   nops=o.nops, first_diff=o.first_diff, original_diff=o.original_diff or o.first_diff,
                   noise=o.noise, shrunk=o.shrunk, diffs=o.diffs[:20], shrink_steps=o.shrink_steps,
                   kernel=o.kernel, model=o.model)
    return rec


def _explore_record(plan: Plan, index: int) -> dict[str, Any]:
    from .explore import explore
    t0 = time.monotonic()
    profiles = plan.config["profiles"]
    if not 0 <= index < len(profiles):
        raise CampaignError(f"explore case {index} out of range (0..{len(profiles) - 1})")
    profile = profiles[index]
    rep = explore(_PREPARED["driver"], [profile], pairs=bool(plan.config.get("pairs", True)),
                  driver_points=bool(plan.config.get("driver_points", False)))
    report = rep.to_json()
    rows = sorted(f"{f['kind']}|{f['category']}|{f['what']}" for f in
                  report["findings"] + report["kernel_behaviour"])
    status = "findings" if report["findings"] else "clean"
    return {"i": index, "status": status, "digest": f"{status}:{_h(chr(10).join(rows))}",
            "seconds": round(time.monotonic() - t0, 4), "profile": profile, "report": report}


# --- backends ------------------------------------------------------------------------------------------
class Backend(Protocol):
    """Runs ``indices`` of ``plan`` and calls ``on_record`` in the calling process for each (any order)."""

    def __call__(self, plan: Plan, indices: Sequence[int], on_record: OnRecord, *, jobs: int | None = None,
                 address: str | None = None) -> None: ...


_WORKER_PLAN: dict[str, Plan] = {}


def _die_with_parent() -> None:
    """Ask Linux to kill this worker when the process that owns the shard dies (even by SIGKILL), so an
    interrupted shard leaves no orphan workers behind."""
    if sys.platform != "linux":
        return
    try:
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _local_init(plan: Plan) -> None:
    _die_with_parent()
    _WORKER_PLAN["plan"] = plan


def _local_chunk(indices: list[int]) -> list[dict[str, Any]]:
    return [run_case_record(_WORKER_PLAN["plan"], i) for i in indices]


#: cases per task of the local backend (fewer when there are few cases per worker)
LOCAL_CHUNK = 8


def run_cases_local(plan: Plan, indices: Sequence[int], on_record: OnRecord, *, jobs: int | None = None,
                    address: str | None = None) -> None:
    """The local backend: ``jobs`` worker processes on this machine (default: every core); in this process
    when ``jobs`` is 1.

    A worker that dies (killed, out of memory) does not stop the shard: the cases that were running then
    are run again afterwards, each alone in a fresh worker, and one whose worker dies again is reported as
    a case that could not run."""
    if address is not None:
        raise CampaignError("--address needs --backend ray (the local backend runs on this machine)")
    if not indices:
        return
    prepare_worker(plan)  # compile the runner once and fail early, before the workers start
    jobs = max(1, jobs or os.cpu_count() or 1)
    if jobs == 1 or len(indices) == 1:
        for i in indices:
            on_record(run_case_record(plan, i))
        return
    todo = list(indices)
    chunk = max(1, min(LOCAL_CHUNK, len(todo) // (jobs * 16)))
    quarantine: list[int] = []
    while todo:
        hit, todo = _local_pool(plan, [todo[k:k + chunk] for k in range(0, len(todo), chunk)], on_record, jobs)
        quarantine += hit
    dead = 0
    for i in sorted(quarantine):
        hit, rest = _local_pool(plan, [[i]], on_record, 1)
        if hit or rest:
            dead += 1
            if dead >= 3:
                raise CampaignError(f"worker processes keep dying (cases {', '.join(map(str, quarantine[:5]))}"
                                    f"{' ...' if len(quarantine) > 5 else ''}): see the kernel log (OOM killer?)")
            on_record(error_record(plan, i, "the worker process died running this case, twice"))
        else:
            dead = 0


def error_record(plan: Plan, index: int, why: str) -> dict[str, Any]:
    """The record of a case that could not run."""
    if plan.kind == "fuzz":
        return {"i": index, "status": "error", "digest": "error", "seconds": 0.0, "name": f"fuzz_s{plan.seed}_c{index}",
                "error": why}
    profiles = plan.config.get("profiles", [])
    name = profiles[index] if 0 <= index < len(profiles) else f"#{index}"
    return {"i": index, "status": "error", "digest": "error", "seconds": 0.0, "profile": name, "error": why}


def _local_pool(plan: Plan, chunks: list[list[int]], on_record: OnRecord, jobs: int) -> tuple[list[int], list[int]]:
    """Run ``chunks`` in a fresh pool of ``jobs`` workers.  Returns the cases that were running when a
    worker died and those not started then (both empty: all done)."""
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else None)
    hit: list[int] = []
    rest: list[int] = []
    pending: dict[Future[list[dict[str, Any]]], list[int]] = {}
    it = iter(chunks)
    broken = False
    with ProcessPoolExecutor(min(jobs, len(chunks)), mp_context=ctx, initializer=_local_init,
                             initargs=(plan,)) as pool:
        while True:
            while not broken and len(pending) < 4 * jobs:
                c = next(it, None)
                if c is None:
                    break
                try:
                    pending[pool.submit(_local_chunk, c)] = c
                except BrokenProcessPool:
                    broken = True
                    rest += c
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                c = pending.pop(fut)
                try:
                    recs = fut.result()
                except BrokenProcessPool:
                    broken = True
                    hit += c
                    continue
                for rec in recs:
                    on_record(rec)
    for c in it:
        rest += c
    return hit, rest


def get_backend(name: str) -> Backend:
    """``local`` or ``ray`` (the latter needs the ``ray`` extra)."""
    if name == "local":
        return run_cases_local
    if name == "ray":
        try:
            mod = importlib.import_module("vmalab.campaign_ray")
        except ImportError as e:
            raise CampaignError(f"the ray backend is not available ({e}): pip install 'vmalab[ray]'") from None
        run: Backend = mod.run
        return run
    raise CampaignError(f"unknown backend {name!r} (local, ray)")


# --- summaries -----------------------------------------------------------------------------------------
def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_summary(plan: Plan) -> dict[str, Any]:
    """An empty summary of ``plan``'s shard."""
    n = plan.range[1] - plan.range[0]
    s: dict[str, Any] = {"format": FORMAT, "format_version": FORMAT_VERSION, **plan.to_json(),
                         "complete": n == 0, "counts": {}, "digests": [None] * n, "divergences": [], "errors": [],
                         "timing": {"seconds": 0.0, "case_seconds": 0.0, "runs": 0}, "updated": _now()}
    if plan.kind == "explore":
        s["profiles"] = []
    recount(s)
    return s


def recount(s: dict[str, Any]) -> None:
    """Recompute ``counts`` from the digests and records of ``s``."""
    digests = s["digests"]
    done = [d for d in digests if d is not None]
    if s["kind"] == "fuzz":
        s["counts"] = {"cases": len(done), "agree": sum(d == "agree" for d in done),
                       "diverge": sum(d.startswith(("diverge:", "noise:")) for d in done),
                       "noise": sum(d.startswith("noise:") for d in done), "errors": sum(d == "error" for d in done)}
    else:
        profs = s.get("profiles", [])
        s["counts"] = {"cases": len(done), "errors": sum(d == "error" for d in done),
                       "runs": sum(p["report"]["runs"] for p in profs),
                       "findings": sum(len(p["report"]["findings"]) for p in profs),
                       "kernel_behaviour": sum(len(p["report"]["kernel_behaviour"]) for p in profs)}
    s["complete"] = len(done) == len(digests)


_KEEP_OUT = ("kernel", "model")


def add_record(s: dict[str, Any], rec: dict[str, Any]) -> bool:
    """Add one record to summary ``s`` (False: a duplicate or out-of-range index, ignored)."""
    i = rec.get("i")
    lo, hi = s["range"]
    if not isinstance(i, int) or not lo <= i < hi or s["digests"][i - lo] is not None:
        return False
    s["digests"][i - lo] = str(rec["digest"])
    s["timing"]["case_seconds"] = round(s["timing"]["case_seconds"] + float(rec.get("seconds", 0.0)), 4)
    st = rec.get("status")
    if s["kind"] == "fuzz":
        if st == "diverge":
            s["divergences"].append({"index": i, **{k: v for k, v in rec.items()
                                                   if k not in ("i", "status", "digest", "seconds", *_KEEP_OUT)}})
            s["divergences"].sort(key=lambda d: d["index"])
        elif st == "error":
            s["errors"].append({"index": i, "name": rec.get("name"), "error": rec.get("error")})
            s["errors"].sort(key=lambda d: d["index"])
    elif st == "error":
        s["errors"].append({"index": i, "name": rec.get("profile"), "error": rec.get("error")})
        s["errors"].sort(key=lambda d: d["index"])
    else:
        s["profiles"].append({"index": i, "profile": rec["profile"], "report": rec["report"]})
        s["profiles"].sort(key=lambda d: d["index"])
    return True


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True)


def write_json_atomic(path: str, obj: Any, indent: int | None = None) -> None:
    """Write ``obj`` to ``path`` through a temporary file and a rename: readers see the old or the new file."""
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        if indent is None:
            f.write(_dump(obj))
        else:
            json.dump(obj, f, indent=indent)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def vmalab_key(vm: dict[str, Any]) -> tuple[Any, Any]:
    """What identifies a vmalab for resuming and merging: its version and git commit (the source digest
    when it runs outside a git checkout).  Uncommitted edits between two shards of one commit are not
    refused: the merged report lists every source digest and says when they differ."""
    return vm.get("version"), vm.get("commit") or f"source {vm.get('source')}"


def _identity(s: dict[str, Any]) -> dict[str, Any]:
    """What must be equal for a summary to continue, or be merged with, another one."""
    return {"kind": s.get("kind"), "seed": s.get("seed"), "config": s.get("config"),
            "vmalab": vmalab_key(s.get("vmalab") or {})}


def _same_shard(s: dict[str, Any], plan: Plan) -> str | None:
    """Why ``s`` is not a summary of ``plan`` (None: it is)."""
    p = plan.to_json()
    for key in ("kind", "seed", "config", "campaign", "shard", "range", "kernel"):
        if s.get(key) != p[key]:
            what = key if key != "config" else "config (" + _config_delta(s.get("config"), p["config"]) + ")"
            return f"another {what}: {_show(s.get(key))} here, {_show(p[key])} now" if key != "config" else \
                f"another {what}"
    a, b = s.get("vmalab") or {}, p["vmalab"]
    if vmalab_key(a) != vmalab_key(b):
        return f"another vmalab: {_vm_text(a)} here, {_vm_text(b)} now"
    return None


def _vm_text(vm: dict[str, Any]) -> str:
    return f"{vm.get('version')} (commit {vm.get('commit') or 'unknown'}, source {vm.get('source')})"


def _show(v: Any) -> str:
    if isinstance(v, list) and len(v) == 2:
        return f"[{v[0]}, {v[1]})" if v[1] > v[0] or v[1] == v[0] else str(v)
    if isinstance(v, dict) and "release" in v:
        return f"{v.get('release')} {v.get('machine')}"
    return json.dumps(v)


def _config_delta(a: Any, b: Any) -> str:
    if not isinstance(a, dict) or not isinstance(b, dict):
        return "not an object"
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return ", ".join(f"{k} {_short(a.get(k))} vs {_short(b.get(k))}" for k in keys[:3]) or "same"


def _short(v: Any) -> str:
    t = json.dumps(v)
    return t if len(t) <= 40 else t[:37] + "..."


class ShardState:
    """The summary of a running shard, kept on disk at ``path`` (None: in memory only).

    Every record is appended to ``path + ".journal"`` (flushed, one JSON line) when it arrives; the summary
    is rewritten atomically every :data:`SNAPSHOT_SECONDS` and by :meth:`finish`, after which the journal
    is emptied (a record in both is harmless: the first copy wins).  Opening an existing summary of the
    same shard resumes it; one of another run is a :class:`CampaignError` and is left untouched."""

    def __init__(self, plan: Plan, path: str | None) -> None:
        self.plan = plan
        self.path = path
        self.journal_path = f"{path}.journal" if path else None
        self.summary = new_summary(plan)
        self.resumed = 0
        self._journal: TextIO | None = None
        self._last_snapshot = time.monotonic()
        self._run_t0: float | None = None
        self._base_seconds = 0.0
        self.added = 0
        self.existed = bool(path) and (os.path.exists(str(path)) or os.path.exists(f"{path}.journal"))
        # the file on disk already says all there is (a rerun of a finished shard rewrites nothing)
        self.up_to_date = bool(path) and os.path.exists(str(path)) and not os.path.exists(f"{path}.journal")
        if path:
            self._load()

    # -- loading --------------------------------------------------------------------------------------
    def _load(self) -> None:
        assert self.path is not None and self.journal_path is not None
        if os.path.exists(self.path):
            old = load_summary(self.path)
            why = _same_shard(old, self.plan)
            if why is not None:
                raise CampaignError(f"{self.path} is the summary of another run ({why}); remove it or choose "
                                    "another --summary")
            self.summary = old
            self.summary["vmalab"] = dict(self.plan.vmalab)
        if os.path.exists(self.journal_path):
            self._replay_journal()
        recount(self.summary)
        self.resumed = self.summary["counts"]["cases"]

    def _replay_journal(self) -> None:
        assert self.journal_path is not None
        with open(self.journal_path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        header = None
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a line torn by a kill: its case simply runs again
            if not isinstance(obj, dict):
                continue
            if header is None:
                if obj.get("journal") != FORMAT:
                    raise CampaignError(f"{self.journal_path}: line {n} is not a campaign journal header; remove "
                                        "the file to start the shard over")
                header = obj
                why = _same_shard(obj.get("plan") or {}, self.plan)
                if why is not None:
                    raise CampaignError(f"{self.journal_path} is the journal of another run ({why}); remove it or "
                                        "choose another --summary")
                if isinstance(obj.get("runs"), int):  # the run a kill interrupted before its first snapshot
                    timing = self.summary["timing"]
                    timing["runs"] = max(int(timing.get("runs", 0)), obj["runs"])
                continue
            if isinstance(obj.get("digest"), str):
                spent = obj.pop("_T", None)
                add_record(self.summary, obj)
                if isinstance(spent, (int, float)):  # the wall time of the run the kill interrupted
                    timing = self.summary["timing"]
                    timing["seconds"] = max(float(timing.get("seconds", 0.0)), float(spent))

    # -- running --------------------------------------------------------------------------------------
    def missing(self) -> list[int]:
        lo = self.plan.range[0]
        return [lo + k for k, d in enumerate(self.summary["digests"]) if d is None]

    def add(self, rec: dict[str, Any]) -> bool:
        if not add_record(self.summary, rec):
            return False
        self.added += 1
        if self.journal_path:
            if self._journal is None:
                self._open_journal()
            assert self._journal is not None
            line = {k: v for k, v in rec.items() if k not in _KEEP_OUT}
            if self._run_t0 is not None:
                line["_T"] = round(self._base_seconds + time.monotonic() - self._run_t0, 3)
            self._journal.write(_dump(line) + "\n")
            self._journal.flush()
            if time.monotonic() - self._last_snapshot >= SNAPSHOT_SECONDS:
                self.snapshot()
        return True

    def _open_journal(self, truncate: bool = False) -> None:
        assert self.journal_path is not None
        fresh = truncate or not os.path.exists(self.journal_path) or os.path.getsize(self.journal_path) == 0
        self._journal = open(self.journal_path, "w" if fresh else "a", encoding="utf-8")  # noqa: SIM115
        if fresh:
            self._journal.write(_dump({"journal": FORMAT, "plan": self.plan.to_json(),
                                       "runs": self.summary["timing"].get("runs", 0)}) + "\n")
            self._journal.flush()

    def begin_run(self, backend: str, jobs: int | None) -> None:
        """Count a (re)run: from now on its wall time is added to the summary's ``timing.seconds``."""
        t = self.summary["timing"]
        self._base_seconds = float(t.get("seconds", 0.0))
        self._run_t0 = time.monotonic()
        t["runs"] = int(t.get("runs", 0)) + 1
        t["backend"] = backend
        t["jobs"] = jobs or os.cpu_count() or 1

    def snapshot(self, final: bool = False) -> None:
        """Rewrite the summary atomically, then empty the journal."""
        recount(self.summary)
        if self._run_t0 is not None:
            self.summary["timing"]["seconds"] = round(self._base_seconds + time.monotonic() - self._run_t0, 3)
        self.summary["updated"] = _now()
        self._last_snapshot = time.monotonic()
        if not self.path:
            return
        write_json_atomic(self.path, self.summary, indent=None if len(self.summary["digests"]) > 2000 else 1)
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if final and self.summary["complete"]:
            if self.journal_path and os.path.exists(self.journal_path):
                os.unlink(self.journal_path)
        else:
            self._open_journal(truncate=True)

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def load_summary(path: str) -> dict[str, Any]:
    """Read and check a summary file (one-line :class:`CampaignError` if it is not a valid one)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise CampaignError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise CampaignError(f"{path}: not a vmalab campaign summary (not UTF-8 text)") from None
    try:
        s = json.loads(text)
    except ValueError as e:
        raise CampaignError(f"{path}: not a vmalab campaign summary (invalid JSON: {e})") from None
    check_summary(s, path)
    out: dict[str, Any] = s
    return out


def check_summary(s: Any, path: str) -> None:
    """A one-line :class:`CampaignError` naming the first thing wrong with summary ``s``."""
    def bad(what: str) -> CampaignError:
        return CampaignError(f"{path}: malformed campaign summary: {what}")

    if not isinstance(s, dict) or s.get("format") != FORMAT:
        raise CampaignError(f"{path}: not a vmalab campaign summary (no \"format\": \"{FORMAT}\")")
    if s.get("format_version") != FORMAT_VERSION:
        raise CampaignError(f"{path}: campaign summary format version {s.get('format_version')!r}, this vmalab "
                            f"reads version {FORMAT_VERSION}")
    if s.get("kind") not in KINDS:
        raise bad(f"kind {s.get('kind')!r}")
    for key in ("campaign", "shard", "range"):
        try:
            _pair(s.get(key))
        except ValueError:
            raise bad(f"{key} {s.get(key)!r} is not a pair of integers") from None
    lo, hi = s["range"]
    i, n = s["shard"]
    if not (0 <= i < n) or hi < lo or tuple(s["range"]) != shard_range(tuple(s["campaign"]), (i, n)):
        raise bad(f"range [{lo}, {hi}) is not shard {i}/{n} of [{s['campaign'][0]}, {s['campaign'][1]})")
    if not isinstance(s.get("seed"), int) or not isinstance(s.get("config"), dict):
        raise bad("seed or config missing")
    if not isinstance(s.get("kernel"), dict) or not isinstance(s["kernel"].get("release"), str):
        raise bad("kernel release missing")
    if not isinstance(s.get("vmalab"), dict) or "version" not in s["vmalab"]:
        raise bad("vmalab version missing")
    d = s.get("digests")
    if not isinstance(d, list) or len(d) != hi - lo or not all(x is None or isinstance(x, str) for x in d):
        raise bad(f"digests: expected a list of {hi - lo} strings or nulls")
    for key in ("divergences", "errors", "profiles") if s["kind"] == "explore" else ("divergences", "errors"):
        items = s.get(key)
        if not isinstance(items, list) or not all(isinstance(x, dict) and isinstance(x.get("index"), int)
                                                  and lo <= x["index"] < hi for x in items):
            raise bad(f"{key}: expected a list of objects with an index in [{lo}, {hi})")
    if not isinstance(s.get("timing"), dict) or not isinstance(s.get("counts"), dict):
        raise bad("timing or counts missing")


def case_digests(summary: dict[str, Any]) -> dict[int, str]:
    """Index -> outcome digest of every case the summary has (equal dicts: the same outcome case for case)."""
    lo = summary["range"][0]
    return {lo + k: d for k, d in enumerate(summary["digests"]) if d is not None}


# --- progress ------------------------------------------------------------------------------------------
class Progress:
    """Progress of a shard on ``stream`` (stderr): a bar rewritten in place on a terminal, otherwise one
    line every ``every`` seconds (CI logs, ``| tee``)."""

    def __init__(self, label: str, total: int, done: int = 0, stream: TextIO | None = None,
                 every: float = 10.0, tty: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.label, self.total, self.done, self.every = label, total, done, every
        self.start_done = done
        self.t0 = self.last = time.monotonic()
        self.bad = 0

    def update(self, rec: dict[str, Any]) -> None:
        self.done += 1
        if rec.get("status") in ("diverge", "error", "findings"):
            self.bad += 1
        now = time.monotonic()
        if self.tty:
            if now - self.last >= 0.1 or self.done == self.total:
                self.last = now
                self.stream.write("\r" + self.text(now, bar=True) + "\x1b[K")
                self.stream.flush()
        elif now - self.last >= self.every:
            self.last = now
            self.stream.write(self.text(now, bar=False) + "\n")
            self.stream.flush()

    def rate(self, now: float | None = None) -> float:
        dt = (now or time.monotonic()) - self.t0
        return (self.done - self.start_done) / dt if dt > 0 else 0.0

    def text(self, now: float, bar: bool) -> str:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        r = self.rate(now)
        eta = (self.total - self.done) / r if r > 0 else 0.0
        body = f"{self.done}/{self.total} ({pct:.0f}%) {r:.1f}/s ETA {_dur(eta)}, {self.bad} failing"
        if bar:
            width = 24
            fill = int(width * self.done / self.total) if self.total else width
            return f"{self.label} [{'#' * fill}{'-' * (width - fill)}] {body}"
        return f"{self.label}: {body}"

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _dur(s: float) -> str:
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


# --- running a shard -----------------------------------------------------------------------------------
def run_shard(plan: Plan, summary_path: str | None = None, backend: str | Backend = "local", jobs: int | None = None,
              address: str | None = None, on_record: OnRecord | None = None,
              progress: Progress | None = None) -> dict[str, Any]:
    """Run (or resume) the shard of ``plan`` and return its final summary.

    ``on_record`` sees every new record in the calling process (with the results of diverging cases, which
    the summary leaves out).  With ``summary_path`` the summary is kept on disk as :class:`ShardState`
    describes; an interruption (an exception, KeyboardInterrupt) saves what is done before propagating."""
    run = get_backend(backend) if isinstance(backend, str) else backend
    name = backend if isinstance(backend, str) else getattr(backend, "__name__", "custom")
    if backend == "local" and address is not None:
        raise CampaignError("--address needs --backend ray (the local backend runs on this machine)")
    state = ShardState(plan, summary_path)
    todo = state.missing()
    if progress is not None:
        progress.done = progress.start_done = len(plan.indices()) - len(todo)

    def got(rec: dict[str, Any]) -> None:
        if state.add(rec):
            if progress is not None:
                progress.update(rec)
            if on_record is not None:
                on_record(rec)

    try:
        if todo:
            state.begin_run(name, jobs)
            run(plan, todo, got, jobs=jobs, address=address)
    except BaseException:
        if state.added or state.existed:  # save what is done; nothing ran (e.g. no cluster): leave no file
            state.snapshot(final=True)
        state.close()
        if progress is not None:
            progress.finish()
        raise
    if todo or not state.up_to_date:
        state.snapshot(final=True)
    state.close()
    if progress is not None:
        progress.finish()
    if state.missing():
        lo = state.missing()
        raise CampaignError(f"the {name} backend returned with {len(lo)} case(s) not run (first: {lo[0]}); "
                            "rerun the same command to resume")
    return state.summary


def summary_line(s: dict[str, Any]) -> str:
    """The closing line of a shard: counts, time and rate."""
    c = s["counts"]
    t = s["timing"]
    if s["kind"] == "fuzz":
        text = f"{c['cases']} cases, {c['agree']} agree, {c['diverge']} diverge"
        if c.get("noise"):
            text += f" ({c['noise']} kernel noise)"
        if c.get("errors"):
            text += f", {c['errors']} errors"
    else:
        text = (f"{c['cases']} profiles, {c['runs']} runs, {c['findings']} findings, "
                f"{c['kernel_behaviour']} kernel-behaviour rows")
    secs = float(t.get("seconds", 0.0))
    if secs > 0 and c["cases"]:
        text += f" in {secs:.1f} s ({c['cases'] / secs:.1f} cases/s, {t.get('jobs', 1)} jobs)"
    if s["shard"][1] > 1 or s["range"][0]:
        text += f"; shard {s['shard'][0]}/{s['shard'][1]} [{s['range'][0]}, {s['range'][1]})"
    return text


def default_summary_path(plan: Plan) -> str:
    """``fuzz-seedS-shardIofN.json`` (explore: ``explore-DRIVER-shardIofN.json``) in the current directory."""
    i, n = plan.shard
    if plan.kind == "fuzz":
        return f"fuzz-seed{plan.seed}-shard{i}of{n}.json"
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", os.path.splitext(os.path.basename(str(plan.config["driver"])))[0])
    return f"explore-{stem}-shard{i}of{n}.json"


# --- merging -------------------------------------------------------------------------------------------
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_OPNUM = re.compile(r"\bop \d+\b")


def diff_key(first_diff: str) -> str:
    """The deduplication key of a first difference: op numbers and hexadecimal values (addresses) left
    out, so the same behaviour found at different places counts once."""
    return _HEX.sub("0x…", _OPNUM.sub("op #", first_diff))


def expand_paths(paths: Iterable[str]) -> list[str]:
    """Files as given; directories -> the summary files in them (recursively; other JSON files skipped)."""
    out: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found = []
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames.sort()
                for name in sorted(filenames):
                    if name.endswith(".json") and _looks_like_summary(os.path.join(dirpath, name)):
                        found.append(os.path.join(dirpath, name))
            if not found:
                raise CampaignError(f"{p}: no campaign summaries in this directory")
            out += found
        elif os.path.exists(p):
            out.append(p)
        else:
            raise CampaignError(f"{p}: no such file or directory")
    return out


def _looks_like_summary(path: str) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(200)
    except OSError:
        return False
    return FORMAT in head


def _ranges_text(rs: list[tuple[int, int]]) -> str:
    return ", ".join(f"[{a}, {b})" for a, b in rs)


def merge_summaries(paths: Sequence[str]) -> dict[str, Any]:
    """Merge shard summaries into one report (JSON object); :class:`CampaignError` if they do not fit."""
    files = expand_paths(paths)
    if not files:
        raise CampaignError("no summaries to merge")
    seen: dict[str, str] = {}
    for p in files:
        real = os.path.realpath(p)
        if real in seen:
            raise CampaignError(f"{p}: given twice (also as {seen[real]})")
        seen[real] = p
    sums = [(p, load_summary(p)) for p in files]
    p0, s0 = sums[0]
    ident0 = _identity(s0)
    for p, s in sums[1:]:
        ident = _identity(s)
        if ident == ident0:
            continue
        for key, what in (("kind", "kind"), ("seed", "seed"), ("config", "config"), ("vmalab", "vmalab")):
            if ident[key] != ident0[key]:
                if key == "config":
                    detail = _config_delta(s["config"], s0["config"])
                elif key == "vmalab":
                    detail = f"{_vm_text(s['vmalab'])} vs {_vm_text(s0['vmalab'])}"
                else:
                    detail = f"{s[key]} vs {s0[key]}"
                raise CampaignError(f"{p} and {p0} are from different campaigns: {what} differs ({detail})")
    for p, s in sums:
        if not s.get("complete") or any(d is None for d in s["digests"]):
            done = sum(d is not None for d in s["digests"])
            raise CampaignError(f"{p}: shard {s['shard'][0]}/{s['shard'][1]} is incomplete ({done} of "
                                f"{len(s['digests'])} cases); rerun its command to resume it")
    groups: dict[tuple[str, str], list[tuple[str, dict[str, Any]]]] = {}
    for p, s in sums:
        groups.setdefault((s["kernel"]["release"], s["kernel"].get("machine", "")), []).append((p, s))
    for (rel, mach), items in groups.items():
        items.sort(key=lambda ps: (ps[1]["range"][0], ps[1]["range"][1]))
        prev_p, prev_hi = "", None
        for p, s in items:
            lo, hi = s["range"]
            if prev_hi is not None and lo < prev_hi and hi > lo:
                raise CampaignError(f"{p} [{lo}, {hi}) and {prev_p} overlap on [{lo}, {min(hi, prev_hi)}) "
                                    f"(kernel {rel} {mach})")
            if hi > lo and (prev_hi is None or hi > prev_hi):
                prev_p, prev_hi = f"{p} [{lo}, {hi})", hi
        need = _union([tuple(s["campaign"]) for _, s in items])
        have = _union([tuple(s["range"]) for _, s in items])
        gaps = _subtract(need, have)
        if gaps:
            hint = []
            for g in gaps[:3]:
                for _, s in items:
                    c, n = tuple(s["campaign"]), s["shard"][1]
                    shards = [k for k in range(n) if _overlaps(shard_range(c, (k, n)), g)]
                    if shards and c[0] <= g[0] and g[1] <= c[1]:
                        hint.append(f"shard{'s' if len(shards) > 1 else ''} "
                                    f"{', '.join(f'{k}/{n}' for k in shards)}")
                        break
            raise CampaignError(f"cases {_ranges_text(gaps)} missing for kernel {rel} {mach}"
                                + (f" ({'; '.join(hint)} not given)" if hint else ""))
    return _report(sums, groups)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _union(rs: list[Any]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(rs):
        if a >= b:
            continue
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _subtract(need: list[tuple[int, int]], have: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out = []
    for a, b in need:
        cur = a
        for c, d in have:
            if d <= cur or c >= b:
                continue
            if c > cur:
                out.append((cur, c))
            cur = max(cur, d)
        if cur < b:
            out.append((cur, b))
    return out


def _report(sums: list[tuple[str, dict[str, Any]]], groups: dict[tuple[str, str], list[Any]]) -> dict[str, Any]:
    s0 = sums[0][1]
    kind = s0["kind"]
    rep: dict[str, Any] = {"format": "vmalab-campaign-report", "format_version": FORMAT_VERSION, "kind": kind,
                           "seed": s0["seed"], "config": s0["config"],
                           "vmalab": {"version": s0["vmalab"].get("version"),
                                      "commit": s0["vmalab"].get("commit"),
                                      "sources": sorted({str(s["vmalab"].get("source")) for _, s in sums})},
                           "summaries": [p for p, _ in sums], "kernels": [], "totals": {}}
    totals: dict[str, float] = {}
    digests_by_kernel: dict[str, dict[int, str]] = {}
    for (rel, mach), items in sorted(groups.items()):
        counts: dict[str, float] = {}
        secs = cpu = 0.0
        for _, s in items:
            for k, v in s["counts"].items():
                counts[k] = counts.get(k, 0) + v
            secs += float(s["timing"].get("seconds", 0.0))
            cpu += float(s["timing"].get("case_seconds", 0.0))
        for k, v in counts.items():
            totals[k] = totals.get(k, 0) + v
        ranges = _union([tuple(s["range"]) for _, s in items])
        key = f"{rel} {mach}".strip()
        digests_by_kernel[key] = {i: d for _, s in items for i, d in case_digests(s).items()}
        rep["kernels"].append({"release": rel, "machine": mach, "shards": len(items), "ranges": ranges,
                               "counts": counts, "shard_seconds": round(secs, 3), "case_seconds": round(cpu, 3),
                               "cases_per_case_second": round(counts.get("cases", 0) / cpu, 2) if cpu else None})
    rep["totals"] = totals
    rep["errors"] = [{"kernel": s["kernel"]["release"], **e} for _, s in sums for e in s["errors"]]
    rep["errors"].sort(key=lambda e: (e["kernel"], e["index"]))
    if kind == "fuzz":
        rep["divergences"] = _dedup_divergences(sums)
    else:
        rep["findings"] = _dedup_findings(sums)
    rep["between_releases"] = _between(digests_by_kernel)
    rep["summary"] = report_line(rep)
    return rep


def _dedup_divergences(sums: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for _, s in sums:
        rel = s["kernel"]["release"]
        for d in s["divergences"]:
            key = diff_key(str(d.get("first_diff", "")))
            row = rows.get(key)
            if row is None:
                row = rows[key] = {"key": key, "first_diff": d.get("first_diff"), "kernels": {}, "cases": 0,
                                   "noise": 0, "example": None}
            row["cases"] += 1
            row["noise"] += 1 if d.get("noise") else 0
            row["kernels"].setdefault(rel, []).append(d["index"])
            shrunk = d.get("shrunk") or {}
            n = len(shrunk.get("ops", [])) if isinstance(shrunk, dict) else 0
            ex = row["example"]
            if ex is None or (not d.get("noise") and (ex["noise"] or n < ex["ops"])):
                row["example"] = {"index": d["index"], "name": d.get("name"), "kernel": rel, "ops": n,
                                  "noise": bool(d.get("noise")), "first_diff": d.get("first_diff"), "shrunk": shrunk}
    out = sorted(rows.values(), key=lambda r: (-r["cases"], r["key"]))
    for r in out:
        for v in r["kernels"].values():
            v.sort()
    return out


def _dedup_findings(sums: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for _, s in sums:
        rel = s["kernel"]["release"]
        for p in s["profiles"]:
            rep = p["report"]
            for f in rep["findings"] + rep["kernel_behaviour"]:
                key = (f["kind"], f["category"], f["what"])
                row = rows.setdefault(key, {"kind": f["kind"], "category": f["category"], "what": f["what"],
                                            "profiles": [], "kernels": [], "scenario": f.get("scenario")})
                if f["profile"] not in row["profiles"]:
                    row["profiles"].append(f["profile"])
                if rel not in row["kernels"]:
                    row["kernels"].append(rel)
    return sorted(rows.values(), key=lambda r: (r["kind"] != "driver", r["category"], r["what"]))


def _between(by_kernel: dict[str, dict[int, str]]) -> dict[str, Any]:
    """Cases run on more than one kernel whose outcomes differ."""
    if len(by_kernel) < 2:
        return {"kernels": sorted(by_kernel), "compared": 0, "differ": 0, "examples": []}
    keys = sorted(by_kernel)
    common = set.intersection(*(set(by_kernel[k]) for k in keys))
    differ = sorted(i for i in common if len({by_kernel[k][i] for k in keys}) > 1)
    return {"kernels": keys, "compared": len(common), "differ": len(differ),
            "examples": [{"index": i, **{k: by_kernel[k][i] for k in keys}} for i in differ[:20]]}


def report_line(rep: dict[str, Any]) -> str:
    t = rep["totals"]
    nk = len(rep["kernels"])
    if rep["kind"] == "fuzz":
        text = (f"{int(t.get('cases', 0))} cases on {nk} kernel{'s' if nk != 1 else ''}: "
                f"{int(t.get('agree', 0))} agree, {int(t.get('diverge', 0))} diverge "
                f"({len(rep['divergences'])} distinct first differences)")
        if t.get("errors"):
            text += f", {int(t['errors'])} errors"
    else:
        text = (f"{int(t.get('cases', 0))} profiles on {nk} kernel{'s' if nk != 1 else ''}: "
                f"{int(t.get('findings', 0))} findings ({sum(f['kind'] == 'driver' for f in rep['findings'])} "
                "distinct)")
    b = rep["between_releases"]
    if b["compared"]:
        text += f"; {b['differ']} of {b['compared']} cases differ between releases"
    return text


def report_failed(rep: dict[str, Any]) -> bool:
    """True when the merged campaign found something (exit status 1, as fuzz and explore)."""
    t = rep["totals"]
    if rep["kind"] == "fuzz":
        return bool(t.get("diverge") or t.get("errors"))
    return bool(t.get("findings") or t.get("errors"))


def format_markdown(rep: dict[str, Any]) -> str:
    """The merged report as Markdown."""
    cfg = rep["config"]
    title = (f"fuzz seed {rep['seed']}, {cfg.get('ops')} ops per case" if rep["kind"] == "fuzz"
             else f"explore {cfg.get('driver')}")
    vm = rep["vmalab"]
    lines = [f"# vmalab campaign: {title}", "",
             f"vmalab {vm['version']} (commit {vm['commit'] or 'unknown'}, source {', '.join(vm['sources'])}); "
             f"{len(rep['summaries'])} shard summaries.", ""]
    if len(vm["sources"]) > 1:
        lines += ["**Warning:** the shards ran different uncommitted sources of this commit.", ""]
    lines += [rep["summary"], "", "## Kernels", ""]
    if rep["kind"] == "fuzz":
        lines += ["| kernel | machine | shards | cases | agree | diverge | noise | errors | cases/s per core |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for k in rep["kernels"]:
            c = k["counts"]
            rate = k["cases_per_case_second"]
            lines.append(f"| {k['release']} | {k['machine']} | {k['shards']} | {int(c.get('cases', 0))} | "
                         f"{int(c.get('agree', 0))} | {int(c.get('diverge', 0))} | {int(c.get('noise', 0))} | "
                         f"{int(c.get('errors', 0))} | {rate if rate is not None else '-'} |")
        lines += ["", "## Divergences (deduplicated by first difference)", ""]
        if not rep["divergences"]:
            lines.append("(none)")
        for n, d in enumerate(rep["divergences"], 1):
            ex = d["example"]
            where = "; ".join(f"{rel}: {len(ix)} case(s), e.g. {', '.join(map(str, ix[:5]))}"
                              for rel, ix in sorted(d["kernels"].items()))
            noise = f", {d['noise']} kernel noise" if d["noise"] else ""
            lines += [f"### {n}. `{_md(d['first_diff'])}`", "", f"{d['cases']} case(s){noise} — {where}.", "",
                      f"Smallest: {ex['name']} ({ex['ops']} ops, kernel {ex['kernel']}):", "", "```json",
                      json.dumps(ex["shrunk"], indent=1), "```", ""]
    else:
        lines += ["| kernel | machine | profiles | runs | findings | kernel behaviour |", "|---|---|---|---|---|---|"]
        for k in rep["kernels"]:
            c = k["counts"]
            lines.append(f"| {k['release']} | {k['machine']} | {int(c.get('cases', 0))} | {int(c.get('runs', 0))} | "
                         f"{int(c.get('findings', 0))} | {int(c.get('kernel_behaviour', 0))} |")
        lines += ["", "## Findings", ""]
        if not rep["findings"]:
            lines.append("(none)")
        for f in rep["findings"]:
            lines.append(f"- **{f['kind']}** {f['category']} (profiles {', '.join(f['profiles'])}): {_md(f['what'])}")
    if rep["errors"]:
        lines += ["", "## Cases that could not run", ""]
        lines += [f"- {e['kernel']} case {e['index']} ({e.get('name')}): {_md(str(e.get('error')))}"
                  for e in rep["errors"][:50]]
        if len(rep["errors"]) > 50:
            lines.append(f"- ... {len(rep['errors']) - 50} more (see the JSON report)")
    b = rep["between_releases"]
    if len(b["kernels"]) > 1:
        lines += ["", "## Between releases", "",
                  f"{b['compared']} cases ran on every one of {', '.join(b['kernels'])}; {b['differ']} differ."]
        for ex in b["examples"]:
            lines.append(f"- case {ex['index']}: " + "; ".join(f"{k}: {ex[k]}" for k in b["kernels"]))
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("`", "'").replace("\n", " ")


# --- the command line (thin options in cli.py call these) ----------------------------------------------
def campaign_options(fuzz: bool) -> Callable[[Any], Any]:
    """The campaign options of ``vmalab fuzz`` (``fuzz=True``: with ``--start``) and ``vmalab explore``."""
    import click

    def deco(f: Any) -> Any:
        opts = [
            click.option("--shard", default=None, metavar="I/N",
                         help="Run only shard I of N (0-based) of the cases; writes a summary (see --summary)."),
            click.option("--summary", "summary_path", type=click.Path(dir_okay=False), default=None,
                         help="Keep a resumable JSON summary here (default with --shard: "
                         + ("fuzz-seedS-shardIofN.json" if fuzz else "explore-DRIVER-shardIofN.json")
                         + "); rerunning the same command resumes it."),
            click.option("--backend", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                         help="Where cases run: worker processes here, or a Ray cluster (pip install 'vmalab[ray]')."),
            click.option("--address", default=None, help="The Ray cluster to use with --backend ray (e.g. HOST:6379)."),
            click.option("--progress-every", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
                         help="Seconds between progress lines when stderr is not a terminal."),
        ]
        if fuzz:
            opts.insert(1, click.option("--start", type=click.IntRange(min=0), default=0, show_default=True,
                                        help="The first case index: the campaign is cases START .. START+CASES-1."))
        for o in reversed(opts):
            f = o(f)
        return f
    return deco


def _err(text: str) -> None:
    import click
    click.echo(text, err=True)


def fuzz_command(seed: int, cases: int, config: Any, jobs: int | None, out_dir: str, shard: str | None,
                 start: int, summary_path: str | None, backend: str, address: str | None,
                 progress_every: float = 10.0) -> int:
    """``vmalab fuzz``: run (a shard of) a fuzz campaign, print diverging cases as they come and the final
    line; return the exit status (1 when a case diverges or cannot run)."""
    import click

    from .oracle.fuzz import CaseOutcome, generate_scenario, write_failure
    from .oracle.kernel import KernelRunnerError
    plan = plan_fuzz(seed, cases, config, start=start, shard=shard)
    path = summary_path or (default_summary_path(plan) if shard is not None else None)
    state_note = ShardState(plan, path) if path else None  # checks a previous summary before anything runs
    if state_note is not None and state_note.resumed:
        total = len(plan.indices())
        _err(f"{path} is complete ({total} cases): nothing to run" if state_note.resumed == total else
             f"resuming {path}: {state_note.resumed} of {total} cases done")
    progress = Progress(plan.label(), len(plan.indices()), every=progress_every)

    def on_record(rec: dict[str, Any]) -> None:
        if rec["status"] == "diverge":
            raw = generate_scenario(plan.seed, rec["i"], fuzz_config_from_json(plan.config), plan.config["kinds"])
            o = CaseOutcome(rec["i"], "diverge", rec["name"], rec["nops"], first_diff=rec["first_diff"],
                            noise=bool(rec.get("noise")), original=raw, shrunk=rec.get("shrunk"),
                            kernel=rec.get("kernel"), model=rec.get("model"), diffs=list(rec.get("diffs", [])))
            paths = write_failure(out_dir, o)
            noise = " (kernel noise)" if o.noise else ""
            nshrunk = len((o.shrunk or {}).get("ops", []))
            prefix = "\n" if progress.tty else ""
            _err(f"{prefix}{o.name}: DIVERGES{noise}, shrunk {o.nops} -> {nshrunk} ops: {o.first_diff}\n  "
                 f"{paths[0] if paths else ''}")
        elif rec["status"] == "error":
            _err(f"{rec.get('name')}: cannot run: {rec.get('error')}")

    try:
        s = run_shard(plan, path, backend=backend, jobs=jobs, address=address, on_record=on_record,
                      progress=progress)
    except KernelRunnerError as e:
        raise CampaignError(f"live kernel: {e}") from None
    except OSError as e:  # writing the summary or a failing case
        raise CampaignError(f"{e.filename or path}: {e.strerror or e}") from None
    except KeyboardInterrupt:
        if not path:
            raise
        raise CampaignError(f"interrupted: {path} keeps the cases done; rerun the same command to resume") from None
    click.echo(summary_line(s))
    if path:
        _err(f"summary: {path}")
    c = s["counts"]
    return 1 if c["diverge"] or c["errors"] else 0


def report_from_summary(s: dict[str, Any]) -> Any:
    """An explore summary back into a :class:`vmalab.explore.Report` (same rows, in the same order, as an
    unsplit ``explore`` over the shard's profiles)."""
    from .explore import Finding, Report
    profs = [p["profile"] for p in s["profiles"]]
    rep = Report(os.path.splitext(os.path.basename(str(s["config"]["driver"])))[0], profs)
    for p in s["profiles"]:
        r = p["report"]
        rep.runs += int(r["runs"])
        for key, dest in (("findings", rep.findings), ("kernel_behaviour", rep.kernel)):
            for f in r[key]:
                scn = f.get("scenario")
                dest.append(Finding(f["kind"], f["profile"], f["category"], f["what"], list(f["points"]),
                                    list(f["shapes"]), scn if isinstance(scn, dict) else {}))
        rep.unavailable.update(r.get("unavailable", {}))
        rep.refused.update(r.get("refused", {}))
    return rep


def explore_command(driver: str, profiles: list[str], pairs: bool, driver_points: bool, shard: str | None,
                    summary_path: str | None, backend: str, address: str | None,
                    progress_every: float = 10.0) -> tuple[Any, dict[str, Any]]:
    """``vmalab explore`` through a campaign (``--shard``/``--summary``/``--backend``): returns the report
    of the shard's profiles (as :func:`vmalab.explore.explore` would) and the summary."""
    plan = plan_explore(driver, profiles, pairs=pairs, driver_points=driver_points, shard=shard)
    prepare_worker(plan)  # a driver that does not load is an error before anything is written
    path = summary_path or (default_summary_path(plan) if shard is not None else None)
    progress = Progress(plan.label(), len(plan.indices()), every=progress_every)
    try:
        s = run_shard(plan, path, backend=backend, address=address, progress=progress)
    except OSError as e:
        raise CampaignError(f"{e.filename or path}: {e.strerror or e}") from None
    if path:
        _err(f"{summary_line(s)}\nsummary: {path}")
    if s["errors"]:
        first = s["errors"][0]
        raise CampaignError(f"profile {first['name']} could not be explored: {first['error']}"
                            + (f" (and {len(s['errors']) - 1} more)" if len(s["errors"]) > 1 else ""))
    return report_from_summary(s), s


def merge_command(paths: Sequence[str], out: str | None, json_path: str | None) -> int:
    """``vmalab campaign merge``: print or write the Markdown report, write the JSON one; exit status 1
    when the campaign found something."""
    import click
    rep = merge_summaries(paths)
    md = format_markdown(rep)
    if json_path:
        write_json_atomic(json_path, rep, indent=1)
    if out:
        d = os.path.dirname(os.path.abspath(out))
        os.makedirs(d, exist_ok=True)
        tmp = f"{out}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(md)
        os.replace(tmp, out)
        click.echo(rep["summary"])
    else:
        click.echo(md, nl=False)
    return 1 if report_failed(rep) else 0
