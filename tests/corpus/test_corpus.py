"""The scenario corpus: every scenario in tests/scenarios has the kernel's recorded result beside it
(NAME.kernel.json, with the kernel release it came from).

* The model must agree with the recording, always.
* The recording must agree with the live kernel whenever the live kernel is the recording's release, so a
  kernel upgrade shows up as a named difference in one test, not as a broken suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from ..conftest import (
    ROOT,
    corpus_paths,
    live_diffs,
    live_release,
    load_json,
    model_diffs,
    needs_linux,
    numeric_release,
    release_matches,
)

PATHS = corpus_paths()
IDS = [os.path.basename(p)[:-5] for p in PATHS]


def _recording(path: str) -> dict:
    rec = path[:-5] + ".kernel.json"
    assert os.path.exists(rec), f"{os.path.basename(path)} has no recording; run: vmalab record {path}"
    return load_json(rec)


def test_corpus_is_not_empty() -> None:
    assert len(PATHS) >= 40


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_model_agrees_with_recording(path: str) -> None:
    diffs = model_diffs(path, _recording(path))
    assert not diffs, "\n".join(diffs[:20])


@needs_linux
@pytest.mark.live
@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_recording_matches_live_kernel(path: str, request: pytest.FixtureRequest) -> None:
    """Compared whenever the live kernel has the recording's numeric release (the build suffix, e.g.
    ``-fc-v595`` vs ``-fc-v669``, does not change behaviour); skips are listed in the test summary."""
    diffs = live_diffs(path, _recording(path), request)
    assert not diffs, f"live kernel {live_release()} differs from the recording:\n" + "\n".join(diffs[:20])


@pytest.mark.parametrize("recorded, live, same", [
    ("6.18.44-fc-v595", "6.18.44-fc-v669", True),   # the build suffix does not decide behaviour
    ("6.18.44-fc-v669", "6.18.44-fc-v669", True),
    ("6.18.44", "6.18.44-1-generic", True),
    ("6.18.44-fc-v669", "6.18.45-fc-v669", False),  # a stable update may change behaviour
    ("6.18.44", "6.19.0", False),
    ("6.18", "6.18.0-rc1", True),
    ("6.18.44", None, False),                        # no live kernel (not Linux)
    ("model-6.18", "6.18.44", False),                # not a kernel release
    ("", "", False),
])
def test_release_matching(recorded: str, live: str | None, same: bool) -> None:
    assert release_matches(recorded, live) is same
    assert numeric_release("6.18.44-fc-v669") == "6.18.44"
    assert numeric_release("6.18-rc3") == "6.18.0"
    assert numeric_release("Darwin") is None


@needs_linux
@pytest.mark.parametrize("ci", ["", "true"])
def test_skipped_live_checks_are_reported_and_fail_ci(tmp_path: Any, ci: str) -> None:
    """The test summary lists skipped live-kernel checks with their reasons; with CI set, a skip of a check
    that could have run (Linux, the recording's numeric release) fails the run."""
    test = tmp_path / "test_live_skips.py"
    test.write_text(
        "import pytest\n"
        "from tests.conftest import live_release, skip_live\n\n"
        "@pytest.mark.live\n"
        "def test_other_release(request):\n"
        "    skip_live(request, '1.2.3-old', 'recorded on 1.2.3, the live kernel is newer')\n\n"
        "@pytest.mark.live\n"
        "def test_same_release(request):\n"
        "    skip_live(request, live_release().split('-')[0] + '-other-build', 'privileges differ: none')\n\n"
        "def test_plain():\n"
        "    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci else {})
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
                           str(test)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    out = proc.stdout
    assert "live-kernel checks skipped" in out, out
    assert "2 live-kernel checks skipped" in out and "1 x recorded on 1.2.3" in out and "1 x privileges" in out
    assert "1 of them could have run" in out
    assert proc.returncode == (1 if ci else 0), out
