"""Chromium's EventSource survives capacity refusals and graceful shutdowns, replaying the gap."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

import pytest
from playwright.sync_api import expect
from support import free_port, http_request, serve, wait_for_port

PAGE = b"""<!doctype html><meta charset="utf-8"><title>refusals</title>
<p id="state">connecting</p><ul id="events"></ul>
<script>
  window.opens = 0; window.errors = 0; window.closedForGood = false; window.received = [];
  window.source = new EventSource("/sse?channel=b");
  source.onopen = () => {
    window.opens += 1; document.getElementById("state").textContent = "live";
  };
  source.onerror = () => {
    window.errors += 1;
    if (source.readyState === EventSource.CLOSED) window.closedForGood = true;
    document.getElementById("state").textContent = "reconnecting";
  };
  source.onmessage = (e) => {
    window.received.push([e.data, e.lastEventId]);
    const li = document.createElement("li"); li.textContent = e.data;
    document.getElementById("events").appendChild(li);
  };
</script>
"""

release_slow = threading.Event()


def page_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Serve the page; /slow keeps a WSGI thread busy until the test releases it."""
    if environ["PATH_INFO"] == "/slow":
        release_slow.wait(20)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"done"]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [PAGE]


def wait_until(predicate: Any, what: str, timeout: float = 15.0) -> None:
    """Poll C{predicate} until it holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def refused_count(server: Any) -> int:
    """Stream requests refused with "too many connections" so far."""
    return int(server.call(server.service.sse_resource.snapshot)["refused"].get("503", 0))


@pytest.mark.parametrize(
    "cap", [{"max_connections": 2}, {"max_connections_per_address": 2}], ids=["total", "address"]
)
def test_page_waits_out_a_full_server_and_gets_what_it_missed(
    new_page: Any, cap: dict[str, int]
) -> None:
    """Refused while the server is full, the page keeps retrying, then resumes with the gap."""
    with serve(page_app, retry=300, busy_retry_after=1, **cap) as server:
        page = new_page()
        page.goto(server.url + "/")
        expect(page.locator("#state")).to_have_text("live")
        server.service.broadcaster.broadcast_and_wait("e1", channel="b")
        expect(page.locator("#events li")).to_have_text(["e1"])
        with server.stream("/sse?channel=r") as holder:
            server.wait_clients(2)

            def end_page_stream() -> None:
                for client in tuple(server.service.sse_resource.clients):
                    if client.channels == ("b",):
                        client.finish()

            # The page's stream ends; its slot is taken before it reconnects.
            server.call(end_page_stream)
            with server.stream("/sse?channel=r") as taker:
                assert taker.status == 200 and taker.read_some(0.2)
                wait_until(lambda: refused_count(server) >= 1, "the page to be refused")
                server.service.broadcaster.broadcast_and_wait("e2", channel="b")
                wait_until(lambda: refused_count(server) >= 2, "the page to retry again")
                assert page.evaluate("[source.readyState, window.closedForGood]") == [0, False]
            assert holder.status == 200
            # A slot is free again: the page comes back by itself and replays e2.
            expect(page.locator("#events li")).to_have_text(["e1", "e2"])
            expect(page.locator("#state")).to_have_text("live")
        received = page.evaluate("window.received")
        assert [data for data, _ in received] == ["e1", "e2"]
        assert received[1][1] == server.call(lambda: server.service.hub.last_id)
        # Each refusal is a short 200 stream: the page saw it open and end.
        opens = 2 + refused_count(server)
        assert page.evaluate("[window.opens, window.closedForGood]") == [opens, False]


def test_page_survives_a_graceful_restart_and_gets_what_it_missed(new_page: Any) -> None:
    """A stream ended by shutdown reconnects to the restarted server and replays the gap."""
    import crochet

    crochet.setup()
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from wsgi_sse import Hub, make_service, set_broadcaster

    port = free_port()
    hub = Hub()
    listen = f"tcp:{port}:interface=127.0.0.1"

    @crochet.run_in_reactor
    def start() -> Any:
        service = make_service(
            page_app,
            hub=hub,
            listen=listen,
            reactor=reactor,
            retry=300,
            busy_retry_after=1,
            shutdown_timeout=10,
        )
        service.startService()
        listening: Deferred[Any] = Deferred()

        def got(port: Any) -> Any:
            listening.callback(service)
            return port  # the service stops listening on it later

        service.listening._waitingForPort.addCallback(got)
        return listening

    release_slow.clear()
    first = start().wait(10)
    second = None
    stopped: list[Any] = []
    try:
        page = new_page()
        page.goto(f"http://127.0.0.1:{port}/")
        expect(page.locator("#state")).to_have_text("live")
        first.broadcaster.broadcast_and_wait("e1", channel="b")
        expect(page.locator("#events li")).to_have_text(["e1"])

        # A busy WSGI view keeps the shutdown going for seconds, long after
        # the page's stream has ended and the page has tried to reconnect.
        def hit_slow() -> None:
            with contextlib.suppress(OSError):
                http_request(port, "GET", "/slow", timeout=30)

        slow = threading.Thread(target=hit_slow, daemon=True)
        slow.start()
        wait_until(lambda: len(first.threadpool.working) == 1, "the slow view to start")

        @crochet.run_in_reactor
        def begin_shutdown() -> None:
            first.stopService().addBoth(stopped.append)

        begin_shutdown().wait(5)
        expect(page.locator("#state")).to_have_text("reconnecting")
        wait_until(lambda: page.evaluate("window.errors") >= 3, "the page to retry", 10)
        first.broadcaster.broadcast_and_wait("e2", channel="b")
        assert page.evaluate("[source.readyState, window.closedForGood]") == [0, False]
        release_slow.set()
        wait_until(lambda: bool(stopped), "the first server to stop")

        second = start().wait(10)
        wait_for_port(port)
        expect(page.locator("#events li")).to_have_text(["e1", "e2"], timeout=10_000)
        expect(page.locator("#state")).to_have_text("live")
        # A reconnect that still reached the stopping server (over a page
        # load's kept-alive connection) was told to retry, never refused.
        refused = first.sse_resource.stats.refused
        assert set(refused) <= {503}
        opens = 2 + refused[503]
        assert page.evaluate("[window.opens, window.closedForGood]") == [opens, False]
    finally:
        release_slow.set()
        for service in (first, second):
            if service is not None and service.running:
                crochet.run_in_reactor(service.stopService)().wait(15)
        set_broadcaster(None)


def test_page_waits_out_a_failing_hook_and_gets_what_it_missed(new_page: Any) -> None:
    """While the authorize hook raises (a database down), the page retries, then resumes."""
    failing = threading.Event()

    def authorize(request: Any) -> bool:
        if failing.is_set():
            raise RuntimeError("database down")
        return True

    with serve(page_app, retry=300, busy_retry_after=1, authorize=authorize) as server:
        page = new_page()
        page.goto(server.url + "/")
        expect(page.locator("#state")).to_have_text("live")
        server.service.broadcaster.broadcast_and_wait("e1", channel="b")
        expect(page.locator("#events li")).to_have_text(["e1"])
        failing.set()

        def end_page_stream() -> None:
            for client in tuple(server.service.sse_resource.clients):
                client.finish()

        server.call(end_page_stream)

        def hook_failures() -> int:
            refused = server.call(server.service.sse_resource.snapshot)["refused"]
            return int(refused.get("500", 0))

        wait_until(lambda: hook_failures() >= 1, "the page to be refused")
        server.service.broadcaster.broadcast_and_wait("e2", channel="b")
        wait_until(lambda: hook_failures() >= 2, "the page to retry again")
        assert page.evaluate("[source.readyState, window.closedForGood]") == [0, False]
        failing.clear()
        expect(page.locator("#events li")).to_have_text(["e1", "e2"])
        assert page.evaluate("window.closedForGood") is False
