"""Shared fixtures: the scenario corpus and the live-kernel release."""

from __future__ import annotations

import glob
import json
import os
import platform
import re
import sys
from collections import Counter
from typing import Any, NoReturn

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# --- which build of vmalab the suite tests --------------------------------------------------------------
def _select_build() -> str:
    """``VMALAB_BUILD=mypyc``: build (or reuse) the compiled build with tools/build_mypyc.py and put it first
    on sys.path, and on the PYTHONPATH of the processes the tests start (``python -m vmalab ...``), before
    anything imports vmalab.  Unset, empty or ``pure``: the source package."""
    build = os.environ.get("VMALAB_BUILD", "").strip().lower() or "pure"
    if build == "pure":
        return build
    if build != "mypyc":
        raise pytest.UsageError(f"VMALAB_BUILD={build!r}: expected mypyc or pure")
    if "vmalab" in sys.modules:
        raise pytest.UsageError("VMALAB_BUILD=mypyc: vmalab was imported before tests/conftest.py could select "
                                "the compiled build")
    import subprocess

    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "build_mypyc.py")], stdout=subprocess.PIPE,
                          text=True)
    if proc.returncode:
        raise pytest.UsageError("VMALAB_BUILD=mypyc: tools/build_mypyc.py failed")
    path = proc.stdout.strip().splitlines()[-1]
    sys.path.insert(0, path)
    os.environ["PYTHONPATH"] = os.pathsep.join([path, *filter(None, [os.environ.get("PYTHONPATH")])])
    return build


#: the build under test: ``pure`` (src/vmalab) or ``mypyc`` (build/mypyc)
BUILD = _select_build()
SCENARIO_DIR = os.path.join(HERE, "scenarios")
KNOWN_DIVERGENCES_DIR = os.path.join(HERE, "known_divergences")

ON_LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not ON_LINUX, reason="the live-kernel runner needs Linux (x86_64)")


def is_model_only(path: str) -> bool:
    """A scenario that asks for a kernel profile other than the live one, or opens a built-in model
    driver (``dev:``): it cannot have a live recording (tests/test_driver_contract.py checks those)."""
    raw = load_json(path)
    if raw.get("kernel_profile") not in (None, "6.18"):
        return True
    return any(isinstance(op.get("fd"), str) and op["fd"].startswith("dev:") for op in raw.get("ops", []))


def corpus_paths() -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(SCENARIO_DIR, "*.json"))
                  if not p.endswith(".kernel.json") and not is_model_only(p))


def model_only_paths() -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(SCENARIO_DIR, "*.json"))
                  if not p.endswith(".kernel.json") and is_model_only(p))


def load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def live_release() -> str | None:
    """This machine's kernel build string (``6.18.44-fc-v669``), or None off Linux."""
    return platform.release() if ON_LINUX else None


_NUMERIC_RELEASE = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


def numeric_release(release: str | None) -> str | None:
    """The release that decides kernel behaviour: the numeric version at the start of a build string,
    without the local build suffix (``6.18.44-fc-v669`` -> ``6.18.44``; ``6.18-rc3`` -> ``6.18.0``).  None
    when it does not start with a version."""
    m = _NUMERIC_RELEASE.match(release or "")
    if not m:
        return None
    return f"{m.group(1)}.{m.group(2)}.{m.group(3) or 0}"


def release_matches(recorded: str | None, live: str | None) -> bool:
    """Whether a recording made on kernel ``recorded`` can be compared with the live kernel ``live``: the
    same numeric release (build suffixes such as ``-fc-v595`` / ``-fc-v669`` do not change behaviour)."""
    a, b = numeric_release(recorded), numeric_release(live)
    return a is not None and a == b


#: the modelled capabilities a recording made before env.caps existed was made with (root on this machine)
ASSUMED_RECORDING_CAPS = frozenset({"CAP_IPC_LOCK", "CAP_SYS_RAWIO", "CAP_SYS_ADMIN"})


def caps_difference(recorded_env: dict, live_env: dict) -> str | None:
    """Why a live run cannot be compared with a recording because of privileges, or None when it can: the
    live runner must hold the modelled capabilities the recording's runner held (``env.caps``; recordings
    older than format 1.1 were made as root)."""
    live = set(live_env.get("caps") or [])
    if "caps" in recorded_env:
        rec = set(recorded_env["caps"] or [])
        if rec != live:
            return (f"the live runner has capabilities {sorted(live) or 'none'}, the recording's had "
                    f"{sorted(rec) or 'none'}")
        return None
    missing = ASSUMED_RECORDING_CAPS - live
    if missing:
        return f"the live runner lacks {', '.join(sorted(missing))}, which the recording's runner (root) had"
    return None


# --- reporting skipped live-kernel checks ------------------------------------------------------------
#: (nodeid, reason, could_run) of every live-kernel check skipped in this session
LIVE_SKIPS: list[tuple[str, str, bool]] = []


def skip_live(request: pytest.FixtureRequest, recorded: str | None, reason: str) -> NoReturn:
    """Skip a live-kernel check (a test marked ``live``), recording why for the summary.  A check "could
    run" when this is Linux and the recording's numeric release is the live one: in CI (``CI`` set) such
    a skip fails the run."""
    could_run = ON_LINUX and release_matches(recorded, live_release())
    request.node.user_properties.append(("live_skip_could_run", could_run))
    pytest.skip(reason)


def model_diffs(path: str, rec: dict) -> list[str]:
    """Run scenario ``path`` on the model, from the recording's initial maps and with its privileges, and
    compare it with the recording ``rec`` (checking the invariants after every op)."""
    from vmalab.execute import run_on_model
    from vmalab.scenario import compare_results, load_scenario

    scn = load_scenario(path)
    assert rec["name"] == scn.name
    got = run_on_model(scn, initial_maps=rec["env"].get("initial_maps"), validate=True, caps=rec["env"].get("caps"))
    return compare_results(rec, got)


def live_diffs(path: str, rec: dict, request: pytest.FixtureRequest) -> list[str]:
    """Run scenario ``path`` on the live kernel and compare it with its recording ``rec``; skipped (and listed
    in the summary) when the numeric release or the privileges differ from the recording's."""
    from vmalab.oracle.kernel import run_on_kernel
    from vmalab.scenario import compare_results, load_scenario

    recorded = rec["env"]["kernel"]
    if not release_matches(recorded, live_release()):
        skip_live(request, recorded, f"recorded on {numeric_release(recorded) or recorded}, the live kernel is "
                  f"{numeric_release(live_release()) or live_release()}: re-record to compare")
    live = run_on_kernel(load_scenario(path))
    why = caps_difference(rec["env"], live["env"])
    if why:
        skip_live(request, recorded, f"privileges differ: {why}")
    return compare_results(rec, live)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "live: a check of a recording against the live kernel")
    config.addinivalue_line("markers", "pure_only(reason): a test that cannot run on the compiled build by "
                            "nature (skipped with VMALAB_BUILD=mypyc)")


def pytest_report_header(config: pytest.Config) -> str:
    import vmalab

    return f"vmalab build: {BUILD} ({os.path.dirname(vmalab.__file__)})"


def pytest_runtest_setup(item: pytest.Item) -> None:
    marker = item.get_closest_marker("pure_only")
    if marker is not None and BUILD != "pure":
        pytest.skip(f"pure Python only: {marker.kwargs.get('reason') or (marker.args or [''])[0]}")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and "live" in report.keywords:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        reason = reason.removeprefix("Skipped: ")
        LIVE_SKIPS.append((report.nodeid, reason, bool(dict(report.user_properties).get("live_skip_could_run"))))


def live_skip_summary(skips: list[tuple[str, str, bool]], live: str | None, ci: bool) -> tuple[list[str], bool]:
    """The summary lines for the skipped live-kernel checks, and whether they fail the run (in CI, when
    some could have run)."""
    if not skips:
        return [], False
    by_reason = Counter(reason for _, reason, _ in skips)
    lines = [f"{len(skips)} live-kernel check{'s' * (len(skips) != 1)} skipped (live kernel {live or 'none'}):"]
    lines += [f"  {n} x {reason}" for reason, n in by_reason.most_common()]
    could = sum(1 for *_, c in skips if c)
    fail = ci and could > 0
    if could:
        lines.append(f"  {could} of them could have run (Linux, same numeric release)"
                     + (": failing the run (CI is set)" if ci else ""))
    return lines, fail


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines, fail = live_skip_summary(LIVE_SKIPS, live_release(), in_ci())
    if lines:
        terminalreporter.section("live-kernel checks skipped", red=fail, yellow=not fail)
        for line in lines:
            terminalreporter.write_line(line)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _, fail = live_skip_summary(LIVE_SKIPS, live_release(), in_ci())
    if fail and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
