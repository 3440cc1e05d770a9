"""The runnable examples of the docs run (each ```python block, in order, in one namespace per file)."""

from __future__ import annotations

import os
import re

import pytest

from ..conftest import ROOT

DOCS = ["docs/mmap-prepare.md", "README.md"]


def blocks(path: str) -> list[str]:
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        text = f.read()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


@pytest.mark.parametrize("path", DOCS)
def test_doc_examples_run(path: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = blocks(path)
    assert code, f"{path} has no python examples"
    ns: dict[str, object] = {}
    for i, block in enumerate(code):
        try:
            exec(compile(block, f"{path}[block {i}]", "exec"), ns)  # noqa: S102
        except Exception as e:  # pragma: no cover - the message names the block
            raise AssertionError(f"{path} block {i} failed: {type(e).__name__}: {e}\n{block}") from e
    out = capsys.readouterr().out
    assert out.strip(), f"{path} examples printed nothing"
