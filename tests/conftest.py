"""Shared fixtures: the scenario corpus and the live-kernel release."""

from __future__ import annotations

import glob
import json
import os
import platform
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO_DIR = os.path.join(HERE, "scenarios")

ON_LINUX = sys.platform.startswith("linux")
needs_linux = pytest.mark.skipif(not ON_LINUX, reason="the live-kernel runner needs Linux (x86_64)")


def corpus_paths() -> list[str]:
    return sorted(p for p in glob.glob(os.path.join(SCENARIO_DIR, "*.json")) if not p.endswith(".kernel.json"))


def load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def live_release() -> str | None:
    return platform.release() if ON_LINUX else None
