"""
The lean opening path: a stream's simple request head read in one pass,
and a response's head and first bytes written in one go.

A reconnect storm (every browser reconnecting at once after a restart) is
thousands of identical requests: C{GET /sse HTTP/1.1} with a few headers,
arriving in one read each.  twisted.web parses such a head line by line and
header by header, builds the response head as a list of a dozen pieces
each checked on its own, and hands them to the transport to send on the
reactor's next turn.  L{parse_simple_get} reads a whole head in one pass
and L{start_response} hands the transport the head with the stream's first
bytes in one piece; both give up (L{None}, or the ordinary write) on
anything but the common case, which twisted.web's own path then handles as
always.

What is written here (a stream's opening, a whole WSGI answer) is queued,
not sent at once: every answer queued in one reactor turn is sent after
the turn's reads (L{write_soon}).  A loopback send runs the receiving
end's TCP stack too, and interleaved with the handling of each request it
costs both the kernel and the interpreter more (C{benchmarks/cpusplit.py
--per stream}: a quarter more CPU per stream).

Reactor thread only (L{start_response}); L{parse_simple_get} is pure.
"""

from __future__ import annotations

import ipaddress
import re
import time
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.web.http import NO_BODY_CODES, HTTPChannel, datetimeToString
from twisted.web.http_headers import InvalidHeaderName, _nameEncoder
from twisted.web.server import Request as _ServerRequest

from ._client import PLAIN_SOCKET_TRANSPORTS

if TYPE_CHECKING:
    from twisted.web.server import Request

__all__ = [
    "MAX_SIMPLE_HEAD",
    "SimpleGet",
    "SimpleRequest",
    "finish_response",
    "http_date",
    "parse_simple_get",
    "parse_simple_request",
    "split_host",
    "start_response",
    "write_soon",
]

MAX_SIMPLE_HEAD = 8192
"""Bytes of a request head read in one pass; a larger one takes the line parser."""

# Request headers that make a request anything but simple: a body (the
# stream takes none, and twisted.web's limits answer it), an interim answer.
_NOT_SIMPLE = frozenset({b"Content-Length", b"Transfer-Encoding", b"Expect", b"Upgrade"})

# The bytes a request target may consist of here: printable ASCII but for
# a space (twisted.web also takes some others, which take its own path).
_TARGET_BYTES = bytes(range(0x21, 0x7F))


class SimpleGet:
    """
    A simple C{GET} request head, read in one pass.

    @ivar target: the request target (C{/sse?channel=a}).
    @ivar query: the query string without its C{?}, or L{None}.
    @ivar headers: the request headers, as twisted.web stores them: each
        canonical name (C{Last-Event-Id}) with a list of its one value.
    @ivar persistent: whether the connection stays open after the answer
        (no C{Connection: close}).
    """

    __slots__ = ("headers", "persistent", "query", "target")

    def __init__(
        self,
        target: bytes,
        query: bytes | None,
        headers: dict[bytes, list[bytes]],
        persistent: bool,
    ) -> None:
        self.target = target
        self.query = query
        self.headers = headers
        self.persistent = persistent


def parse_simple_get(data: bytes, path: bytes, max_headers: int) -> SimpleGet | None:
    """
    Read C{data}, one read from a fresh connection, as the complete head of
    a C{GET} of C{path} (with or without a query) over HTTP/1.1; L{None} if
    it is anything else, or anything twisted.web would answer or read
    differently.

    L{None} for: another method, path or version; a target with bytes other
    than printable ASCII, a fragment or an escaped path; bytes after the
    head (pipelining) or an incomplete head; a bare CR or LF, or a NUL; a
    folded (continued) header line, a header name that is not a token, a
    header given twice; no C{Host}, or one L{split_host} refuses; a body
    (C{Content-Length}, C{Transfer-Encoding}),
    C{Expect} or C{Upgrade}; more than C{max_headers} headers or
    L{MAX_SIMPLE_HEAD} bytes.  Header values lose their surrounding spaces
    and tabs, as twisted.web stores them.

    >>> get = parse_simple_get(b"GET /sse?a=1 HTTP/1.1\\r\\nhost: x\\r\\n\\r\\n", b"/sse", 500)
    >>> get.target, get.query, get.headers, get.persistent
    (b'/sse?a=1', b'a=1', {b'Host': [b'x']}, True)
    >>> parse_simple_get(b"POST /sse HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n", b"/sse", 500) is None
    True
    """
    size = len(data)
    if (
        size > MAX_SIMPLE_HEAD
        or data[4 : len(path) + 5] not in (path + b" ", path + b"?")
        or data[-4:] != b"\r\n\r\n"
        or data.find(b"\r\n\r\n") != size - 4
    ):
        return None
    lines = _lines(data[:-4], max_headers)
    if lines is None:
        return None
    line = lines[0]
    if line[:4] != b"GET " or line[-9:] != b" HTTP/1.1":
        return None
    target = line[4:-9]
    query: bytes | None = None
    if target != path:
        if target[: len(path) + 1] != path + b"?":
            return None
        query = target[len(path) + 1 :]
        if target.translate(None, _TARGET_BYTES) or b"#" in query:
            return None
    headers = _headers(lines, _NOT_SIMPLE)
    if headers is None or not _host_ok(headers):
        return None
    return SimpleGet(target, query, headers, _persistent(headers))


class SimpleRequest:
    """
    A simple HTTP/1.1 request, head and body, read in one pass.

    @ivar method: the method (C{POST}).
    @ivar target: the request target, in origin form (C{/knock?x=1}).
    @ivar headers: the request headers, as twisted.web stores them: each
        canonical name (C{Content-Type}) with a list of its one value.
    @ivar persistent: whether the connection stays open after the answer
        (no C{Connection: close}).
    @ivar length: the body's length (0 without C{Content-Length}).
    @ivar body: the body.
    @ivar head_size: the bytes of the request head, its last CRLF included.
    """

    __slots__ = ("body", "head_size", "headers", "length", "method", "persistent", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: dict[bytes, list[bytes]],
        persistent: bool,
        body: bytes,
        head_size: int,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.persistent = persistent
        self.body = body
        self.length = len(body)
        self.head_size = head_size


# Request headers that make a request anything but simple here: a body
# that is not all there (chunked), an interim answer, another protocol.
_NOT_SIMPLE_REQUEST = frozenset({b"Transfer-Encoding", b"Expect", b"Upgrade"})


def parse_simple_request(data: bytes, max_headers: int) -> SimpleRequest | None:
    """
    Read C{data}, one read from a connection between requests, as one
    whole HTTP/1.1 request: its head and, when it declares one with
    C{Content-Length}, its whole body; L{None} if it is anything else, or
    anything twisted.web would answer or read differently.

    L{None} for: a method that is not all capital letters; another version;
    a target not in origin form (C{/...}), with bytes other than printable
    ASCII, or with a fragment; a head that is incomplete or larger than
    L{MAX_SIMPLE_HEAD}; a body shorter or longer than its C{Content-Length}
    (bytes of another request after it), or bytes after a head without
    one; a C{Content-Length} that is not all digits; a bare CR or LF, or a
    NUL, in the head; a folded (continued) header line, a header name that
    is not a token, a header given twice; no C{Host}, or one L{split_host}
    refuses; C{Transfer-Encoding}, C{Expect}
    or C{Upgrade}; more than C{max_headers} headers.  Header values lose
    their surrounding spaces and tabs, as twisted.web stores them.

    >>> request = parse_simple_request(
    ...     b"POST /knock HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 6\\r\\n\\r\\nname=a", 500)
    >>> request.method, request.target, request.headers[b"Content-Length"], request.body
    (b'POST', b'/knock', [b'6'], b'name=a')
    >>> parse_simple_request(b"POST /knock HTTP/1.1\\r\\nContent-Length: 7\\r\\n\\r\\nname=a", 500)
    """
    end = data.find(b"\r\n\r\n")
    if end < 0 or end + 4 > MAX_SIMPLE_HEAD:
        return None
    lines = _lines(data[:end], max_headers)
    if lines is None:
        return None
    method, _, rest = lines[0].partition(b" ")
    if rest[-9:] != b" HTTP/1.1" or not method.isalpha() or not method.isupper():
        return None
    target = rest[:-9]
    if target[:1] != b"/" or target.translate(None, _TARGET_BYTES) or b"#" in target:
        return None
    headers = _headers(lines, _NOT_SIMPLE_REQUEST)
    if headers is None or not _host_ok(headers):
        return None
    body = data[end + 4 :]
    length = headers.get(b"Content-Length")
    if length is None:
        if body:
            return None
    elif length[0] != b"%d" % len(body):
        # (Leading zeros, or a length that is not the body's: twisted.web's.)
        return None
    return SimpleRequest(method, target, headers, _persistent(headers), body, end + 4)


# RFC 3986 3.2.2: a reg-name (an IPv4 address is one too) of unreserved
# characters, sub-delims and percent-escapes; an IP literal's IPvFuture.
_REG_NAME = re.compile(rb"(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})+")
_IP_FUTURE = re.compile(rb"v[0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+")


def split_host(value: bytes) -> tuple[bytes, bytes] | None:
    """
    The host and the port of a C{Host} header's C{value}, or of a request
    target's authority: C{uri-host [ ":" port ]} (RFC 9112 3.2, RFC 3986
    3.2.2 and 3.2.3), the host a registered name, an IPv4 address or an IP
    literal in brackets (returned without them), the port digits, perhaps
    none (the scheme's default); L{None} for anything else: an empty host
    with a port (an C{http} URI never has one, RFC 9110 4.2.1), a path,
    query or fragment, user information, spaces.  An empty value is valid
    (RFC 9112 3.2: the target has no authority): C{(b"", b"")}.

    >>> split_host(b"example.test:8080"), split_host(b"[::1]"), split_host(b"")
    ((b'example.test', b'8080'), (b'::1', b''), (b'', b''))
    >>> split_host(b":80"), split_host(b"a/../b"), split_host(b"a:b"), split_host(b"u@a")
    (None, None, None, None)
    """
    if not value:
        return b"", b""
    if value[:1] == b"[":
        end = value.find(b"]")
        host = value[1:end]
        if end < 0 or not (_IP_FUTURE.fullmatch(host) or _ipv6(host)):
            return None
        rest = value[end + 1 :]
        if not rest:
            return host, b""
        colon, port = rest[:1], rest[1:]
        if colon != b":":
            return None
    else:
        host, _, port = value.partition(b":")
        if _REG_NAME.fullmatch(host) is None:
            return None
    if port and not port.isdigit():
        return None
    return host, port


def _ipv6(text: bytes) -> bool:
    """Whether C{text} is an IPv6 address as a URI writes one (no zone)."""
    if not text or b"%" in text:
        return False
    try:
        ipaddress.IPv6Address(text.decode("ascii"))
    except ValueError:
        return False
    return True


def _host_ok(headers: dict[bytes, list[bytes]]) -> bool:
    """Whether an HTTP/1.1 request's one-value C{headers} have a valid C{Host}."""
    host = headers.get(b"Host")
    return host is not None and split_host(host[0]) is not None


def _lines(head: bytes, max_headers: int) -> list[bytes] | None:
    """
    The lines of a request C{head} (its last CRLF left off): L{None} for a
    bare CR or LF, a NUL, or more than C{max_headers} header lines.
    """
    lines = head.split(b"\r\n")
    breaks = len(lines) - 1
    if head.count(b"\n") != breaks or head.count(b"\r") != breaks or b"\x00" in head:
        return None
    if breaks > max_headers:
        return None
    return lines


def _headers(lines: list[bytes], refused: frozenset[bytes]) -> dict[bytes, list[bytes]] | None:
    """
    The header lines of a request head (C{lines[1:]}) as twisted.web stores
    them: canonical names, values stripped of spaces and tabs; L{None} for
    a folded line, a name that is not a token, a name given twice or one
    in C{refused}.
    """
    headers: dict[bytes, list[bytes]] = {}
    encode = _nameEncoder.encode
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or line[0] in b" \t":
            return None
        try:
            name = encode(name)
        except InvalidHeaderName:
            return None
        if name in headers or name in refused:
            return None
        headers[name] = [value.strip(b" \t")]
    return headers


_OPTION_SEPARATORS = re.compile(rb"[ \t,]+")


def connection_closes(values: list[bytes] | None) -> bool:
    """
    Whether C{Connection} header lines C{values} ask to close the connection
    after this request: C{close} among their options (RFC 9110 7.6.1: a
    comma-separated list, over any number of lines, in any case).  Options
    separated by spaces alone, which twisted.web reads, count too.

    >>> connection_closes([b"te,close"]), connection_closes([b"te", b"Close"])
    (True, True)
    >>> connection_closes([b"keep-alive"]), connection_closes([b"closed"]), connection_closes(None)
    (False, False, False)
    """
    if values:
        for value in values:
            value = value.lower()
            if b"close" in value and b"close" in _OPTION_SEPARATORS.split(value):
                return True
    return False


def _persistent(headers: dict[bytes, list[bytes]]) -> bool:
    """Whether the connection stays open after this HTTP/1.1 request (L{connection_closes})."""
    connection = headers.get(b"Connection")
    return connection is None or not connection_closes(connection)


_date: list[Any] = [-1, b""]


def http_date() -> bytes:
    """
    The C{Date} header's value now, as twisted.web writes it (computed once
    a second).
    """
    now = int(time.time())
    if now != _date[0]:
        _date[1] = datetimeToString(now)
        _date[0] = now
    return _date[1]  # type: ignore[no-any-return]


# (Names bound once: twisted.web.http is a module proxy, slow to look into.)
_REQUEST_WRITE = _ServerRequest.write
_WRITE_HEADERS = HTTPChannel.writeHeaders


def _plain(request: Request, raw: Any) -> bool:
    """
    Whether C{request}'s first write can be made here, exactly as
    twisted.web's C{Request.write} would make it, for a response with a body:
    HTTP/1.1 over a plain TCP or UNIX-socket connection, twisted.web's own
    request and channel writing, nothing it would add or change in the head
    (cookies, C{Last-Modified}, C{ETag}, a default C{Content-Type}, an
    encoder) and no body it would drop (C{HEAD}, 204, 304).
    """
    channel: Any = request.channel
    return not (
        request.startedWriting
        or type(getattr(channel, "transport", None)) not in PLAIN_SOCKET_TRANSPORTS
        or raw is None
        or request.clientproto != b"HTTP/1.1"
        or request.method == b"HEAD"
        or (b"Content-Type" not in raw and request.defaultContentType is not None)
        or request.code in NO_BODY_CODES
        or request.cookies
        or request.lastModified is not None
        or request.etag is not None
        or getattr(request, "_encoder", None) is not None
        or getattr(request, "_inFakeHead", False)
        or request._disconnected
        or request.finished
        or type(request).write is not _REQUEST_WRITE
        or not isinstance(channel, HTTPChannel)
        or type(channel).writeHeaders is not _WRITE_HEADERS
    )


def _head(request: Request, raw: dict[bytes, list[bytes]]) -> list[bytes]:
    """
    The response head's lines, as C{HTTPChannel.writeHeaders} writes them.

    @raise ValueError: for a reason phrase with a CR or LF (a line of its
        own in the head).
    """
    reason = request.code_message
    if b"\r" in reason or b"\n" in reason:
        raise ValueError(f"a reason phrase cannot hold a line break: {reason!r}")
    parts = [b"HTTP/1.1 %d %s\r\n" % (request.code, reason)]
    for name, values in raw.items():
        for value in values:
            parts.append(b"%s: %s\r\n" % (name, value))
    return parts


def start_response(request: Request, body: bytes) -> None:
    """
    Write C{request}'s response head and C{body}, its first bytes, exactly
    as C{request.write(body)} would, in one write, queued in the transport
    and sent with the other openings of this reactor turn (L{write_soon}).

    Only an HTTP/1.1 C{GET} answered with a body (chunked) over a plain TCP
    or UNIX-socket connection is written here, with twisted.web's own
    request and channel classes' writing; anything else (HTTP/1.0, HTTP/2,
    TLS, cookies, a C{Content-Length}) goes through C{request.write}.
    """
    raw: Any = getattr(request.responseHeaders, "_rawHeaders", None)
    if (
        not _plain(request, raw)
        or request.method != b"GET"
        or b"Content-Length" in raw
        or b"Content-Type" not in raw
    ):
        request.write(body)
        return
    # What http.Request.write does on the first write, in one piece.
    raw[b"Transfer-Encoding"] = [b"chunked"]
    parts = _head(request, raw)
    request.startedWriting = 1
    request.chunked = 1
    if body:
        request.sentLength += len(body)
        parts.append(b"\r\n%x\r\n%s\r\n" % (len(body), body))
    else:
        parts.append(b"\r\n")
    write_soon(request.channel.transport, b"".join(parts))


def finish_response(request: Request, body: bytes) -> None:
    """
    Write C{request}'s whole response, its head and C{body}, and finish it,
    exactly as C{request.write(body)} then C{request.finish()} would, with
    the head, the body and (chunked) the last chunk in one write, queued in
    the transport and sent with the others of this reactor turn
    (L{write_soon}).

    A response L{start_response}'s rules (but for the method) do not let
    through is written by C{request.write} and C{request.finish}.
    """
    raw: Any = getattr(request.responseHeaders, "_rawHeaders", None)
    if not _plain(request, raw):
        if body:
            request.write(body)
        request.finish()
        return
    # What http.Request.write does on the first write, and finish's last chunk.
    if b"Content-Length" in raw:
        parts = _head(request, raw)
        parts.append(b"\r\n")
        parts.append(body)
    else:
        raw[b"Transfer-Encoding"] = [b"chunked"]
        parts = _head(request, raw)
        parts.append(b"\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if body else b"\r\n0\r\n\r\n")
    request.startedWriting = 1
    request.sentLength += len(body)
    write_soon(request.channel.transport, b"".join(parts))
    # (The last chunk is written: Request.finish must not write it again.)
    request.chunked = 0
    request.finish()


_log = Logger()

# Per reactor: the transports holding an opening that write_soon queued,
# sent together once the reactor is done with its turn's reads.
_unsent: dict[Any, list[Any]] = {}


def write_soon(transport: Any, data: bytes) -> None:
    """
    Queue C{data} in C{transport} (a plain TCP or UNIX-socket transport) as
    C{transport.write} would, to be sent together with the other data so
    queued in this reactor turn, once the turn's reads are handled.

    Like C{transport.write}, the bytes go into the transport's own buffer,
    so anything written after them (by C{transport.write}, or straight to
    the socket by a stream's fast path, which first looks in that buffer)
    waits behind them; unlike it, the transport is not
    registered with the reactor's poller to learn it is writable (two
    C{epoll_ctl} calls, and a turn of the reactor, per connection): one
    call after the turn writes every queued transport at once.  Whatever
    the kernel does not take then is left to the reactor as usual.
    """
    if (
        not transport.connected
        or transport.disconnecting
        or transport._writeDisconnected
        or len(data) + transport._tempDataLen + len(transport.dataBuffer) > transport.bufferSize
    ):
        # (Dropped, or closing, or a producer to pause: as write does it.)
        transport.write(data)
        return
    transport._tempDataBuffer.append(data)
    transport._tempDataLen += len(data)
    reactor = transport.reactor
    unsent = _unsent.get(reactor)
    if unsent is None:
        unsent = _unsent[reactor] = []
    unsent.append(transport)
    if len(unsent) == 1:
        reactor.callLater(0, _write_unsent, reactor)


def _write_unsent(reactor: Any) -> None:
    """Write what L{write_soon} queued in C{reactor}'s transports."""
    unsent = _unsent.pop(reactor, ())
    for transport in unsent:
        if not transport.connected or not (transport._tempDataLen or transport.dataBuffer):
            # Gone, or already written (a later write had the reactor write it).
            continue
        if transport._aborting:
            # abortConnection: nothing more is sent, the close is on its way.
            continue
        if transport.disconnecting and transport.producer is None:
            # loseConnection is waiting for the socket to be writable to
            # send the rest and close: do it now, as the reactor would.
            _write_or_close(reactor, transport)
            continue
        if transport.disconnecting or transport._writeDisconnected:
            # loseConnection had the reactor write the rest before it closes.
            continue
        # What the reactor does when the socket is writable: send what the
        # kernel takes, keep the rest; an error is left for the reactor to
        # find again and report (connectionLost).
        failed = transport.doWrite()
        if failed is not None or transport._tempDataLen or transport.dataBuffer:
            transport.startWriting()


def _write_or_close(reactor: Any, transport: Any) -> None:
    """
    What the reactor does when C{transport}'s socket is writable: send what
    the kernel takes and, once all is sent by a transport that is
    closing, close it; an error closes it too.
    """
    try:
        why = transport.doWrite()
    except BaseException as error:  # noqa: BLE001 - as the reactor does
        # (Logged, and the connection is lost with it.)
        why = error
        _log.failure("writing to {transport}", transport=transport)
    if why:
        reactor._disconnectSelectable(transport, why, False)
