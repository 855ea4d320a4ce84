"""
The shipped browser client (/sse.js) in Chromium, at its limits: more
channels than one connection may ask for, a server that refuses every
stream, and events too big to keep many of.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from typing import Any

import pytest
from support import serve
from test_browser_tabs import page_app

OPEN_STREAMS = """
async ([groups, share]) => {
  const { openStream } = await import("/sse.js");
  window.got = {};
  window.streams = groups.map((channels) => {
    const stream = openStream({ channels, share });
    stream.addEventListener("message", (e) => (window.got[e.channel] ||= []).push(e.data));
    return stream;
  });
}
"""


@pytest.mark.parametrize(
    ("max_channels", "count", "share"),
    [(None, 17, True), (4, 6, True), (None, 17, False)],
    ids=["17-tabs", "limit-from-the-400", "one-tab-17-channels"],
)
def test_more_channels_than_a_connection_takes_are_spread_over_connections(
    context: Any, max_channels: int | None, count: int, share: bool
) -> None:
    """
    More channels than the server's max_channels, across the tabs (or in
    one tab), go over more than one connection: every stream is live and
    gets its events, where every one was refused (400) and retried for ever.
    The limit is the client's default (16) or, lower, the one the 400 names.
    """
    options = {} if max_channels is None else {"max_channels": max_channels}
    with serve(page_app, retry=200, **options) as server:
        tab = context.new_page()
        tab.goto(server.url + "/blank")
        channels = [f"c{i}" for i in range(count)]
        groups = [[c] for c in channels] if share else [channels]
        tab.evaluate(OPEN_STREAMS, [groups, share])
        tab.wait_for_function("window.streams.every((s) => s.status === 'live')")
        server.wait_clients(2)
        for channel in channels:
            server.service.broadcaster.broadcast_and_wait(f"to {channel}", channel=channel)
        tab.wait_for_function(f"Object.keys(window.got).length === {count}")
        assert tab.evaluate("window.got") == {c: [f"to {c}"] for c in channels}
        holding = tab.evaluate("window.streams.filter((s) => s.holdsConnection).length")
        assert holding == (1 if share else 0)


def refusing_app(status: str, retry_after: str | None, seen: list[tuple[str, float]]) -> Any:
    """
    The test page's app, answering C{status} at /refused (with a
    C{Retry-After} of C{retry_after}: seconds, or "date" for 3 seconds
    later), noting each request.
    """

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] != "/refused":
            return page_app(environ, start_response)
        seen.append((environ["REQUEST_METHOD"], time.monotonic()))
        headers = [("Content-Type", "text/plain")]
        if retry_after == "date":
            headers.append(("Retry-After", formatdate(time.time() + 3, usegmt=True)))
        elif retry_after:
            headers.append(("Retry-After", retry_after))
        start_response(status, headers)
        return [b"busy\n"]

    return app


@pytest.mark.parametrize(
    ("status", "retry_after"),
    [("503 Service Unavailable", "2"), ("429 Too Many Requests", "date"), ("500 Oops", None)],
    ids=["503-seconds", "429-date", "500"],
)
def test_a_refusing_server_gets_one_request_per_attempt(
    context: Any, status: str, retry_after: str | None
) -> None:
    """
    Each refused attempt of a stream of 16 channels costs one HEAD asking
    why (not one per channel), and a Retry-After, in seconds or as an HTTP
    date, is waited for before the next attempt.
    """
    seen: list[tuple[str, float]] = []
    with serve(refusing_app(status, retry_after, seen), retry=200) as server:
        tab = context.new_page()
        tab.goto(server.url + "/blank")
        tab.evaluate(
            """async () => {
              const { openStream } = await import("/sse.js");
              const channels = [...Array(16).keys()].map((i) => "c" + i);
              window.stream = openStream({ url: "/refused", channels });
            }"""
        )
        for _ in range(400):
            if [method for method, _ in seen].count("GET") >= 3:
                break
            tab.wait_for_timeout(25)
        tab.evaluate("window.stream.close()")
        methods = [method for method, _ in seen]
        assert methods[:5] == ["GET", "HEAD", "GET", "HEAD", "GET"]
        assert tab.evaluate("window.stream.status") == "closed"
        if retry_after:
            gets = [at for method, at in seen if method == "GET"]
            assert gets[1] - gets[0] >= 1.9
            assert gets[2] - gets[1] >= 1.9


def test_the_events_kept_for_joining_tabs_are_bounded_in_size(context: Any) -> None:
    """
    A tab keeps recent events for the tabs that join, up to 500 but no more
    than 2**20 characters of data, the newest: a tab that comes back after
    missing more than that gets a reset, not megabytes of replay.
    """
    with serve(page_app) as server:
        holder, other = context.new_page(), context.new_page()
        for tab in (holder, other):
            tab.goto(server.url + "/blank")
            tab.evaluate(OPEN_STREAMS, [[["big"]], True])
            tab.wait_for_function("window.streams[0].status === 'live'")
        assert holder.evaluate("window.streams[0].holdsConnection")
        publish = server.service.broadcaster.broadcast_and_wait
        publish("small", channel="big")
        other.wait_for_function("window.got.big?.length === 1")
        other.evaluate("window.streams[0].close()")

        for n in range(6):
            publish(str(n) * 300_000, channel="big")
        holder.wait_for_function("window.got.big?.length === 7")
        kept = holder.evaluate("window.streams[0].ring.map((ev) => ev.data.length)")
        assert (
            kept == [300_000] * 3
        )  # the newest: 900,000 characters, where 1,800,005 would not fit

        other.evaluate(
            """async () => {
              const { openStream } = await import("/sse.js");
              window.back = [];
              const stream = openStream({ channels: ["big"] });
              for (const type of ["message", "reset"]) {
                stream.addEventListener(type, (e) => window.back.push(type));
              }
              window.streams.push(stream);
            }"""
        )
        other.wait_for_function("window.streams[1].status === 'live'")
        publish("after", channel="big")
        other.wait_for_function("window.back.length === 2")
        assert other.evaluate("window.back") == ["reset", "message"]
