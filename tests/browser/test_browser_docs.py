"""The docs' complete programs in a real headless Chromium: pages show what the views broadcast."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from support import ROOT
from test_docs_run import blocks, follow, runnable_pages, started

# Keep every EventSource the page opens, to wait until they are open.
TRACK = """
window.EventSource = class extends window.EventSource {
  constructor(...args) { super(...args); (window.__streams ||= []).push(this); }
};
"""
OPEN = "(window.__streams || []).length > 0 && window.__streams.every((s) => s.readyState === 1)"


# The pages whose program has a live page (the others only serve what they name).
LIVE_PAGES = [
    page
    for page in runnable_pages()
    if any(b.title and "new EventSource(" in b.text for b in blocks(page))
]


@pytest.mark.parametrize("page", LIVE_PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_shows_the_knock(page: Path, tmp_path: Path, new_page: Any) -> None:
    """Open the addresses the page names, submit the form: the watching tab lists the knock."""
    walk = follow(page, tmp_path)
    paths = re.findall(r"<http://localhost:8005(/[^>]*)>", walk.server_section) or ["/"]
    with started(walk) as port:
        base = f"http://127.0.0.1:{port}"
        watcher = new_page()
        watcher.add_init_script(TRACK)
        watcher.goto(base + paths[0])
        # The page's streams are open: an event sent before would not be replayed.
        watcher.wait_for_function(OPEN)
        knocker = new_page()
        knocker.goto(base + paths[-1])
        form = knocker.locator("form").first
        for field in form.locator("input[name]:not([type=hidden]):not([type=submit])").all():
            field.fill("Ada")
        form.locator("button, input[type=submit]").first.click()
        expect(watcher.locator("li", has_text="Ada knocked")).to_have_count(1)
