"""
Property-based tests of the one-pass request readers against twisted.web's
own line parser: for any bytes, either the one-pass reader declines them
(L{None}, and twisted.web's path reads them) or twisted.web's
C{HTTPChannel}, fed the same bytes in one read, reads exactly one request
with the same method, target, version, headers and body, and answers
nothing by itself.  Persistence too, save where RFC 9110 closes a connection
twisted.web keeps (C{close} after a comma: C{Connection: te,close}).
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet.testing import StringTransport
from twisted.web import http

from wsgi_sse._lean import parse_simple_get, parse_simple_request

settings.register_profile(
    "lean-parsers", max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

MAX_HEADERS = 6


class _Recorded(http.Request):
    """A request that records what the channel read, and answers nothing."""

    seen: list[dict[str, Any]]

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        self.content.seek(0)
        self.seen.append(
            {
                "method": command,
                "target": path,
                "version": version,
                "headers": {k: list(v) for k, v in self.requestHeaders.getAllRawHeaders()},
                "body": self.content.read(),
                "persistent": self.channel.persistent,
            }
        )


def twisted_reads(data: bytes) -> tuple[list[dict[str, Any]], bytes]:
    """The requests twisted.web's channel reads from C{data} in one read, and what it wrote."""
    seen: list[dict[str, Any]] = []

    def factory(channel: Any, queued: int) -> _Recorded:
        request = _Recorded(channel, queued)
        request.seen = seen
        return request

    channel = http.HTTPChannel()
    channel.requestFactory = factory
    channel.maxHeaders = MAX_HEADERS
    transport = StringTransport()
    channel.makeConnection(transport)
    channel.dataReceived(data)
    written = transport.value()
    channel.connectionLost(Exception("done"))  # type: ignore[arg-type]
    return seen, written


# Pieces of request heads where the two readers could part: odd methods,
# targets and versions; header names and values with spaces, tabs, case,
# control bytes and the headers that change framing or persistence.
methods = st.sampled_from(
    [b"GET", b"POST", b"PUT", b"DELETE", b"get", b"Get", b"G-T", b"GET1", b"", b"GE T", b"\xc3\xa9"]
)
gaps = st.sampled_from([b" ", b" ", b" ", b"  ", b"\t"])
targets = st.sampled_from(
    [
        b"/",
        b"/sse",
        b"/sse?channel=a",
        b"/sse?",
        b"/sse?a=%20b&c",
        b"/sse/x",
        b"/ssex",
        b"/knock",
        b"/knock?x=1#frag",
        b"/a%2Fb",
        b"//a",
        b"/a/../b",
        b"*",
        b"http://h/sse",
        b"page",
        b"/\xc3\xa9",
        b"/a\x7fb",
        b"/a\x01b",
        b"",
    ]
) | st.binary(min_size=1, max_size=8).map(lambda b: b"/" + b)
versions = st.sampled_from(
    [b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"http/1.1", b"HTTP/1.10", b"HTTP/2.0", b"HTTP/1.1 "]
)
names = st.sampled_from(
    [
        b"Host",
        b"host",
        b"X-A",
        b"x-a",
        b"X_A",
        b"Content-Length",
        b"content-length",
        b"Transfer-Encoding",
        b"Connection",
        b"connection",
        b"Last-Event-ID",
        b"Cookie",
        b"Expect",
        b"Upgrade",
        b"X A",
        b" X-A",
        b"X-A ",
        b"",
        b"\xc3\xa9",
        b"X\x00",
    ]
)
values = st.sampled_from(
    [
        b"x",
        b" x ",
        b"\tx\t",
        b"",
        b" ",
        b"close",
        b"Close",
        b"keep-alive, close",
        b"close,upgrade",
        b"te,close",
        b"Upgrade ,\tCLOSE",
        b"closed, x",
        b",close,",
        b"a b",
        b"a:b",
        b"0",
        b"3",
        b"03",
        b"+3",
        b"-1",
        b"3 3",
        b"a=1; b=2",
        b"\xc3\xa9",
        b"x\x00y",
        b"x\ry",
        b"x\ny",
        b"x\x0bz",
    ]
)
hosts = st.sampled_from(
    [b"", b"x:80", b"x:", b"[::1]:8080", b"[v1.x]", b"127.0.0.1", b":80", b"x/y", b"x y", b"[::1"]
)
line_ends = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b" \r\n"])
header_lines = st.tuples(
    names, st.sampled_from([b":", b": ", b":  ", b" :", b""]), values, line_ends
)
bodies = st.sampled_from([b"", b"", b"abc", b"a\r\n\r\nb", b"GET / HTTP/1.1\r\n\r\n"]) | st.binary(
    max_size=6
)


def mostly(good: Any, odd: Any) -> Any:
    """C{good} four times in five, else C{odd} (so that whole requests are often simple)."""
    return st.integers(0, 4).flatmap(lambda n: odd if n == 0 else good)


@st.composite
def requests(draw: Any) -> bytes:
    """Request bytes, mostly well formed, each piece sometimes not."""
    crlf = mostly(st.just(b"\r\n"), line_ends)
    line = (
        draw(mostly(st.sampled_from([b"GET", b"POST"]), methods))
        + draw(mostly(st.just(b" "), gaps))
        + draw(mostly(st.sampled_from([b"/sse", b"/sse?channel=a", b"/knock"]), targets))
        + draw(mostly(st.just(b" "), gaps))
        + draw(mostly(st.just(b"HTTP/1.1"), versions))
    )
    parts = [line, draw(crlf)]
    if draw(mostly(st.just(True), st.just(False))):
        # A Host line first, as a client sends it (HTTP/1.1 requires one).
        parts += [b"Host: ", draw(mostly(st.just(b"example.test"), hosts)), draw(crlf)]
    good_header = st.tuples(
        st.sampled_from([b"Host", b"X-A", b"Connection", b"Last-Event-ID", b"Cookie"]),
        st.just(b": "),
        st.sampled_from([b"x", b"a=1", b"close", b"keep-alive"]),
        st.just(b"\r\n"),
    )
    count = draw(st.integers(0, MAX_HEADERS + 1))
    for _ in range(count):
        name, colon, value, end = draw(mostly(good_header, header_lines))
        parts += [name, colon, value, end]
        if draw(st.integers(0, 30)) == 0:
            parts.append(b" folded\r\n")
    body = draw(mostly(st.just(b""), bodies))
    if draw(st.integers(0, 2)) == 0:
        # A Content-Length that says the body's length, or one off.
        parts += [b"Content-Length: %d\r\n" % (len(body) + draw(st.sampled_from([0, 0, 0, 1, -1])))]
    parts += [draw(mostly(st.just(b"\r\n"), st.just(b"\n"))), body]
    return b"".join(parts)


def closes_by_rfc(headers: dict[bytes, list[bytes]]) -> bool:
    """Whether C{close} is among the C{Connection} options (RFC 9110 7.6.1: a comma list)."""
    return any(
        option.strip(b" \t").lower() == b"close"
        for line in headers.get(b"Connection", [])
        for option in line.split(b",")
    )


def _assert_read_alike(data: bytes, method: bytes, target: bytes, headers: Any, body: bytes,
                       persistent: bool) -> None:  # fmt: skip
    seen, written = twisted_reads(data)
    assert written == b"", (data, written)
    assert len(seen) == 1, (data, seen)
    (read,) = seen
    # Persistence: the connection closes when twisted.web would close it
    # (C{close} among the first line's space-separated words) and when RFC
    # 9110 says to (C{close} among its comma-separated options).
    read["persistent"] = read["persistent"] and not closes_by_rfc(read["headers"])
    assert read == {
        "method": method,
        "target": target,
        "version": b"HTTP/1.1",
        "headers": headers,
        "body": body,
        "persistent": persistent,
    }, data


@settings(settings.get_profile("lean-parsers"))
@given(requests())
@example(b"POST /knock HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
@example(b"GET /sse?channel=a HTTP/1.1\r\nhost: \t h \t\r\nConnection: Keep-Alive, Close\r\n\r\n")
@example(b"GET /sse?channel=a HTTP/1.1\r\nHost: x\r\nConnection: te,close\r\n\r\n")
@example(b"GET /a HTTP/1.1\r\nHost: x\x0b\r\n\r\n")
def test_a_simple_request_is_what_twisted_reads(data: bytes) -> None:
    """Whatever L{parse_simple_request} reads, twisted.web reads the same, and answers nothing."""
    simple = parse_simple_request(data, MAX_HEADERS)
    if simple is None:
        return
    assert simple.head_size + simple.length == len(data)
    _assert_read_alike(
        data, simple.method, simple.target, simple.headers, simple.body, simple.persistent
    )


@settings(settings.get_profile("lean-parsers"))
@given(requests())
@example(b"GET /sse HTTP/1.1\r\nHost: x\r\n\r\n")
@example(b"GET /sse HTTP/1.1\r\nHost: x\r\nConnection: Upgrade ,\tCLOSE\r\n\r\n")
@example(b"GET /sse?channel=a&x=%20 HTTP/1.1\r\nHost:\r\nlast-event-id:  7\r\nX-Empty:\r\n\r\n")
def test_a_simple_stream_get_is_what_twisted_reads(data: bytes) -> None:
    """Whatever L{parse_simple_get} reads, twisted.web reads the same, and answers nothing."""
    get = parse_simple_get(data, b"/sse", MAX_HEADERS)
    if get is None:
        return
    path, _, query = get.target.partition(b"?")
    assert path == b"/sse"
    assert get.query == (query if b"?" in get.target else None)
    _assert_read_alike(data, b"GET", get.target, get.headers, b"", get.persistent)


def test_the_drawn_requests_include_simple_ones() -> None:
    """Of 300 drawn requests, some are simple requests and some simple stream GETs."""
    simple = stream = 0

    @settings(max_examples=300, deadline=None, database=None, derandomize=True)
    @given(requests())
    def count(data: bytes) -> None:
        nonlocal simple, stream
        simple += parse_simple_request(data, MAX_HEADERS) is not None
        stream += parse_simple_get(data, b"/sse", MAX_HEADERS) is not None

    count()
    assert simple >= 10 and stream >= 3, (simple, stream)
