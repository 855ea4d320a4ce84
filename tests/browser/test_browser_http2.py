"""
Chromium over TLS and HTTP/2: many streams on one connection, a reset
stream that resumes, and a server restart that moves them to a new one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect
from support import free_port, self_signed_cert, serve, tls_listen

STREAMS = 8  # more than the six HTTP/1.1 connections a browser opens per host

PAGE = b"""<!doctype html><meta charset="utf-8"><title>h2</title><p id="live">0</p>
<script>
  window.got = {}; window.opens = {}; window.live = new Set();
  for (let i = 0; i < %d; i++) {
    const source = new EventSource("/sse?channel=c" + i);
    window.got[i] = []; window.opens[i] = 0;
    source.onopen = () => {
      window.opens[i] += 1; window.live.add(i);
      document.getElementById("live").textContent = String(window.live.size);
    };
    source.onmessage = (e) => window.got[i].push([e.data, e.lastEventId]);
  }
</script>
""" % (STREAMS,)


def page_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Serve the page."""
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [PAGE]


@pytest.fixture
def tls_page(browser: Any, tmp_path: Path) -> Iterator[tuple[Any, str]]:
    """A page in a context that accepts the test's self-signed certificate, and a listen string."""
    cert, key = self_signed_cert(tmp_path)
    context = browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(20_000)
    try:
        yield context.new_page(), tls_listen(cert, key, free_port())
    finally:
        context.close()


def test_chromium_multiplexes_streams_over_http2_and_resumes_a_reset_one(
    tls_page: tuple[Any, str],
) -> None:
    """Eight EventSources share one h2 connection; a stream reset by the server replays its gap."""
    page, listen = tls_page
    with serve(page_app, listen=listen, retry=300, heartbeat=1.0) as server:
        page.goto(f"https://127.0.0.1:{server.port}/")
        protocol = "performance.getEntriesByType('navigation')[0].nextHopProtocol"
        assert page.evaluate(protocol) == "h2"
        expect(page.locator("#live")).to_have_text(str(STREAMS))
        resource = server.service.sse_resource
        connections = server.call(lambda: {id(c.request.channel._conn) for c in resource.clients})
        assert len(connections) == 1

        bc = server.service.broadcaster
        for i in range(STREAMS):
            bc.broadcast_and_wait(f"first-{i}", channel=f"c{i}")
        page.wait_for_function("Object.values(window.got).every(g => g.length === 1)")

        def reset_c0_and_publish() -> None:
            # The reader of c0 is dropped as too slow (RST_STREAM on its
            # h2 stream); the next event is published before it is back.
            (client,) = [c for c in resource.clients if c.channels == ("c0",)]
            client.drop("buffer")
            server.service.hub.publish("c0", b"data: missed\n")

        server.call(reset_c0_and_publish)
        page.wait_for_function("window.got[0].length === 2")
        got = page.evaluate("window.got")
        assert [data for data, _ in got["0"]] == ["first-0", "missed"]
        opens = page.evaluate("window.opens")
        assert opens["0"] == 2 and all(opens[str(i)] == 1 for i in range(1, STREAMS))
        for i in range(1, STREAMS):
            assert [data for data, _ in got[str(i)]] == [f"first-{i}"]
        snapshot = server.call(resource.snapshot)
        assert snapshot["dropped_slow"] == 1 and snapshot["replays"] == 1
        # Still one connection: the reset took down one stream, not the others.
        connections = server.call(lambda: {id(c.request.channel._conn) for c in resource.clients})
        assert len(connections) == 1


def test_chromium_reconnects_on_a_new_connection_after_goaway(tls_page: tuple[Any, str]) -> None:
    """
    A server stopping sends GOAWAY: Chromium reconnects every stream on a
    new connection, to the server started in its place, and resumes.
    """
    page, listen = tls_page
    with serve(page_app, listen=listen, retry=300) as old:
        page.goto(f"https://127.0.0.1:{old.port}/")
        expect(page.locator("#live")).to_have_text(str(STREAMS))
        for i in range(STREAMS):
            old.service.broadcaster.broadcast_and_wait(f"old-{i}", channel=f"c{i}")
        page.wait_for_function("Object.values(window.got).every(g => g.length === 1)")
        page.evaluate("window.live = new Set()")
    # The old server is stopped (its connection would still answer, with
    # "come back later", if the browser kept using it); a new one listens.
    with serve(page_app, listen=listen, retry=300) as new:
        new.wait_clients(STREAMS, timeout=20)
        # Each stream opened again (more than once if a retry landed on the
        # old server while it was still closing, and was told to come back).
        # The server counts a stream before the page has run its open event.
        page.wait_for_function("Object.values(window.opens).every(n => n >= 2)", timeout=10_000)
        for i in range(STREAMS):
            new.service.broadcaster.broadcast_and_wait(f"new-{i}", channel=f"c{i}")
        page.wait_for_function("Object.values(window.got).every(g => g.length === 2)")
        got = page.evaluate("window.got")
        assert all([d for d, _ in got[str(i)]] == [f"old-{i}", f"new-{i}"] for i in range(STREAMS))
        # All of them on one new connection.
        resource = new.service.sse_resource
        connections = new.call(lambda: {id(c.request.channel._conn) for c in resource.clients})
        assert len(connections) == 1
