"""The headless browser of the view tests (and of the tour's screenshots, tests/view/test_tour.py).

Playwright (the ``playwright`` package of the ``test`` extra) drives Debian's ``chromium``
(``/usr/bin/chromium``; ``VMALAB_CHROMIUM`` names another binary).  On Linux a missing package or browser
is a failure that names ``tools/setup-test-deps``, never a skip: CI installs both.  Off Linux the browser
tests are skipped.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from typing import Any

import pytest

#: the arguments the browser starts with: no sandbox (CI runs as root), no GPU, no network of its own
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SETUP_HINT = "run tools/setup-test-deps (pip install -e '.[test]'; as root it installs Debian's chromium)"


def chromium_path() -> str | None:
    """The Chromium binary the tests launch: ``$VMALAB_CHROMIUM``, else /usr/bin/chromium, else on PATH."""
    env = os.environ.get("VMALAB_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """One headless Chromium for the session (a Playwright ``Browser``)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the browser tests run on Linux")
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(f"the Python package playwright is not installed: {SETUP_HINT}", pytrace=False)
    path = chromium_path()
    if path is None:
        pytest.fail(f"no chromium browser (looked for $VMALAB_CHROMIUM, /usr/bin/chromium, chromium on PATH): "
                    f"{SETUP_HINT}", pytrace=False)
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        except PlaywrightError as e:
            pytest.fail(f"chromium at {path} does not start: {str(e).splitlines()[0]}; {SETUP_HINT}", pytrace=False)
        try:
            yield b
        finally:
            b.close()


class PageErrors(list[str]):
    """The console errors and uncaught exceptions of one page."""


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (1400x900) whose console errors and page errors are collected in ``page.errors``."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    errors = PageErrors()
    pg.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    pg.errors = errors
    try:
        yield pg
    finally:
        context.close()


def open_html(page: Any, text: str, path: str | os.PathLike[str]) -> None:
    """Write ``text`` to ``path`` and open it as a file:// page (as a user opens the saved view)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    page.goto("file://" + os.path.abspath(path))
    page.wait_for_load_state("load")
