"""The package's layout: kernel-named layers, imports that only point down, no cycles.

The import graph is read from the source (runtime imports only: an import under ``if TYPE_CHECKING:``
exists for annotations and is never executed).  ``vmalab/__init__.py`` is the public surface and may
import anything; every other module belongs to exactly one layer below, and imports only its own layer
or lower ones.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from ..conftest import ROOT

SRC = Path(ROOT) / "src" / "vmalab"

#: layers, lowest first (docs/architecture.md explains them)
LAYERS: list[tuple[str, set[str]]] = [
    ("base", {"constants", "pagetable", "locking", "probe", "resources", "vma_tree", "layout", "_mypyc",
              "elf", "mmu_notifier"}),
    ("files", {"files"}),
    ("state", {"mm_types"}),
    ("vma algebra", {"vma", "fdtable", "realfile", "explain"}),
    ("faults", {"faults", "gup"}),
    ("syscall families", {"mmap", "mprotect", "mremap", "madvise", "mlock", "mseal", "msync", "mincore", "brk",
                          "fork", "procfs", "debug", "binfmt_elf", "access"}),
    ("driver contract", {"driver", "profiles", "compat"}),
    ("facade", {"syscalls", "mm"}),
    ("drivers", {"drivers", "drivers._helpers", "drivers.devmem", "drivers.devzero", "drivers.failing_action",
                 "drivers.filemap", "drivers.iomem", "drivers.kpages", "drivers.mapped_private", "drivers.ovl",
                 "drivers.secretmem"}),
    ("adapters", {"adapters", "adapters.syscalls", "adapters.unicorn", "adapters.qiling"}),
    ("lab", {"faultpoints", "scenario", "execute", "lockcheck", "explore", "portcheck", "oracle", "oracle.kernel",
             "oracle.cbuild", "oracle.fuzz", "oracle.exec_capture", "oracle.record_program", "programtrace", "strace",
             "replay", "demo", "cli", "__main__", "explain_scenario", "termview", "campaign",
             "campaign_ray", "view"}),
]
#: the model (everything below the lab) never imports these
TOOLS = {"drivers", "explore", "lockcheck", "oracle", "cli", "execute", "scenario", "demo", "faultpoints"}


def _modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        rel = p.relative_to(SRC).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str) -> set[str]:
    """The package modules ``name`` imports at run time."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for n in ast.walk(node))
    package = name if path.name == "__init__.py" else (name.rsplit(".", 1)[0] if "." in name else "")
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                target = ".".join([*base, node.module] if node.module else base)
            else:
                if not (node.module or "").startswith("vmalab"):
                    continue
                target = (node.module or "").removeprefix("vmalab").lstrip(".")
            subs = {f"{target}.{a.name}".lstrip(".") for a in node.names} & MODULES.keys()
            if subs:
                found |= subs
            elif target in MODULES:
                found.add(target)
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("vmalab."):
                    found.add(a.name.removeprefix("vmalab."))
    found.discard(name)
    found.discard("")
    return found


GRAPH = {m: _imports(m) for m in MODULES if m}
LAYER_OF = {m: i for i, (_, mods) in enumerate(LAYERS) for m in mods}


def test_every_module_has_a_layer() -> None:
    assert set(GRAPH) == set(LAYER_OF), (f"modules without a layer: {sorted(set(GRAPH) - set(LAYER_OF))}; "
                                         f"layers naming missing modules: {sorted(set(LAYER_OF) - set(GRAPH))}")


def test_imports_point_down() -> None:
    upward = [f"{m} ({LAYERS[LAYER_OF[m]][0]}) imports {d} ({LAYERS[LAYER_OF[d]][0]})"
              for m, deps in sorted(GRAPH.items()) for d in sorted(deps) if LAYER_OF[d] > LAYER_OF[m]]
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                cyc = visit(d)
                if cyc:
                    return cyc
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(GRAPH):
        if m not in state:
            cycle = visit(m)
            assert cycle is None, " -> ".join(cycle)


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if LAYER_OF.get(m, 0) < LAYER_OF["drivers"]))
def test_the_model_imports_no_driver_and_no_tool(module: str) -> None:
    bad = {d for d in GRAPH[module] if d.split(".")[0] in TOOLS}
    assert not bad, f"{module} imports {sorted(bad)}"


def test_the_checker_sees_what_it_must() -> None:
    """The graph reader itself: known edges are found, typing-only ones are not."""
    assert "vma" in GRAPH["mmap"] and "mm_types" in GRAPH["vma"]
    assert "drivers.filemap" in GRAPH["drivers.ovl"]
    assert "profiles" not in GRAPH["mm_types"]  # under TYPE_CHECKING only
    assert os.path.basename(MODULES["drivers"]) == "__init__.py"
