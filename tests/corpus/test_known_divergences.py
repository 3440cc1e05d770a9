"""Known divergences: scenarios where the model and the live kernel still differ, kept with the kernel's
recording and a written reason (the scenario's "reason" field) instead of being dropped.

Each test pins the divergence down: it must still be there and still be only in the Rss of snapshot VMAs.
When the model learns the behaviour, the test fails: move the scenario into tests/scenarios.
"""

from __future__ import annotations

import glob
import os

import pytest

from vmalab.execute import run_on_model
from vmalab.scenario import compare_results, load_scenario

from ..conftest import KNOWN_DIVERGENCES_DIR, live_release, load_json, needs_linux

HERE = KNOWN_DIVERGENCES_DIR
PATHS = sorted(p for p in glob.glob(os.path.join(HERE, "*.json")) if not p.endswith(".kernel.json"))
IDS = [os.path.basename(p)[:-5] for p in PATHS]


@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_divergence_is_documented_and_still_only_rss(path: str) -> None:
    scn = load_scenario(path)
    reason = scn.raw.get("reason")
    assert isinstance(reason, str) and len(reason) > 40, "a known divergence needs a written reason"
    rec = load_json(path[:-5] + ".kernel.json")
    diffs = compare_results(rec, run_on_model(scn, initial_maps=rec["env"].get("initial_maps"), validate=True))
    assert diffs, f"{scn.name} now agrees with the kernel: move it into tests/scenarios"
    assert all("rss_kb differ" in d for d in diffs), diffs


@needs_linux
@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_recording_is_what_the_live_kernel_does(path: str) -> None:
    from vmalab.oracle.kernel import run_on_kernel

    rec = load_json(path[:-5] + ".kernel.json")
    if live_release() != rec["env"]["kernel"]:
        pytest.skip(f"recorded on {rec['env']['kernel']}, live kernel is {live_release()}: re-record to compare")
    assert not compare_results(rec, run_on_kernel(load_scenario(path)))
