"""Shared fixtures: the scenario corpus and the live-kernel release."""

from __future__ import annotations

import glob
import json
import os
import platform
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
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
    return platform.release() if ON_LINUX else None
