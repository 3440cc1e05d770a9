"""The Ray backend on a real local Ray cluster: a head and two worker nodes started with Ray's own CLI, bound
to 127.0.0.1 only, killed after a time limit whatever happens, and torn down after the module.

The 200-case fuzz through the cluster must give the local backend's outcome case for case, with every
node taking part, and so must an explore shard; a node killed while it runs a task has its task rerun
elsewhere; cases are pinned to nodes advertising the plan's kernel release; without ray the backend
names the extra to install.  Everything runs in subprocesses (``python -m vmalab ...``), as a user would."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

from tests.conftest import ON_LINUX

#: seconds a cluster process may live at most (``timeout`` kills its whole process group after that, even
#: if pytest itself is killed); the whole module takes about 30 s here
CLUSTER_LIFETIME = 600
SEED = 16
CASES = 200

# The ``ray`` CLI with one change for a loopback-only multi-node cluster on one machine: Ray binds its
# servers to 127.0.0.1 only when the node address is 127.0.0.1, which it allows only when
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 -- and then ``ray start --address`` refuses to add a second node.
# The worker node runs the CLI with that one refusal lifted (its address resolution is untouched).
RAY_CLI = """
import sys, types
import ray._private.ray_constants as constants
import ray.scripts.scripts as scripts
if sys.argv[1:2] == ["start"] and "--head" not in sys.argv:
    lifted = types.ModuleType("ray_constants")
    lifted.__dict__.update(constants.__dict__)
    lifted.ENABLE_RAY_CLUSTER = True
    scripts.ray_constants = lifted
sys.argv[0] = "ray"
sys.exit(scripts.main())
"""

pytestmark = pytest.mark.skipif(not ON_LINUX, reason="the live-kernel fuzz runs on Linux only")


def _ray_available() -> None:
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.fail("ray is not installed: pip install -e '.[test]' (the test extra includes vmalab[ray])")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", PYTHONUNBUFFERED="1")
    env.pop("RAY_ADDRESS", None)
    return env


class LocalRayCluster:
    """A head and ``workers`` worker nodes on 127.0.0.1, each a ``ray start --block`` in its own process
    group under ``timeout``; :meth:`stop` ends them (SIGTERM, then SIGKILL of each group)."""

    def __init__(self, resources: dict[str, float], workers: int = 1) -> None:
        self.resources = resources
        self.nworkers = workers
        self.dir = tempfile.mkdtemp(prefix="vray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def _start(self, name: str, args: list[str]) -> None:
        log = open(os.path.join(self.dir, f"{name}.log"), "wb")
        cmd = ["timeout", "-k", "5", str(CLUSTER_LIFETIME), sys.executable, "-c", RAY_CLI, "start", "--block",
               "--num-cpus=1", f"--resources={json.dumps(self.resources)}", "--disable-usage-stats",
               "--object-store-memory=80000000", f"--dashboard-agent-listen-port={_free_port()}",
               f"--metrics-export-port={_free_port()}", *args]
        env = _env()
        # the head notices a dead node after 3 missed health checks 1 s apart (Ray's default: 30 s or so)
        env.update(RAY_health_check_period_ms="1000", RAY_health_check_failure_threshold="3",
                   RAY_health_check_timeout_ms="1000")
        self.procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True))
        log.close()

    def _wait_log(self, name: str, deadline: float) -> None:
        path = os.path.join(self.dir, f"{name}.log")
        while time.monotonic() < deadline:
            with open(path, "rb") as f:
                if b"Ray runtime started" in f.read():
                    return
            if any(p.poll() is not None for p in self.procs):
                break
            time.sleep(0.2)
        with open(path, "rb") as f:
            tail = f.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"ray {name} did not start:\n{tail}")

    def running_task(self, proc: subprocess.Popen[bytes]) -> bool:
        """Whether a worker process of node ``proc`` is running a campaign task right now."""
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    session = int(f.read().rsplit(b")", 1)[1].split()[3])
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    title = f.read()
            except (OSError, ValueError):
                continue
            if session == proc.pid and title.startswith(b"ray::_run_chunk"):
                return True
        return False

    def kill_node(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL a node and every process of its session, as if its machine died."""
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/stat", "rb") as f:
                    session = int(f.read().rsplit(b")", 1)[1].split()[3])
                if session == proc.pid:
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError):
                pass
        proc.wait()

    def _probe(self, nodes: int, timeout: float) -> None:
        """Wait until ``nodes`` nodes are alive in the cluster."""
        probe = ("import ray, time, logging\n"
                 f"ray.init(address={self.address!r}, log_to_driver=False, logging_level=logging.ERROR)\n"
                 f"while len([n for n in ray.nodes() if n['Alive']]) < {nodes}: time.sleep(0.2)\n")
        out = subprocess.run([sys.executable, "-c", probe], env=_env(), capture_output=True, text=True,
                             timeout=max(5.0, timeout))
        if out.returncode:
            raise RuntimeError(f"ray cluster probe failed: {out.stderr[-2000:]}")

    def start(self, timeout: float = 150.0) -> None:
        deadline = time.monotonic() + timeout
        self._start("head", ["--head", "--node-ip-address=127.0.0.1", f"--port={self.port}",
                             "--include-dashboard=false", f"--temp-dir={self.dir}",
                             f"--ray-client-server-port={_free_port()}"])
        # one node at a time: a worker started while the head (or another worker) is still starting can
        # time out on a loaded 2-core machine
        self._wait_log("head", deadline)
        for k in range(self.nworkers):
            self._start(f"worker{k}", [f"--address={self.address}"])
            self._wait_log(f"worker{k}", deadline)
        self._probe(1 + self.nworkers, deadline - time.monotonic())

    def pids(self) -> list[int]:
        """Processes still running that belong to this cluster (its temp dir or one of its groups)."""
        groups = {p.pid for p in self.procs}
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    cmdline = f.read()
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if stat[0] == b"Z":
                continue
            # Ray's worker processes get their own process group, but stay in the node's session
            if self.dir.encode() in cmdline or int(stat[2]) in groups or int(stat[3]) in groups:
                found.append(int(entry))
        return found

    def stop(self) -> None:
        for p in reversed(self.procs):       # workers first, then the head
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        deadline = time.monotonic() + 10
        while (left := self.pids()) and time.monotonic() < deadline:
            for pid in left:      # stragglers in their own process group (Ray's workers): by id
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)

    def listening_addresses(self) -> set[str]:
        """Local addresses of the TCP sockets this cluster's processes listen on."""
        inodes: set[str] = set()
        for pid in self.pids():
            try:
                for fd in os.listdir(f"/proc/{pid}/fd"):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
            except OSError:
                continue
        addrs: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table) as f:
                for line in f.readlines()[1:]:
                    cols = line.split()
                    if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                        addrs.add(_decode_addr(cols[1].split(":")[0]))
        return addrs


def _decode_addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _kernel_resources() -> dict[str, float]:
    """What the docs tell a worker to advertise: ``python -m vmalab.campaign_ray``."""
    out = subprocess.run([sys.executable, "-m", "vmalab.campaign_ray"], env=_env(), capture_output=True, text=True,
                         timeout=60, check=True)
    res: dict[str, float] = json.loads(out.stdout)
    return res


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRayCluster]:
    _ray_available()
    # the head also advertises a kernel nobody runs, to check that a mislabelled worker is refused
    c = LocalRayCluster({**_kernel_resources(), "vmalab-kernel-0.0.0-mislabelled": 1}, workers=2)
    try:
        c.start()
        yield c
    finally:
        c.stop()
        left = c.pids()
        import shutil
        shutil.rmtree(c.dir, ignore_errors=True)
        assert not left, f"ray processes left after teardown: {left}"


def _vmalab(args: list[str], cwd: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmalab", *args], cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def test_ray_fuzz_equals_local_case_for_case(cluster: LocalRayCluster, tmp_path: object) -> None:
    from vmalab.campaign import case_digests, load_summary
    cwd = str(tmp_path)
    common = ["fuzz", "--seed", str(SEED), "--cases", str(CASES), "--out", "fails"]
    local = _vmalab([*common, "--jobs", "2", "--summary", "local.json"], cwd)
    assert local.returncode in (0, 1), local.stderr
    t0 = time.monotonic()
    remote = _vmalab([*common, "--backend", "ray", "--address", cluster.address, "--summary", "ray.json"], cwd)
    seconds = time.monotonic() - t0
    assert remote.returncode == local.returncode, remote.stderr
    assert "Traceback" not in remote.stderr
    a = load_summary(os.path.join(cwd, "local.json"))
    b = load_summary(os.path.join(cwd, "ray.json"))
    da, db = case_digests(a), case_digests(b)
    assert sorted(da) == list(range(CASES))
    assert db == da
    assert b["counts"] == a["counts"]
    # every node ran cases: the backend's closing line names how many cases each node ran
    line = next(ln for ln in remote.stderr.splitlines() if ln.startswith("ray: "))
    assert f"ray: {CASES} cases on 3 node(s)" in line, line
    print(f"\n200-case fuzz through ray: {seconds:.1f} s (CLI wall time); {line}")


def test_ray_explore_equals_local_profile_for_profile(cluster: LocalRayCluster, tmp_path: object) -> None:
    from vmalab.campaign import case_digests, load_summary
    cwd = str(tmp_path)
    common = ["explore", "devzero", "--all-profiles", "--shard", "0/3"]
    local = _vmalab([*common, "--summary", "local.json"], cwd)
    remote = _vmalab([*common, "--backend", "ray", "--address", cluster.address, "--summary", "ray.json"], cwd)
    assert remote.returncode == local.returncode, remote.stderr
    assert remote.stdout == local.stdout      # the explorer's report of those profiles
    a = case_digests(load_summary(os.path.join(cwd, "local.json")))
    assert len(a) >= 2 and case_digests(load_summary(os.path.join(cwd, "ray.json"))) == a


def test_cluster_listens_on_loopback_only(cluster: LocalRayCluster) -> None:
    addrs = cluster.listening_addresses()
    assert addrs, "found no listening sockets of the cluster"
    assert all(a.startswith("127.") or a in ("::1", "::ffff:127.0.0.1") for a in addrs), addrs


_RUN_PLAN = """
import dataclasses, sys
from vmalab.campaign import CampaignError, plan_fuzz
from vmalab.campaign_ray import run
from vmalab.oracle.fuzz import FuzzConfig
plan = dataclasses.replace(plan_fuzz(1, 4, FuzzConfig()), kernel={"release": sys.argv[2], "machine": "x86_64"})
got = []
try:
    run(plan, list(plan.indices()), got.append, address=sys.argv[1], wait_seconds=2)
except CampaignError as e:
    print(f"CampaignError: {e}"); sys.exit(3)
print(f"records: {len(got)}")
"""


def test_cases_run_only_on_workers_of_the_plans_kernel(cluster: LocalRayCluster, tmp_path: object) -> None:
    # no node advertises this release: the run waits wait_seconds, then says so in one line
    r = subprocess.run([sys.executable, "-c", _RUN_PLAN, cluster.address, "0.0.0-nowhere"], env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "no live Ray worker advertises kernel release 0.0.0-nowhere" in r.stdout
    assert "vmalab-kernel-0.0.0-nowhere" in r.stdout
    # the head advertises a release it does not run: its tasks refuse to run and nothing is recorded
    r = subprocess.run([sys.executable, "-c", _RUN_PLAN, cluster.address, "0.0.0-mislabelled"], env=_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stdout + r.stderr
    assert f"this worker runs kernel {os.uname().release}, the plan needs 0.0.0-mislabelled" in r.stdout
    assert "records:" not in r.stdout


def test_unreachable_address_is_one_line(tmp_path: object) -> None:
    _ray_available()
    r = _vmalab(["fuzz", "--cases", "3", "--backend", "ray", "--address", f"127.0.0.1:{_free_port()}"],
                str(tmp_path), timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot connect to the Ray cluster at 127.0.0.1:" in lines[0], r.stderr


_HIDE_RAY = """
import sys
sys.modules["ray"] = None          # `import ray` raises ImportError, as when the extra is not installed
import vmalab.campaign_ray          # the module itself imports without ray
from vmalab.cli import main
sys.argv = ["vmalab", *sys.argv[1:]]
main()
"""


def test_without_ray_names_the_extra(tmp_path: object) -> None:
    r = subprocess.run([sys.executable, "-c", _HIDE_RAY, "fuzz", "--cases", "3", "--backend", "ray", "--address",
                        "127.0.0.1:1"], cwd=str(tmp_path), env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "pip install 'vmalab[ray]'" in lines[0]


def test_a_worker_node_dies_midway_and_its_cases_are_retried(cluster: LocalRayCluster, tmp_path: object) -> None:
    """A worker node is SIGKILLed while it runs a task: Ray reruns the task on the other nodes and the summary
    still equals the local backend's, case for case."""
    from vmalab.campaign import case_digests, load_summary
    cwd = str(tmp_path)
    cases = 300
    victim = cluster.procs[-1]
    common = ["fuzz", "--seed", str(SEED + 1), "--cases", str(cases), "--no-shrink", "--out", "fails"]
    t0 = time.monotonic()
    run = subprocess.Popen([sys.executable, "-m", "vmalab", *common, "--backend", "ray", "--address",
                            cluster.address, "--summary", "ray.json"], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        # kill the node while it runs a task (its worker's title is ray::_run_chunk then), so that task must
        # be retried elsewhere
        while run.poll() is None and time.monotonic() - t0 < 120 and not cluster.running_task(victim):
            time.sleep(0.02)
        assert run.poll() is None, "the run ended before the new node ran a task"
        cluster.kill_node(victim)
        journal = os.path.join(cwd, "ray.json.journal")
        done = 0
        if os.path.exists(journal):
            with open(journal, "rb") as f:
                done = f.read().count(b"\n")
        out, err = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    seconds = time.monotonic() - t0
    assert done < cases
    local = _vmalab([*common, "--jobs", "2", "--summary", "local.json"], cwd)
    assert run.returncode == local.returncode, err
    assert case_digests(load_summary(os.path.join(cwd, "ray.json"))) == \
        case_digests(load_summary(os.path.join(cwd, "local.json")))
    line = next(ln for ln in err.splitlines() if ln.startswith("ray: "))
    # the node that died may or may not have finished a task before it died; the others ran the rest
    assert re.match(rf"ray: {cases} cases on [23] node\(s\)", line), line
    print(f"\nnode killed after {done} of {cases} cases; the run ended after {seconds:.1f} s; {line}")
