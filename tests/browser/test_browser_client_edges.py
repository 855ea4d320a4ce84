"""
The shipped browser client (/sse.js) in Chromium, at its edges: server
events whose names are also the EventSource's own, and channels refused
for a while.
"""

from __future__ import annotations

from typing import Any

from playwright.sync_api import expect
from support import end_streams, serve
from test_browser_tabs import open_tabs, page_app, wait_for_channels

LISTEN = """
() => {
  window.got = [];
  window.statuses = [];
  stream.addEventListener("statuschange", (e) => window.statuses.push(e.data));
  for (const type of ["error", "open"]) {
    stream.addEventListener(type, (e) => window.got.push(`${type} ${e.channel}: ${e.data}`));
  }
}
"""


def test_events_named_error_or_open_are_events_not_connection_changes(context: Any) -> None:
    """
    Events published as "error" or "open" reach their listeners and leave
    the status alone; the connection's own errors and opens reach no
    listener (and throw nothing).
    """
    with serve(page_app, retry=200) as server:
        tab = context.new_page()
        page_errors: list[str] = []
        tab.on("pageerror", lambda error: page_errors.append(str(error)))
        tab.goto(server.url + "/page?channel=a")
        expect(tab.locator("#status")).to_have_text("live")
        tab.evaluate(LISTEN)
        publish = server.service.broadcaster.broadcast_and_wait
        publish("failed", channel="a", event="error")
        publish("opened", channel="a", event="open")
        tab.wait_for_function("window.got.length === 2")
        assert tab.evaluate("window.got") == ["error a: failed", "open a: opened"]
        assert tab.evaluate("window.statuses") == []
        assert tab.evaluate("stream.status") == "live"

        end_streams(server)  # the browser reconnects by itself
        tab.wait_for_function("window.statuses.join() === 'reconnecting,live'")
        publish("again", channel="a", event="error")
        tab.wait_for_function("window.got.length === 3")
        assert tab.evaluate("window.got")[2] == "error a: again"
        assert page_errors == []

        assert tab.evaluate("stream.holdsConnection") is True
        tab.evaluate("stream.close()")
        assert tab.evaluate("[stream.status, stream.holdsConnection]") == ["closed", False]
        server.wait_clients(0)


def test_channels_refused_for_a_while_are_kept_once_accepted_again(context: Any) -> None:
    """
    While the server refuses every channel (an authorization outage), the
    tabs are told and the client keeps retrying them all; once the stream
    is taken again, a tab opening with a new channel adds it to the others
    rather than replacing them.
    """
    refusing = [False]
    with serve(page_app, authorize=lambda request: not refusing[0], retry=200) as server:
        tabs = open_tabs(context, server, ("a", "b"))

        refusing[0] = True
        end_streams(server)
        for channel, tab in tabs.items():
            expect(tab.locator("#events li")).to_have_text([f"refused: {channel}"])
        refusing[0] = False
        wait_for_channels(server, tabs["a"], {"a": 1, "b": 1})

        tabs["c"] = context.new_page()
        tabs["c"].goto(f"{server.url}/page?channel=c")
        wait_for_channels(server, tabs["a"], {"a": 1, "b": 1, "c": 1})
        for channel, tab in tabs.items():
            server.service.broadcaster.broadcast_and_wait("news", channel=channel)
            expect(tab.locator("#events li").last).to_have_text(f"{channel}: news")
        assert server.client_count() == 1


def test_a_stream_stopped_for_good_closes_every_tab(context: Any) -> None:
    """
    A server that stops the stream for good (204 No Content, as after
    close(reconnect=False)) closes the stream of every tab, as it stops an
    EventSource, rather than leaving them reconnecting for ever.
    """
    with serve(page_app, retry=200) as server:
        tabs = []
        for _ in range(2):
            tab = context.new_page()
            tab.goto(server.url + "/page?channel=a")
            expect(tab.locator("#status")).to_have_text("live")
            tabs.append(tab)
        server.call(server.service.sse_resource.close, reconnect=False)
        for tab in tabs:
            expect(tab.locator("#status")).to_have_text("closed")
            assert tab.evaluate("[stream.status, stream.holdsConnection]") == ["closed", False]
        assert server.client_count() == 0


def test_closed_streams_leave_no_lock_request_behind(context: Any) -> None:
    """
    A stream closed while another tab holds the connection withdraws its
    request for the connection's lock: a page that opens and closes streams
    leaves none of them queued (and kept alive) behind.
    """
    with serve(page_app) as server:
        holder = context.new_page()
        holder.goto(server.url + "/page?channel=a")
        expect(holder.locator("#status")).to_have_text("live")
        tab = context.new_page()
        tab.goto(server.url + "/page?channel=a")
        expect(tab.locator("#status")).to_have_text("live")
        pending = tab.evaluate(
            """async () => {
              const { openStream } = await import("/sse.js");
              for (let i = 0; i < 5; i++) openStream({ channels: ["b"] }).close();
              const { pending } = await navigator.locks.query();
              return pending.filter((lock) => lock.name === stream.key).length;
            }"""
        )
        assert pending == 1  # the page's own stream, waiting for its turn
