"""The example page of docs/channels.md, served by the Bottle example, in a real Chromium."""

from __future__ import annotations

import importlib.util
import re
import shutil
from typing import Any

from support import ROOT, http_request, serve

EXAMPLE = ROOT / "examples" / "bottle_app"


def load_bottle_app() -> Any:
    """Import examples/bottle_app/app.py under a private name."""
    spec = importlib.util.spec_from_file_location("bottle_example_app", EXAMPLE / "app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def test_example_page_matches_the_guide() -> None:
    """The page the Bottle example serves at /live/ is the one printed in docs/channels.md."""
    doc = (ROOT / "docs" / "channels.md").read_text()
    blocks = re.findall(r"```html\n(.*?)```", doc, re.S)
    page = (EXAMPLE / "live.html").read_text()
    assert blocks == [page]
    with serve(load_bottle_app()) as server:
        status, headers, body = http_request(server.port, "GET", "/live/")
        assert status == 200 and headers["content-type"].startswith("text/html")
        assert body.decode() == page


def test_example_page_replays_after_reconnect_and_reload() -> None:
    """In Chromium the page gets every event once across a dropped connection and a reload."""
    from playwright import sync_api

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the chromium Debian package is needed (scripts/bootstrap.sh installs it)"
    with serve(load_bottle_app(), retry=300, retry_jitter=0) as server:
        bc = server.service.broadcaster

        def drop_all() -> None:
            for client in list(server.service.sse_resource.clients):
                client.request.channel.transport.abortConnection()

        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            try:
                page = browser.new_page()
                items = page.locator("#events li")
                page.goto(f"{server.url}/live/")
                page.wait_for_function("document.getElementById('status').textContent == 'live'")
                server.wait_clients(1)
                bc.broadcast_and_wait("one")
                page.wait_for_function("document.querySelectorAll('#events li').length == 1")

                # The connection drops; events published meanwhile are replayed.
                server.call(drop_all)
                server.wait_clients(0)
                bc.broadcast_and_wait("two")
                bc.broadcast_and_wait("three")
                page.wait_for_function("document.querySelectorAll('#events li').length == 3")
                server.wait_clients(1)
                bc.broadcast_and_wait("four")
                page.wait_for_function("document.querySelectorAll('#events li').length == 4")
                assert items.all_inner_texts() == ["one", "two", "three", "four"]

                # The tab leaves and comes back: it resumes from what it saw last.
                page.goto("about:blank")
                server.wait_clients(0)
                bc.broadcast_and_wait("five")
                page.goto(f"{server.url}/live/")
                page.wait_for_function("document.querySelectorAll('#events li').length == 1")
                assert items.all_inner_texts() == ["five"]

                # An id the server cannot replay from: the page is told to reset.
                page.evaluate("sessionStorage.setItem('wsgi-sse:lastEventId', 'old-run-9')")
                page.reload()
                page.wait_for_function("document.querySelectorAll('#events li').length == 1")
                assert items.all_inner_texts() == ["missed events: state reloaded (reset)"]
                assert page.evaluate("sessionStorage.getItem('wsgi-sse:lastEventId')") is None
            finally:
                browser.close()
