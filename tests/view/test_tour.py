"""docs/tour.md: its scenarios agree with the live kernel, its commands run, and its pictures are what the
browser view draws.

Every tour scenario the live kernel can run has its recording beside it (docs/tour/NAME.kernel.json, made
with ``vmalab record``): the model must agree with the recording, and the recording with the live kernel
when the live kernel is the recording's release (the corpus's rules, tests/corpus/test_corpus.py).  The
PFN-driver step is model-only (a built-in driver and kernel profiles other than the live one): it is
checked for what the tour says about it.

Each picture is a screenshot of ``vmalab.view`` in the suite's headless Chromium (tests/view/conftest.py).
The last lane of each picture must hold the VMAs the kernel recorded (or, for the model-only step, what the
model's maps say).  The pictures are written to a temporary directory on every run; with
``VMALAB_WRITE_TOUR=1`` they also replace the committed ones in docs/tour/.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sys
from typing import Any

import pytest

from vmalab.execute import ModelRunner
from vmalab.procfs import maps as maps_text
from vmalab.scenario import compare_results, load_scenario
from vmalab.view import driver_steps, lanes_from_scenario, render_html

from ..conftest import (
    ROOT,
    live_diffs,
    live_release,
    load_json,
    model_diffs,
    needs_linux,
    release_matches,
    skip_live,
)
from .conftest import open_html

TOUR_DIR = os.path.join(ROOT, "docs", "tour")
TOUR_MD = os.path.join(ROOT, "docs", "tour.md")
BASE = 0x500000000000
WINDOW = (BASE, BASE + (1 << 30))
#: the placement step works top-down below mmap_base: from its hint up to the top of user space
UPPER = (0x600000000000, 0x800000000000)

#: (picture, scenario, kernel profile or None for the scenario's own, the address range the picture shows)
PICTURES: list[tuple[str, str, str | None, tuple[int, int]]] = [
    ("01_placement", "01_placement", None, UPPER),
    ("02_split_merge", "02_split_merge", None, WINDOW),
    ("03_anon_vma", "03_anon_vma", None, WINDOW),
    ("04_guard_regions", "04_guard_regions", None, WINDOW),
    ("05_mremap", "05_mremap", None, WINDOW),
    ("06_fork_cow", "06_fork_cow", None, WINDOW),
    ("07_pfn_driver_6.19", "07_pfn_driver", "6.19", WINDOW),
    ("07_pfn_driver_7.1", "07_pfn_driver", "7.1", WINDOW),
]
#: the pictures drawn with each VMA's page strip (vmalab view --pages): where the pages are the point
WITH_PAGES = {"04_guard_regions", "06_fork_cow", "07_pfn_driver_6.19", "07_pfn_driver_7.1"}
SCENARIOS = sorted({s for _, s, _, _ in PICTURES})
MODEL_ONLY = {"07_pfn_driver"}
RECORDED = [s for s in SCENARIOS if s not in MODEL_ONLY]


def scenario_path(name: str) -> str:
    return os.path.join(TOUR_DIR, name + ".json")


def recording(name: str) -> dict:
    rec = os.path.join(TOUR_DIR, name + ".kernel.json")
    assert os.path.exists(rec), f"{name} has no recording; run: vmalab record docs/tour/{name}.json"
    return load_json(rec)


def test_tour_scenarios_are_as_listed() -> None:
    on_disk = sorted(f[:-5] for f in os.listdir(TOUR_DIR) if f.endswith(".json") and not f.endswith(".kernel.json"))
    assert on_disk == SCENARIOS
    for name in MODEL_ONLY:
        assert not os.path.exists(os.path.join(TOUR_DIR, name + ".kernel.json"))
    for name in SCENARIOS:
        raw = load_json(scenario_path(name))
        assert raw["name"] == "tour_" + name and raw["ops"][-1]["op"] == "snapshot"


# ---------------------------------------------------------------------------------------------------------
# the live kernel
@pytest.mark.parametrize("name", RECORDED)
def test_model_agrees_with_recording(name: str) -> None:
    diffs = model_diffs(scenario_path(name), recording(name))
    assert not diffs, "\n".join(diffs[:20])


@needs_linux
@pytest.mark.live
@pytest.mark.parametrize("name", RECORDED)
def test_recording_matches_live_kernel(name: str, request: pytest.FixtureRequest) -> None:
    diffs = live_diffs(scenario_path(name), recording(name), request)
    assert not diffs, "the live kernel differs from the tour's recording:\n" + "\n".join(diffs[:20])


def test_pfn_step_same_maps_different_path() -> None:
    """What the tour says of the model-only step: under 6.19 and 7.1 the ops return the same and leave the
    same maps, but 6.19 creates the driver's VMA and unmaps it after the action failed, while 7.1's
    mmap_prepare refuses before any VMA exists."""
    from vmalab.cli import model_only_reason

    scn = load_scenario(scenario_path("07_pfn_driver"))
    assert model_only_reason(scn) is not None
    runs = {}
    for profile in ("6.19", "7.1"):
        runner = ModelRunner(scn, trace=True, kernel=profile, validate="each")
        runs[profile] = (runner.run(), maps_text(runner.mm), [str(e) for e in runner.op_traces[4]])
    (r619, m619, t619), (r71, m71, t71) = runs["6.19"], runs["7.1"]
    assert not compare_results(r619, r71) and m619 == m71
    assert r619["results"][4]["errno"] == "EINVAL"
    assert any("new vma" in t for t in t619) and any("action REMAP_PFN failed" in t for t in t619)
    assert any("unmapped after error" in t for t in t619)
    assert not any("new vma" in t for t in t71) and any("mmap_prepare failed" in t for t in t71)
    snap = r619["results"][-1]["vmas"]
    assert [(v["start"], v["end"]) for v in snap] == [("base+0x0", "base+0x1000"), ("base+0x3000", "base+0x4000"),
                                                      ("base+0x10000", "base+0x12000"),
                                                      ("base+0x12000", "base+0x13000")]
    assert all("pf io" in v["vmflags"] for v in snap[2:]) and all(v["rss_kb"] == 0 for v in snap[2:])


# ---------------------------------------------------------------------------------------------------------
# the pictures
def focus(lanes: list[Any], lo: int, hi: int) -> list[Any]:
    """The lanes with only the VMAs and marks inside [lo, hi) (the part of the address space the step
    works in)."""
    def inside(mark: int) -> int:
        return mark if lo <= mark < hi else 0

    return [dataclasses.replace(lane, vmas=[v for v in lane.vmas if lo <= v.start and v.end <= hi],
                                mmap_base=inside(lane.mmap_base), start_brk=inside(lane.start_brk),
                                brk=inside(lane.brk)) for lane in lanes]


def _absolute(addr: str) -> int:
    m = re.fullmatch(r"base([+-])0x([0-9a-f]+)", addr)
    if m:
        return BASE + (1 if m.group(1) == "+" else -1) * int(m.group(2), 16)
    return int(addr, 16)


def expected_blocks(name: str, profile: str | None, lo: int, hi: int) -> list[tuple[int, int, str]]:
    """(start, end, perms) of the VMAs the last lane must show: the kernel's recorded final snapshot, or
    for a model-only step the model's maps lines, inside [lo, hi)."""
    if name in RECORDED:
        vmas = recording(name)["results"][-1]["vmas"]
        return [(_absolute(v["start"]), _absolute(v["end"]), v["perms"]) for v in vmas]
    runner = ModelRunner(load_scenario(scenario_path(name)), kernel=profile)
    runner.run()
    out = []
    for line in maps_text(runner.mm).splitlines():
        a, b = (int(x, 16) for x in line.split()[0].split("-"))
        if lo <= a and b <= hi:
            out.append((a, b, line.split()[1]))
    return out


def lane_blocks(page: Any, lane: Any) -> list[tuple[int, int, str]]:
    """(start, end, perms) of the VMA blocks of one lane of the page (the DOM contract of vmalab.view)."""
    blocks = lane.locator("rect.vma[data-start]")
    out = []
    for i in range(blocks.count()):
        b = blocks.nth(i)
        out.append((int(b.get_attribute("data-start"), 16), int(b.get_attribute("data-end"), 16),
                    b.get_attribute("data-perms")))
    return out


def show(page: Any, tmp_path: Any, lanes: list[Any], where: tuple[int, int], title: str, picture: str) -> Any:
    """Open the view of ``lanes`` (the part in ``where``) and screenshot it; with VMALAB_WRITE_TOUR set the
    picture replaces docs/tour/PICTURE.png.  Returns the page's lanes (a locator)."""
    if "focus" in inspect.signature(render_html).parameters:
        html = render_html(lanes, title=title, focus=where)  # type: ignore[call-arg]
    else:
        html = render_html(focus(lanes, *where), title=title)
    open_html(page, html, tmp_path / f"{picture}.html")
    assert not page.errors, page.errors
    # the lanes scroll sideways inside the page: widen the window to the widest lane, so the picture has it all
    widest = page.evaluate("Math.max(...[...document.querySelectorAll('svg.lanesvg')].map(s => s.width.baseVal.value))")
    page.set_viewport_size({"width": min(2600, max(1000, int(widest) + 80)), "height": 900})
    shot = tmp_path / f"{picture}.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    if os.environ.get("VMALAB_WRITE_TOUR"):
        shutil.copyfile(shot, os.path.join(TOUR_DIR, f"{picture}.png"))
    return page.locator("section[data-lane]")


@pytest.mark.parametrize(("picture", "name", "profile", "where"), PICTURES, ids=[p[0] for p in PICTURES])
def test_tour_picture(page: Any, tmp_path: Any, picture: str, name: str, profile: str | None,
                      where: tuple[int, int]) -> None:
    """The picture of a step: its last lane holds exactly the VMAs the kernel recorded at the end."""
    lanes = lanes_from_scenario(scenario_path(name), kernel=profile, pages=picture in WITH_PAGES)
    title = f"vmalab tour: {picture.replace('_', ' ')}" + (f" (kernel profile {profile})" if profile else "")
    drawn = show(page, tmp_path, lanes, where, title, picture)
    assert drawn.count() == len(scenario_ops(name)) + 1  # the initial state and one lane per op
    got = lane_blocks(page, drawn.last)
    want = expected_blocks(name, profile, *where)
    assert want
    lo, hi = want[0][0], want[-1][1]  # every block in the span of the expected ones, and nothing else
    assert [g for g in got if g[0] < hi and g[1] > lo] == want
    if name == "07_pfn_driver":
        assert any("mmap_prepare" in s for s in driver_steps_of(name, profile))
        assert drawn.locator("[data-driver]").count() >= 1  # the driver lane


def scenario_ops(name: str) -> list[dict]:
    return load_json(scenario_path(name))["ops"]


def python_block(marker: str) -> str:
    """The ``python`` block of docs/tour.md that contains ``marker``."""
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", tour_text(), flags=re.S) if marker in b]
    return block


def test_tour_fork_children_picture(page: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Step 6's second picture comes from the doc's own Python block: parent and children side by side.
    The children read what the recording says the kernel's children read, the first child has no VMA
    where MADV_DONTFORK was applied, and its MADV_WIPEONFORK VMA holds no page."""
    monkeypatch.chdir(tmp_path)
    ns: dict[str, Any] = {}
    exec(compile(python_block("parent.fork()"), "docs/tour.md[fork]", "exec"), ns)  # noqa: S102
    assert (tmp_path / "fork.html").exists()
    rec = recording("06_fork_cow")["results"]
    forks = [r for r in rec if r["op"] == "fork"]
    printed = capsys.readouterr().out.split("\n")
    assert printed[0] == str([rd["value"] for rd in forks[0]["child"]["reads"]])
    assert printed[1].split()[0] == str(forks[1]["child"]["reads"][0]["value"])
    drawn = show(page, tmp_path, ns["lanes"], WINDOW, "vmalab tour: fork, parent and children", "06_fork_children")
    assert drawn.count() == 4
    parent, child = lane_blocks(page, drawn.nth(0)), lane_blocks(page, drawn.nth(1))
    dontfork = BASE + 0x8000
    assert any(b[0] == dontfork for b in parent) and not any(b[0] == dontfork for b in child)
    kernel_child = [(_absolute(v["start"]), _absolute(v["end"]), v["perms"]) for v in forks[0]["child"]["vmas"]]
    assert child == kernel_child
    wiped = drawn.nth(1).locator(f'rect.vma[data-start="{BASE + 0x4000:x}"]')
    assert wiped.count() == 1
    x = wiped.get_attribute("x")  # the lanes share one axis: the residency bar of a block starts at its x
    assert drawn.nth(0).locator(f'rect.res[x="{x}"]').count() == 1  # the parent's page
    assert drawn.nth(1).locator(f'rect.res[x="{x}"]').count() == 0  # wiped in the child: Rss 0


def driver_steps_of(name: str, profile: str | None) -> list[str]:
    runner = ModelRunner(load_scenario(scenario_path(name)), trace=True, kernel=profile)
    runner.run()
    return [s for events in runner.op_traces for s in driver_steps(events)]


# ---------------------------------------------------------------------------------------------------------
# the document
def tour_text() -> str:
    with open(TOUR_MD, encoding="utf-8") as f:
        return f.read()


def test_tour_doc_shows_every_picture_and_scenario() -> None:
    text = tour_text()
    for picture, name, _, _ in PICTURES:
        png = os.path.join(TOUR_DIR, picture + ".png")
        assert f"(tour/{picture}.png)" in text, picture
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n", png
        assert f"docs/tour/{name}.json" in text, name
    assert "(tour/06_fork_children.png)" in text


def tour_commands() -> list[str]:
    """The ``vmalab`` commands of the tour's ``sh`` blocks."""
    cmds = []
    for block in re.findall(r"```sh\n(.*?)```", tour_text(), flags=re.S):
        cmds += [ln.strip() for ln in block.splitlines() if ln.strip().startswith("vmalab ")]
    return cmds


def test_tour_has_commands() -> None:
    cmds = tour_commands()
    assert len(cmds) >= 10
    for sub in ("view", "maps --color", "run --step", "explain", "diff", "--kernel-profile"):
        assert any(sub in c for c in cmds), sub


def _run(command: str, tmp_path: Any) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    args = shlex.split(command)[1:]
    if "-o" in args:
        i = args.index("-o")
        args[i + 1] = str(tmp_path / os.path.basename(args[i + 1]))
    r = subprocess.run([sys.executable, "-m", "vmalab", *args], capture_output=True, text=True, timeout=300,
                       cwd=ROOT)
    return args, r


@pytest.mark.parametrize("command", [c for c in tour_commands() if " diff " not in c])
def test_tour_command_runs(tmp_path: Any, command: str) -> None:
    """Every model command the tour shows works as shown (an ``-o FILE`` goes to a temporary directory)."""
    args, r = _run(command, tmp_path)
    assert r.returncode == 0, f"{command}: {r.stderr}"
    if "-o" in args:
        with open(args[args.index("-o") + 1], encoding="utf-8") as f:
            assert "data-lane" in f.read()
    else:
        assert r.stdout.strip()


@needs_linux
@pytest.mark.live
@pytest.mark.parametrize("command", [c for c in tour_commands() if " diff " in c])
def test_tour_diff_command_agrees(tmp_path: Any, command: str, request: pytest.FixtureRequest) -> None:
    """The tour's ``vmalab diff`` commands: the live kernel and the model agree (on the recordings' release)."""
    name = os.path.basename(shlex.split(command)[-1])[:-5]
    recorded = recording(name)["env"]["kernel"]
    if not release_matches(recorded, live_release()):
        skip_live(request, recorded, f"recorded on {recorded}, the live kernel is {live_release()}")
    _, r = _run(command, tmp_path)
    assert r.returncode == 0 and "agrees" in r.stdout, f"{command}: {r.stdout}{r.stderr}"
