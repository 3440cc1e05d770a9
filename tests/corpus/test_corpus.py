"""The scenario corpus: every scenario in tests/scenarios has the kernel's recorded result beside it
(NAME.kernel.json, with the kernel release it came from).

* The model must agree with the recording, always.
* The recording must agree with the live kernel whenever the live kernel is the recording's release, so a
  kernel upgrade shows up as a named difference in one test, not as a broken suite.
"""

from __future__ import annotations

import os

import pytest

from vmalab.execute import run_on_model
from vmalab.scenario import compare_results, load_scenario

from ..conftest import corpus_paths, live_release, load_json, needs_linux

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
    scn = load_scenario(path)
    rec = _recording(path)
    assert rec["name"] == scn.name
    got = run_on_model(scn, initial_maps=rec["env"].get("initial_maps"), validate=True)
    diffs = compare_results(rec, got)
    assert not diffs, "\n".join(diffs[:20])


@needs_linux
@pytest.mark.parametrize("path", PATHS, ids=IDS)
def test_recording_matches_live_kernel(path: str) -> None:
    from vmalab.oracle.kernel import run_on_kernel

    rec = _recording(path)
    recorded = rec["env"]["kernel"]
    if live_release() != recorded:
        pytest.skip(f"recorded on {recorded}, live kernel is {live_release()}: re-record to compare")
    live = run_on_kernel(load_scenario(path))
    diffs = compare_results(rec, live)
    assert not diffs, f"live kernel {live_release()} differs from the recording:\n" + "\n".join(diffs[:20])
