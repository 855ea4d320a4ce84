"""
A real headless Chromium for the browser tests (Debian's ``chromium``
package, driven by Playwright; never ``playwright install``).

Screenshots the tests take go to a temporary directory; with
``WSGI_SSE_SCREENSHOTS=1`` they replace the ones in docs/img/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support import ROOT

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """
    One headless Chromium per test module.

    Playwright's sync API keeps an asyncio loop running in the main thread
    while it is open; ending it with the module keeps that loop away from the
    other suites (Django refuses database work where a loop runs).
    """
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium")
    assert executable, "the Debian chromium package is not installed (scripts/bootstrap.sh)"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """One browser context: its tabs share storage, locks and broadcast channels."""
    ctx = browser.new_context(viewport={"width": 600, "height": 400})
    ctx.set_default_timeout(20_000)
    yield ctx
    ctx.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    """Open pages, each in its own browser context (its own cookies), closed after the test."""
    contexts: list[Any] = []

    def open_page() -> Any:
        context = browser.new_context(viewport={"width": 720, "height": 420})
        context.set_default_timeout(20_000)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def screenshot(tmp_path: Path) -> Callable[[Any, str], Path]:
    """Save a page's screenshot as <name>.png; into docs/img/ with WSGI_SSE_SCREENSHOTS=1."""
    directory = ROOT / "docs" / "img" if os.environ.get("WSGI_SSE_SCREENSHOTS") else tmp_path

    def take(page: Any, name: str) -> Path:
        path = directory / f"{name}.png"
        page.screenshot(path=str(path))
        assert path.read_bytes().startswith(b"\x89PNG")
        return path

    return take
