"""
The lean opening path: a simple stream GET read in one pass gets, byte for
byte, the answer twisted.web's line-by-line path gives the same request
(modulo the Date header), with every refusal and limit; anything else
takes twisted.web's path.  Real server, raw sockets.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from support import (
    RunningServer,
    both_ways,
    head_end,
    record_one_pass,
    serve,
    set_lean,
    wait_until,
)
from twisted.internet.task import Clock
from twisted.logger import Logger

from wsgi_sse._lean import parse_simple_get
from wsgi_sse._site import _Deadlines


def hello_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every path with a short page."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def lean_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Record, for every read that could open a stream, whether the lean path served it."""
    return record_one_pass(monkeypatch, "_serve_simple_get")


def opened(data: bytes) -> bool:
    """Whether C{data} holds a whole response head and the stream's first chunk (or a body)."""
    end = head_end(data)
    return end >= 0 and b"\r\n" in data[end:] and data.endswith(b"\r\n")


def both(
    server: RunningServer, calls: list[bool], request: bytes, done: Any = opened
) -> tuple[bytes, bytes]:
    """L{support.both_ways}, reading until C{opened} by default."""
    return both_ways(server, calls, request, done)


STREAM_GET = (
    b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
    b"Cache-Control: no-cache\r\n\r\n"
)


@pytest.mark.parametrize(
    "request_head",
    [
        STREAM_GET,
        b"GET /sse?channel=a&channel=b HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nhost:   127.0.0.1 \t\r\nConnection: keep-alive\r\n"
        b"Cookie: a=1; b=2\r\nUser-Agent: lean/1\r\nReferer: http://127.0.0.1/\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://app.example\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://127.0.0.1\r\n\r\n",
    ],
    ids=["loadgen", "channels", "connection-close", "spaces-cookies", "cors", "same-origin"],
)
def test_lean_answer_is_twisted_answer(lean_calls: list[bool], request_head: bytes) -> None:
    """A stream opened on the lean path gets the same head and opening bytes as on twisted.web's."""
    with serve(hello_app, retry_jitter=0, cors_origins=("http://app.example",)) as server:
        fast, slow = both(server, lean_calls, request_head)
        assert fast.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Transfer-Encoding: chunked\r\n" in fast
        assert fast == slow


def test_replay_is_the_same_on_both_paths(lean_calls: list[bool]) -> None:
    """Last-Event-ID replays the missed events, on the lean path as on twisted.web's."""
    with serve(hello_app, retry_jitter=0) as server:
        hub = server.service.hub

        def publish() -> str:
            hub.publish("default", b"data: 0\n")
            first = hub.last_id
            hub.publish("default", b"data: 1\n")
            hub.publish("default", b"data: 2\n")
            return str(first)

        first = server.call(publish)
        request = b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: %s\r\n\r\n" % (
            first.encode(),
        )
        fast, slow = both(server, lean_calls, request, lambda d: b"data: 2\n" in d)
        assert b"data: 1\n" in fast and b"data: 0\n" not in fast
        assert fast == slow


def until_eof(data: bytes) -> bool:
    """Read until the server closes the connection."""
    return False


def test_foreign_origin_and_bad_channel_are_refused_alike(lean_calls: list[bool]) -> None:
    """A foreign Origin (403) and an invalid channel (400) are refused the same on both paths."""
    with serve(hello_app, retry_jitter=0) as server:
        forbidden = b"GET /sse HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n\r\n"
        fast, slow = both_ways(
            server, lean_calls, forbidden, lambda d: d.endswith(b"origin not allowed\n")
        )
        assert fast.startswith(b"HTTP/1.1 403 Forbidden\r\n") and fast == slow
        bad = b"GET /sse?channel= HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        fast, slow = both(server, lean_calls, bad, lambda d: d.endswith(b"empty\n"))
        assert fast.startswith(b"HTTP/1.1 400 Bad Request\r\n") and fast == slow
        assert server.client_count() == 0


@pytest.mark.parametrize(
    ("limit", "reason"),
    [
        ({"max_connections": 1}, b"too many connections"),
        ({"max_connections_per_address": 1}, b"too many connections from your address"),
    ],
    ids=["total", "address"],
)
def test_connection_limits_apply_on_the_lean_path(
    lean_calls: list[bool], limit: dict[str, int], reason: bytes
) -> None:
    """Past max_connections (or the per-address cap) both paths answer "come back later" alike."""
    with serve(hello_app, retry_jitter=0, **limit) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as held:
            held.sendall(STREAM_GET)
            server.wait_clients(1)
            fast, slow = both(server, lean_calls, STREAM_GET, until_eof)
            assert fast.startswith(b"HTTP/1.1 200 OK\r\n")
            assert b"Retry-After: " in fast and b"Connection: close\r\n" in fast
            assert fast.endswith(b": %s\nretry: 5000\n" % reason)
            assert fast == slow
            assert server.client_count() == 1
        stats = server.call(server.service.sse_resource.snapshot)
        assert stats["refused"] == {"503": 2}


def test_shutdown_refuses_on_the_lean_path(lean_calls: list[bool]) -> None:
    """Once the streams are closing, both paths tell a new stream to come back later."""
    with serve(hello_app, retry_jitter=0) as server:
        server.call(server.service.sse_resource.close)
        fast, slow = both(server, lean_calls, STREAM_GET, until_eof)
        assert b"server is shutting down" in fast and b"Retry-After: " in fast
        assert fast == slow


def test_access_log_line_is_the_same(lean_calls: list[bool]) -> None:
    """A stream opened on the lean path is logged on finish as twisted.web's would be."""
    with serve(hello_app, retry_jitter=0) as server:
        site = server.service.site
        lines: list[str] = []
        formatter = site._logFormatter

        def capture(timestamp: str, request: Any) -> str:
            line: str = formatter("[when]", request)
            lines.append(line)
            return line

        server.call(setattr, site, "_logFormatter", capture)
        request = (
            b"GET /sse?channel=a HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: lean/1\r\n"
            b"Referer: http://127.0.0.1/page\r\n\r\n"
        )
        for lean in (True, False):
            set_lean(server, lean)
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(request)
                server.wait_clients(1)
                server.call(server.service.sse_resource.streams.close)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
                assert data.endswith(b"0\r\n\r\n")
            server.call(setattr, server.service.sse_resource.streams, "closing", False)
        fast, slow = lines
        assert '"GET /sse?channel=a HTTP/1.1" 200 ' in fast
        assert '"http://127.0.0.1/page" "lean/1"' in fast
        assert fast == slow


SIMPLE = b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "head",
    [
        b"POST /sse HTTP/1.1\r\nHost: x\r\n\r\n",
        b"HEAD /sse HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS /sse HTTP/1.1\r\nHost: x\r\n\r\n",
        b"get /sse HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /sse HTTP/1.0\r\nHost: x\r\n\r\n",
        b"GET /sse HTTP/2.0\r\nHost: x\r\n\r\n",
        b"GET /ssefoo HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /sse/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /%73se HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://x/sse HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /sse?a=1#top HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /sse?a=\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /sse  HTTP/1.1\r\nHost: x\r\n\r\n",
        SIMPLE + b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n",
        SIMPLE[:-2],
        b"GET /sse HTTP/1.1\r\nHost: x\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: x\rx\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: x\x00\r\n\r\n",
        b"GET /sse HTTP/1.1\r\n\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost : x\r\n\r\n",
        b"GET /sse HTTP/1.1\r\n: x\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
        b"GET /sse HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
        b"GET /sse HTTP/1.1\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(11)) + b"\r\n",
        b"GET /sse HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 8192 + b"\r\n\r\n",
    ],
)
def test_anything_but_a_simple_get_takes_twisted_path(head: bytes) -> None:
    """Every request twisted.web could read or answer differently is left to it."""
    assert parse_simple_get(head, b"/sse", 10) is None


def test_simple_get_is_read_as_twisted_stores_it() -> None:
    """Names are canonical, values stripped of spaces and tabs, the query and persistence kept."""
    get = parse_simple_get(
        b"GET /sse?channel=a&x=%20 HTTP/1.1\r\nhost: \t h \t\r\nlast-event-id:  7\r\n"
        b"CONNECTION: Keep-Alive, Close\r\nX-Empty:\r\n\r\n",
        b"/sse",
        10,
    )
    assert get is not None
    assert (get.target, get.query) == (b"/sse?channel=a&x=%20", b"channel=a&x=%20")
    assert get.headers == {
        b"Host": [b"h"],
        b"Last-Event-Id": [b"7"],
        b"Connection": [b"Keep-Alive, Close"],
        b"X-Empty": [b""],
    }
    # As twisted.web reads Connection: tokens split on spaces ("Close" is one).
    assert get.persistent is False
    assert parse_simple_get(SIMPLE, b"/sse", 10) is not None
    assert parse_simple_get(SIMPLE, b"/sse", 0) is None


def test_a_head_in_two_reads_is_served_by_twisted(lean_calls: list[bool]) -> None:
    """A request head split over two reads opens its stream through twisted.web's parser."""
    with serve(hello_app) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(STREAM_GET[:10])
            # The server has read the first part (and left it to the line parser).
            wait_until(lambda: lean_calls == [False], 10, "the first read")
            sock.sendall(STREAM_GET[10:])
            server.wait_clients(1)
            data = b""
            while not opened(data):
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"retry: " in data
        server.call(lambda: None)
        assert lean_calls == [False]


class _Channel:
    """A connection waiting for its headers, as _Deadlines sees it."""

    log = Logger()

    def __init__(self, name: str, log: list[str], fail: bool = False) -> None:
        self.name, self.timed_out, self.fail = name, log, fail

    def _headersTooSlow(self) -> None:
        self.timed_out.append(self.name)
        if self.fail:
            raise RuntimeError("boom")


def test_deadlines_fire_in_order_at_their_own_times() -> None:
    """Each connection times out at its own deadline under one timer; discarded ones never do."""
    clock = Clock()
    deadlines = _Deadlines(clock, 10.0)
    timed_out: list[str] = []
    a, b, c = (_Channel(n, timed_out) for n in "abc")
    deadlines.add(a)  # type: ignore[arg-type]
    clock.advance(3)
    deadlines.add(b)  # type: ignore[arg-type]
    clock.advance(3)
    deadlines.add(c)  # type: ignore[arg-type]
    assert len(clock.getDelayedCalls()) == 1
    deadlines.discard(b)  # type: ignore[arg-type]
    clock.advance(3.9)
    assert timed_out == []
    clock.advance(0.1)
    assert timed_out == ["a"]
    clock.advance(5.9)
    assert timed_out == ["a"]
    clock.advance(0.1)
    assert timed_out == ["a", "c"]
    assert clock.getDelayedCalls() == []


def test_a_failing_timeout_leaves_the_other_deadlines() -> None:
    """A connection whose timeout raises is logged; the ones after it still time out."""
    clock = Clock()
    deadlines = _Deadlines(clock, 1.0)
    timed_out: list[str] = []
    deadlines.add(_Channel("bad", timed_out, fail=True))  # type: ignore[arg-type]
    deadlines.add(_Channel("next", timed_out))  # type: ignore[arg-type]
    clock.advance(1.0)
    assert timed_out == ["bad", "next"]


def test_stalled_body_is_closed_at_the_idle_timeout() -> None:
    """Headers in time but a body that never comes: the idle timeout closes the connection."""
    with serve(hello_app, header_timeout=0.5, idle_timeout=1.0) as server:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /page HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n12345")
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        # Closed without an answer: the idle timeout, not the header deadline (408).
        assert data == b""


def test_hooks_see_the_same_request_on_both_paths(lean_calls: list[bool]) -> None:
    """The authorize and initial hooks get the same request on both paths, and the same answer."""
    seen: list[Any] = []

    def authorize(request: Any) -> bool:
        seen.append(request)
        return request.cookies.get("session") == "ok"

    def initial(request: Any) -> dict[str, str]:
        return {"hello": request.query["channel"][0]}

    with serve(hello_app, retry_jitter=0, authorize=authorize, initial=initial) as server:
        allowed = (
            b"GET /sse?channel=a HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: session=ok; x=1\r\n"
            b"User-Agent: lean/1\r\n\r\n"
        )
        fast, slow = both(server, lean_calls, allowed, lambda d: b"\n\n\r\n" in d)
        assert b'event: init\ndata: {"hello":"a"}\n' in fast
        assert fast == slow
        assert seen[0] == seen[1]
        assert seen[0].cookies == {"session": "ok", "x": "1"}
        assert seen[0].headers["user-agent"] == "lean/1" and seen[0].path == "/sse"
        denied = b"GET /sse?channel=a HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        fast, slow = both(server, lean_calls, denied, lambda d: d.endswith(b"a\n"))
        assert fast.startswith(b"HTTP/1.1 403 Forbidden\r\n") and fast == slow


def test_another_request_class_keeps_twisted_path() -> None:
    """A site given its own request class reads every request with twisted.web's parser."""
    from twisted.web.resource import Resource
    from twisted.web.server import Request

    from wsgi_sse._site import StreamSite

    site = StreamSite(Resource(), stream_path="/sse", requestFactory=Request)
    assert site._channelClass().leanPath is None
    assert StreamSite(Resource(), stream_path="/sse")._channelClass().leanPath == b"/sse"
    assert StreamSite(Resource(), stream_path="/s%C3%A9")._channelClass().leanPath is None
    with pytest.raises(ValueError, match="stream_path must start with '/'"):
        StreamSite(Resource(), stream_path="sse")
