"""
htmx as users use it, in Chromium: the htmx example with htmx 2 (htmx-ext-sse)
and htmx 4 (hx-sse), and how Chromium's EventSource and htmx 4 read the
stream's opening ``retry:`` and its heartbeats.

htmx comes from the pinned npm install in tests/js (its lockfile); nothing is
fetched at run time.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Any
from urllib.parse import urlencode

import pytest
from example_server import run_example
from playwright.sync_api import expect
from support import ROOT, end_streams, end_streams_until_reconnected, http_request, serve

from wsgi_sse import broadcast

NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture(autouse=True)
def _htmx_installed() -> None:
    """The htmx packages of tests/js/package-lock.json are installed."""
    for package in ("htmx.org", "htmx2", "htmx-ext-sse"):
        assert (NODE_MODULES / package / "package.json").exists(), (
            "run `npm ci` in tests/js (scripts/bootstrap.sh does)"
        )


def say(port: int, author: str, text: str) -> None:
    """Post a chat message straight to the server, as another user's browser would."""
    body = urlencode({"author": author, "text": text}).encode()
    assert http_request(port, "POST", "/messages", body=body, headers=FORM)[0] == 204


COUNT_MESSAGES = """
  window.messages = 0;
  document.addEventListener(EVENT, () => { window.messages += 1; });
"""


def test_htmx_example_swaps_broadcast_fragments(new_page: Any, screenshot: Any) -> None:
    """Fragments a view broadcasts are swapped into htmx 2 and htmx 4 pages, list first."""
    with run_example("htmx_app", HTMX_NODE_MODULES=str(NODE_MODULES)) as server:
        say(server.port, "Ada", "said before the pages opened")
        two = new_page()
        two.add_init_script(COUNT_MESSAGES.replace("EVENT", "'htmx:sseMessage'"))
        two.goto(server.url + "/")
        four = new_page()
        four.add_init_script(COUNT_MESSAGES.replace("EVENT", "'htmx:sse:before:message'"))
        four.goto(server.url + "/htmx4")
        for page in (two, four):
            expect(page.locator("#status")).to_have_text("live")
            # The init event: the list as it was when the page connected.
            expect(page.locator("#messages li")).to_have_text(["Ada: said before the pages opened"])

        two.fill("input[name=author]", "Grace")
        two.fill("input[name=text]", "hello from htmx 2")
        two.click("button")
        four.fill("input[name=author]", "Linus")
        four.fill("input[name=text]", "<b>not bold</b> from htmx 4")
        four.click("button")
        expected = [
            "Ada: said before the pages opened",
            "Grace: hello from htmx 2",
            "Linus: <b>not bold</b> from htmx 4",
        ]
        for page in (two, four):
            expect(page.locator("#messages li")).to_have_text(expected)
            assert page.locator("#messages b").count() == 3  # only the author names
            # One message event per broadcast (and the init): nothing empty in between.
            assert page.evaluate("window.messages") == 3
        expect(two.locator("input[name=text]")).to_have_value("")
        # htmx 4 takes the stream's retry (3 s plus up to 50 % jitter), not its own 0.5 s.
        delay = four.evaluate("document.getElementById('messages')._htmx.sse.config.reconnectDelay")
        assert 3000 <= delay <= 4500, delay
        screenshot(two, "htmx-chat")


def _load_example_app() -> Any:
    """The htmx example's app module, imported under a name of its own."""
    import importlib.util

    path = ROOT / "examples" / "htmx_app" / "app.py"
    spec = importlib.util.spec_from_file_location("htmx_example_app", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", ["/", "/htmx4"], ids=["htmx2", "htmx4"])
def test_refused_reconnect_misses_nothing(new_page: Any, path: str) -> None:
    """Refused once, htmx 2 starts over (init fills the gap), htmx 4 resumes: nothing is missed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from twisted.web.static import File

    example = _load_example_app()
    asked: list[str | None] = []
    refuse = threading.Event()
    said = threading.Event()

    def authorize(stream: Any) -> bool:
        asked.append(stream.last_event_id)
        if len(asked) == 3:
            # htmx 2 is back: let it in once the message it must not miss was said.
            said.wait(10)
        if refuse.is_set():
            refuse.clear()
            return False  # 403: the browser's EventSource gives up for good
        return True

    with serve(
        example.app,
        initial=example.initial,
        authorize=authorize,
        retry=100,
        retry_jitter=0,
        resources={"/vendor": File(str(NODE_MODULES))},
    ) as server:
        page = new_page()
        page.goto(server.url + path)
        expect(page.locator("#status")).to_have_text("live")
        say(server.port, "Ada", "one")
        expect(page.locator("#messages li")).to_have_text(["Ada: one"])

        refuse.set()
        end_streams(server)
        # The browser reconnects with Last-Event-ID, is refused, and closes.
        deadline = time.monotonic() + 10
        while refuse.is_set():
            assert time.monotonic() < deadline, "the browser did not reconnect"
            time.sleep(0.02)
        say(server.port, "Grace", "said while the page was away")
        said.set()
        expect(page.locator("#messages li")).to_have_text(
            ["Ada: one", "Grace: said while the page was away"]
        )
        say(server.port, "Linus", "three")
        expect(page.locator("#messages li")).to_have_text(
            ["Ada: one", "Grace: said while the page was away", "Linus: three"]
        )
    # The first connect, a reconnect from the last id (refused), and the one that got in:
    # htmx 2's new EventSource knows no id; htmx 4 resumes from its own.
    assert len(asked) == 3, asked
    assert asked[0] is None and asked[1]
    assert asked[2] == (None if path == "/" else asked[1])


# -- the wire, as Chromium and htmx 4 read it ------------------------------------

WIRE_PAGE = """<!doctype html><meta charset="utf-8"><title>wire</title>
<script src="/vendor/htmx.org/dist/htmx.min.js"></script>
<script src="/vendor/htmx.org/dist/ext/hx-sse.js"></script>
<body>
<ul id="htmx4" hx-sse:connect="/sse?channel=htmx4" hx-swap="beforeend"></ul>
<script>
  window.before = 0;
  document.addEventListener("htmx:sse:before:message", () => { window.before += 1; });
</script>
"""

PLAIN_PAGE = """<!doctype html><meta charset="utf-8"><title>plain</title>
<script>
  window.opens = 0;
  window.plain = [];
  const source = new EventSource("/sse?channel=plain");
  source.onopen = () => { window.opens += 1; };
  source.onmessage = (e) => { window.plain.push(e.data); };
</script>
"""


def wire_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Serve the page that reads the stream with htmx 4 and with a plain EventSource."""
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [(PLAIN_PAGE if environ["PATH_INFO"] == "/plain" else WIRE_PAGE).encode()]


def test_htmx4_and_chromium_read_retry_and_heartbeats_as_meant(new_page: Any) -> None:
    """htmx 4 takes the opening retry and swaps no heartbeat; Chromium applies retry at once."""
    with warnings.catch_warnings():
        # twisted.web.static builds a deprecated resource at import time.
        warnings.simplefilter("ignore", DeprecationWarning)
        from twisted.web.static import File

    with serve(
        wire_app,
        heartbeat=0.05,
        retry=100,
        retry_jitter=0,
        resources={"/vendor": File(str(NODE_MODULES))},
    ) as server:
        page = new_page()
        page.goto(server.url + "/")
        server.wait_clients(1)
        stats = server.service.sse_resource.stats
        for n in range(3):
            # Heartbeats go out between events, after the page has seen an id.
            sent = server.call(lambda: stats.bytes_written)
            deadline = time.monotonic() + 10
            while server.call(lambda: stats.bytes_written) < sent + 6:
                assert time.monotonic() < deadline, "no heartbeat went out"
                time.sleep(0.02)
            broadcast(f"<li>item {n}</li>", channel="htmx4")
        expect(page.locator("#htmx4 li")).to_have_text(["item 0", "item 1", "item 2"])
        assert page.evaluate("window.before") == 3
        delay = page.evaluate("document.getElementById('htmx4')._htmx.sse.config.reconnectDelay")
        assert delay == 100

        # Chromium's EventSource applies retry: 100 as soon as it reads it,
        # before any event: five reconnects take 0.5 s (its own 3 s default
        # would need 15 s).
        page.close()
        server.wait_clients(0)
        page = new_page()
        page.goto(server.url + "/plain")
        server.wait_clients(1)
        assert end_streams_until_reconnected(server, 5, timeout=12) >= 5
        assert page.evaluate("window.opens") >= 5
        assert page.evaluate("window.plain") == []
