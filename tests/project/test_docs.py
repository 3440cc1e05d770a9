"""The docs stay true: their runnable examples run (each ```python block, in order, in one namespace per
file), and every name docs/architecture.md maps a kernel construct to exists."""

from __future__ import annotations

import importlib
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


ARCHITECTURE = "docs/architecture.md"
MAPPING_HEADER = ["kernel construct", "module", "vmalab name"]
#: modules the architecture doc need not name: the package itself, ``python -m vmalab``, drivers' shared helpers
UNMAPPED_MODULES = {"vmalab", "vmalab.__main__", "vmalab.drivers._helpers"}


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row (a ``|`` inside backticks does not split)."""
    cells, cur, in_code = [], "", False
    for ch in line.strip().strip("|"):
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append(cur.strip())
            cur = ""
        else:
            cur += ch
    cells.append(cur.strip())
    return cells


def _mapping_rows(text: str) -> list[tuple[int, list[str], list[str]]]:
    """(line number, header cells, cells) of every table row whose second cell is a backticked
    ``vmalab.xxx`` module."""
    rows, header = [], None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = cells
            continue
        if len(cells) > 1 and re.fullmatch(r"`vmalab(\.\w+)+`", cells[1]):
            rows.append((n, header, cells))
    return rows


def _package_modules() -> set[str]:
    src = os.path.join(ROOT, "src")
    out = set()
    for dirpath, _, names in os.walk(os.path.join(src, "vmalab")):
        for name in names:
            if name.endswith(".py"):
                parts = os.path.relpath(os.path.join(dirpath, name[:-3]), src).split(os.sep)
                if parts[-1] == "__init__":
                    parts = parts[:-1]
                out.add(".".join(parts))
    return out


def test_architecture_doc_names_exist() -> None:
    """Every mapping table row of docs/architecture.md names a real module and real names in it, the
    tables use one column format, and every module of the package is mapped somewhere."""
    with open(os.path.join(ROOT, ARCHITECTURE), encoding="utf-8") as f:
        rows = _mapping_rows(f.read())
    problems: list[str] = []
    named: set[str] = set()
    for n, header, cells in rows:
        where = f"{ARCHITECTURE}:{n}"
        if header != MAPPING_HEADER:
            problems.append(f"{where}: the table's header is {header}, not {MAPPING_HEADER}")
        if len(cells) != 3:
            problems.append(f"{where}: {len(cells)} cells, not 3")
            continue
        module_name = cells[1].strip("`")
        if not re.fullmatch(r"`[\w.]+`(, `[\w.]+`)*", cells[2]):
            problems.append(f"{where}: the name cell is not backticked names separated by commas: {cells[2]!r}")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            problems.append(f"{where}: cannot import {module_name}: {e}")
            continue
        named.add(module_name)
        for name in re.findall(r"`([^`]+)`", cells[2]):
            obj: object = module
            for part in name.split("."):
                if not hasattr(obj, part):
                    problems.append(f"{where}: {module_name} has no {name}")
                    break
                obj = getattr(obj, part)
    assert not problems, "\n".join(problems)
    assert len(rows) >= 40, f"only {len(rows)} mapping rows in {ARCHITECTURE}"
    unmapped = sorted(_package_modules() - UNMAPPED_MODULES - named)
    assert not unmapped, f"modules no row of {ARCHITECTURE} names: {unmapped}"
