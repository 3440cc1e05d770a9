"""Measure ``vmalab view`` on large address spaces: build time, HTML size and render time in Chromium.

Usage: python benchmarks/bench_view.py [N ...] [--pages] [--json]

For each N (default 1,000 and 10,000) a scenario maps N one-page anonymous VMAs with a one-page hole
between each two (so none merge), writes to the first, and the view is built with one lane per op (the
initial state, the N-VMA lane after the repeat, drawn in groups since it is not the last, and the last
lane with every VMA drawn).  Columns:

* ``build s``: running the scenario on the model and collecting the lanes (lanes_from_scenario);
* ``render_html s``: writing the page (render_html);
* ``HTML MB``: the page's size (the bound is 5 MB);
* ``Chromium ms``: from navigation start to the second animation frame after the file:// page loaded
  (``performance.now()`` then: parse, style, layout and first paint of the whole page), median of
  ``--repeats`` loads in a fresh page (the bound is 2 s);
* ``hover ms``: moving the mouse onto the last VMA block until the tooltip shows its maps line.

Chromium is Debian's (``/usr/bin/chromium`` or ``$VMALAB_CHROMIUM``), driven by Playwright
(``tools/setup-test-deps`` installs both).  Absolute times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from typing import Any

from vmalab.view import lanes_from_scenario, render_html

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
_FRAME = "new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(performance.now()))))"


def scenario(n: int) -> dict[str, Any]:
    """N one-page VMAs, every other page of the window, and a write to the first one."""
    body = {"op": "mmap", "addr": "base+0", "len": "4K", "prot": "PROT_READ|PROT_WRITE",
            "flags": "MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED", "fd": "none", "offset": 0}
    return {"name": f"bench_view_{n}", "ops": [{"op": "repeat", "count": n, "step": "8K", "body": body},
                                               {"op": "touch", "addr": "base+0", "write": True}]}


def chromium() -> str:
    path = os.environ.get("VMALAB_CHROMIUM") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        raise SystemExit(f"bench_view: no chromium at {path}: run tools/setup-test-deps")
    return path


def measure(n: int, browser: Any, pages: bool = False, repeats: int = 3) -> dict[str, Any]:
    """One row: build, render_html, size, Chromium render and hover times for N VMAs."""
    t0 = time.perf_counter()
    lanes = lanes_from_scenario(scenario(n), pages=pages)
    t1 = time.perf_counter()
    text = render_html(lanes, title=f"bench_view {n}")
    t2 = time.perf_counter()
    nvmas = len(lanes[-1].vmas)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "view.html")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        times = []
        hover_ms = 0.0
        blocks = 0
        errors: list[str] = []
        for i in range(repeats):
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto("file://" + path)
            times.append(float(page.evaluate(_FRAME)))
            if i == repeats - 1:
                last = page.locator("section.lane").last.locator("rect.vma")
                blocks = last.count()
                block = last.nth(blocks - 1)
                block.scroll_into_view_if_needed()
                h0 = time.perf_counter()
                block.hover()
                page.wait_for_function("document.getElementById('tip').textContent.length > 0 && "
                                       "!document.getElementById('tip').hidden")
                hover_ms = (time.perf_counter() - h0) * 1000
            context.close()
    return {"vmas": nvmas, "lanes": len(lanes), "blocks_last_lane": blocks, "build_s": round(t1 - t0, 3),
            "render_html_s": round(t2 - t1, 3), "html_bytes": len(text.encode()),
            "chromium_ms": round(statistics.median(times), 1), "hover_ms": round(hover_ms, 1),
            "console_errors": errors}


def render_text(rows: list[dict[str, Any]]) -> str:
    head = (f"vmalab bench_view: {platform.node()} {platform.release()} python {platform.python_version()}\n"
            f"{'VMAs':>7} {'lanes':>5} {'build s':>8} {'render_html s':>13} {'HTML MB':>8} {'Chromium ms':>11} "
            f"{'hover ms':>8}  errors")
    lines = [head]
    for r in rows:
        lines.append(f"{r['vmas']:>7} {r['lanes']:>5} {r['build_s']:>8.3f} {r['render_html_s']:>13.3f} "
                     f"{r['html_bytes'] / 1e6:>8.2f} {r['chromium_ms']:>11.1f} {r['hover_ms']:>8.1f}  "
                     f"{len(r['console_errors'])}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sizes", nargs="*", type=int, default=[1000, 10000])
    ap.add_argument("--pages", action="store_true", help="draw the page strips too")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            rows = [measure(n, browser, args.pages, args.repeats) for n in args.sizes]
        finally:
            browser.close()
    if args.json:
        print(json.dumps(rows, indent=1))
    else:
        sys.stdout.write(render_text(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
