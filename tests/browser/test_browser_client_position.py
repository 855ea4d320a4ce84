"""
The shipped browser client (/sse.js) in Chromium: every connection knows
where to resume from, also before its first event and after a reset.

A channel-tagged stream tells the client where it starts (a
C{wsgi-sse:position} event, never shown); so the tab that takes over from a
crashed holder, a holder reconnecting for a new union of channels, the
second connection of a stream spread over two, a tab coming back after a
reset, and a connection taken again after a refusal each resume from a
position, and the server replays what was published in between.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from playwright.sync_api import expect
from support import end_streams, serve, wait_until
from test_browser_tabs import STALE_ID, page_app, wait_for_channels


def crash(context: Any, tab: Any) -> None:
    """Crash C{tab}'s renderer (no pagehide, no goodbye), as the project's tests do."""
    session = context.new_cdp_session(tab)._impl_obj
    task = session._loop.create_task(session.send("Page.crash", None, None))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())  # never answered
    tab.wait_for_event("crash")


class GatedTokens:
    """
    The browser tests' page app, plus C{/gate}: a token view that answers
    C{"t"} (a token the server ignores: it has no C{token_secret}) at once
    while open, and holds its answer while closed, as a slow token view
    would.  Counts the tokens asked for.
    """

    def __init__(self) -> None:
        self.open = threading.Event()
        self.open.set()
        self.asked = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] != "/gate":
            return page_app(environ, start_response)
        self.asked += 1
        self.open.wait(15)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"t"]

    def close_until_asked(self) -> Any:
        """Close the gate; return a function waiting for the next token asked for."""
        self.open.clear()
        before = self.asked

        def wait() -> None:
            wait_until(lambda: self.asked > before, 10, "a token to be asked for")

        return wait


# A stream whose token function asks /gate, its messages in window.got.
OPEN_GATED = """
async ([channels, share]) => {
  const { openStream } = await import("/sse.js");
  window.got = [];
  window.stream = openStream({
    channels, share, token: async () => (await fetch("/gate")).text(),
  });
  stream.addEventListener("message", (e) => window.got.push(e.channel + ": " + e.data));
}
"""


def texts(tab: Any) -> list[str]:
    """The items of the documentation page's event list."""
    return list(tab.locator("#events li").all_text_contents())


@pytest.mark.parametrize("seen_before", [False, True], ids=["no-event-yet", "control"])
def test_takeover_after_a_crash_replays_what_was_published_meanwhile(
    context: Any, seen_before: bool
) -> None:
    """
    Without Web Locks (plain-HTTP sites), the holder crashes; an event is
    published during the 5 to 8 seconds before the other tab takes over.
    The other tab gets it from the server's replay, whether or not an
    event had come before (else its position is where the stream started).
    """
    context.add_init_script("delete Navigator.prototype.locks;")
    with serve(page_app, retry=200) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        tabs = []
        for _ in range(2):
            tab = context.new_page()
            tab.goto(server.url + "/page?channel=a")
            expect(tab.locator("#status")).to_have_text("live")
            tabs.append(tab)
        holder, other = tabs
        assert holder.evaluate("stream.holdsConnection")
        expected = []
        if seen_before:
            publish("before", channel="a")
            expected.append("a: before")
            expect(other.locator("#events li")).to_have_text(expected)
        crash(context, holder)
        publish("during", channel="a")  # while no tab holds the connection
        other.wait_for_function("stream.holdsConnection", timeout=15_000)
        server.wait_clients(1)
        expect(other.locator("#status")).to_have_text("live")
        publish("after", channel="a")
        expect(other.locator("#events li").last).to_have_text("a: after")
        assert texts(other) == [*expected, "a: during", "a: after"]


@pytest.mark.parametrize("seen_before", [False, True], ids=["no-event-yet", "control"])
def test_a_new_union_resumes_where_the_old_connection_was(context: Any, seen_before: bool) -> None:
    """
    A second tab opens with a new channel: the holder closes its connection
    and opens one for the union, after asking its token function (here a
    slow token view). An event published on the first tab's channel
    meanwhile is replayed, whether or not an event had come before.
    """
    gate = GatedTokens()
    with serve(gate, retry=200) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        first = context.new_page()
        first.goto(server.url + "/blank")
        first.evaluate(OPEN_GATED, [["a"], True])
        first.wait_for_function("stream.status === 'live'")
        expected = []
        if seen_before:
            publish("before", channel="a")
            expected.append("a: before")
            first.wait_for_function("got.length === 1")
        asked = gate.close_until_asked()
        second = context.new_page()
        second.goto(server.url + "/blank")
        second.evaluate(OPEN_GATED, [["b"], True])
        asked()  # the holder has closed its connection, and waits for a token
        server.wait_clients(0)
        publish("during", channel="a")
        gate.open.set()
        wait_for_channels(server, first, {"a": 1, "b": 1})
        publish("after", channel="a")
        first.wait_for_function("got.at(-1) === 'a: after'")
        assert first.evaluate("got") == [*expected, "a: during", "a: after"]


def test_a_connection_with_no_event_yet_resumes_from_the_streams_last_id(context: Any) -> None:
    """
    A stream of 17 channels is spread over two connections; the stream has
    an event id (from the first connection), the second connection none of
    its own, only where it started. A channel added to the second one
    reopens it; an event published on its channel meanwhile is replayed.
    """
    gate = GatedTokens()
    with serve(gate, retry=200) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        tab = context.new_page()
        tab.goto(server.url + "/blank")
        channels = [f"c{i}" for i in range(17)]
        tab.evaluate(OPEN_GATED, [channels, False])
        tab.wait_for_function("stream.status === 'live'")
        server.wait_clients(2)
        publish("first", channel="c0")
        tab.wait_for_function("got.length === 1")
        assert tab.evaluate("stream.lastEventId")  # known, from the first connection
        # The second connection's own position: where it started.
        start = tab.evaluate("stream.connections[1].lastId")
        assert start and " " not in start
        asked = gate.close_until_asked()
        tab.evaluate("(channels) => stream.setChannels(channels)", [*channels, "c17"])
        asked()
        server.wait_clients(1)  # the first connection stays, the second is closed
        publish("during", channel="c16")
        gate.open.set()
        wait_for_channels(server, tab, dict.fromkeys([*channels, "c17"], 1))
        publish("after", channel="c16")
        tab.wait_for_function("got.at(-1) === 'c16: after'")
        assert tab.evaluate("got") == ["c0: first", "c16: during", "c16: after"]


def test_a_tab_that_comes_back_after_a_reset_gets_what_it_missed(context: Any) -> None:
    """Reset (its id unknown to the server), away, an event, back: it gets the event."""
    with serve(page_app, retry=200) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        context.add_init_script(STALE_ID)
        tab = context.new_page()
        tab.goto(server.url + "/page?channel=a&stale=1")
        expect(tab.locator("#events li")).to_have_text(["reset"])
        tab.goto("about:blank")
        server.wait_clients(0)
        publish("missed", channel="a")
        tab.goto(server.url + "/page?channel=a")  # back
        expect(tab.locator("#status")).to_have_text("live")
        publish("after", channel="a")
        expect(tab.locator("#events li").last).to_have_text("a: after")
        assert texts(tab) == ["a: missed", "a: after"]
        assert server.call(server.service.sse_resource.snapshot)["resets"] == 1


def test_a_stream_refused_after_a_reset_gets_what_it_missed_once_taken_again(
    context: Any,
) -> None:
    """
    Reset, then the stream is refused for a while (403: the tab is told),
    an event is published, the server takes the stream again: the tab gets
    the event.
    """
    refusing = [False]
    with serve(page_app, retry=200, authorize=lambda request: not refusing[0]) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        context.add_init_script(STALE_ID)
        tab = context.new_page()
        tab.goto(server.url + "/page?channel=a&stale=1")
        expect(tab.locator("#events li")).to_have_text(["reset"])
        refusing[0] = True
        end_streams(server)
        expect(tab.locator("#events li")).to_have_text(["reset", "refused: a"])
        publish("missed", channel="a")
        refusing[0] = False
        server.wait_clients(1)  # the client's retry, 0.5 to 1.5 s later
        expect(tab.locator("#status")).to_have_text("live")
        publish("after", channel="a")
        expect(tab.locator("#events li").last).to_have_text("a: after")
        assert texts(tab) == ["reset", "refused: a", "a: missed", "a: after"]
