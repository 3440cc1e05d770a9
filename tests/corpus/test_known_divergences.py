"""Known divergences: scenarios where the model and the live kernel still differ, kept with the kernel's
recording and a written reason (the scenario's "reason" field) instead of being dropped.

Each test pins the divergence down: it must still be there and still be only in the Rss of snapshot VMAs.
When the model learns the behaviour, the test fails: move the scenario into tests/scenarios (with its
recording, unchanged) and name it in RETIRED.
"""

from __future__ import annotations

import glob
import os

import pytest

from vmalab.execute import run_on_model
from vmalab.scenario import compare_results, load_scenario

from ..conftest import (
    KNOWN_DIVERGENCES_DIR,
    SCENARIO_DIR,
    live_diffs,
    load_json,
    needs_linux,
)

HERE = KNOWN_DIVERGENCES_DIR
PATHS = sorted(p for p in glob.glob(os.path.join(HERE, "*.json")) if not p.endswith(".kernel.json"))
IDS = [os.path.basename(p)[:-5] for p in PATHS]

#: divergences the model has learned since: each is now an ordinary corpus scenario (tests/corpus/test_corpus.py
#: checks the model against its recording), with what explained it
RETIRED = {
    "fault_sigbus_fault_around_after_fork_read": "6.18-stable 74207de2ba10: fault-around beyond EOF maps "
    "nothing when the first cached page reaches EOF and the 2 MiB region has no page table yet",
}


@pytest.mark.parametrize("name", sorted(RETIRED))
def test_retired_divergence_is_in_the_corpus(name: str) -> None:
    assert not os.path.exists(os.path.join(HERE, name + ".json")), f"{name} is retired: keep it in tests/scenarios"
    path = os.path.join(SCENARIO_DIR, name + ".json")
    assert os.path.exists(path) and os.path.exists(path[:-5] + ".kernel.json")
    assert "reason" not in load_json(path), "a corpus scenario agrees with the kernel: drop the divergence's reason"


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
@pytest.mark.live
@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_recording_is_what_the_live_kernel_does(path: str, request: pytest.FixtureRequest) -> None:
    assert not live_diffs(path, load_json(path[:-5] + ".kernel.json"), request)
