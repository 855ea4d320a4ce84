"""
The twisted.web C{Site} used by wsgi-sse: a deadline for request headers.

Twisted's C{HTTPChannel} only has an idle timeout, which every received byte
resets: a client that trickles its request headers one byte at a time
("slowloris") holds a connection for as long as it likes.  L{StreamSite}
gives each request's headers a fixed time to arrive in full, counted from
the connection's start or from the first byte of the next request on a
kept-alive connection; past it the connection is answered C{408} and closed.
A request line or header line longer than Twisted accepts is answered C{414}
or C{431} (Twisted itself closes such connections without an answer), more
headers than Twisted accepts (500, or 16 KiB in all) C{431} with a reason
(Twisted: a bare C{400}), and a
request body over C{max_request_body} is answered C{413} (Twisted itself has
no limit and spools large bodies to disk): a chunked body's data counts,
its framing is bounded apart (L{CHUNKED_FRAMING_ALLOWANCE}).  Paths given a smaller limit
(C{body_limits}: the event stream takes no body at all, the publish endpoint
a small one) refuse a larger body as soon as its headers arrive, before any
of it is read.

Request bodies are never parsed here: twisted.web would otherwise parse every
form-encoded or multipart C{POST} body into C{request.args} in the reactor
thread, on every path, before any resource sees the request (30 MB of form
fields froze every connection for seconds).  The WSGI app reads and parses
its body in its own thread, as under any WSGI server.

Over TLS with C{h2} installed, clients that negotiate HTTP/2 get a
L{_StreamH2Connection} under the same limits (see there).

All methods: call in the reactor thread (twisted.web does).
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import socket
from typing import TYPE_CHECKING, Any, Callable, Mapping
from urllib.parse import unquote_to_bytes

from twisted.internet import tcp
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IHalfCloseableProtocol, ISSLTransport
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.http import _getContentFile, parse_qs
from twisted.web.http_headers import Headers
from twisted.web.resource import _IEncodingResource
from twisted.web.server import Site
from twisted.web.server import version as _server_version

from ._accesslog import combined_line, log_line, redacting
from ._checks import check_seconds
from ._client import (
    PLAIN_SOCKET_TRANSPORTS,
    StreamClient,
    close_after_response,
    site_closing,
    unsent_bytes,
)
from ._lean import (
    connection_closes,
    http_date,
    parse_simple_get,
    parse_simple_request,
    split_host,
)

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall
    from twisted.web.resource import IResource

__all__ = [
    "CHUNKED_FRAMING_ALLOWANCE",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_REQUEST_BODY",
    "StreamSite",
    "origin_form",
    "routable",
    "target_authority",
]

DEFAULT_HEADER_TIMEOUT = 30.0
"""Seconds a client has to send a request's line and headers in full."""

DEFAULT_IDLE_TIMEOUT = 180.0
"""Seconds a connection may stay silent between requests (not during a stream)."""

DEFAULT_MAX_REQUEST_BODY = 64 * 1024 * 1024
"""Bytes a request body may have (Twisted alone accepts any size, spooled to disk)."""

CHUNKED_FRAMING_ALLOWANCE = 64 * 1024
"""
Bytes of framing (chunk-size lines, extensions, CRLFs, trailers) a chunked
request body may have on top of as many bytes as its data: past that
(chunks of fewer than 5 bytes, or padded with extensions) it is refused.
"""


class _BodyTooLargeError(Exception):
    """A chunked request body passed its limit as it was being decoded."""


def _h2_frames() -> tuple[Any, Any]:
    try:
        from h2.errors import ErrorCodes
        from hyperframe.frame import GoAwayFrame
    except ImportError:  # h2 is not installed: HTTP/1.1 only
        return None, None
    return ErrorCodes, GoAwayFrame


ErrorCodes, GoAwayFrame = _h2_frames()


def _h2_connection_class() -> tuple[Any, object, Any]:
    try:
        from priority import PriorityTree  # type: ignore[import-untyped]
        from twisted.web._http2 import _END_STREAM_SENTINEL, H2Connection
    except ImportError:  # h2 is not installed: HTTP/1.1 only
        return None, None, None
    return H2Connection, _END_STREAM_SENTINEL, PriorityTree


H2Connection: Any
_END_STREAM: object
_PriorityTree: Any
H2Connection, _END_STREAM, _PriorityTree = _h2_connection_class()
"""twisted.web's HTTP/2 connection class, or L{None} without C{h2}; what
it queues after a stream's last data to end it; the tree that orders its
streams."""


class _HeaderDeadlineChannel(http.HTTPChannel):
    """An C{HTTPChannel} that aborts requests whose headers arrive too slowly."""

    log = Logger()
    headerTimeout: float | None = DEFAULT_HEADER_TIMEOUT
    maxRequestBody: int | None = DEFAULT_MAX_REQUEST_BODY
    # Smaller limits by path: {(b"sse",): 0, ...} (segments as routed).
    bodyLimits: Mapping[tuple[bytes, ...], int] = {}
    # Whether this connection is in its site's _deadlines (waiting for headers).
    _headerDeadline = False
    _deadlines: _Deadlines | None = None
    # The body's bytes received so far (a chunked body's: decoded).
    _bodyReceived = 0
    _bodyLimit: int | None = DEFAULT_MAX_REQUEST_BODY
    # A chunked body's bytes on the wire, its framing included.
    _wireReceived = 0
    _refused = False
    # Whether simple requests are read in one pass (twisted.web's own
    # request class, or this module's, whose methods the one pass calls).
    leanRequests = False
    # The event stream's path: its simple GETs are read in one pass.
    leanPath: bytes | None = None
    # Whether the client has sent all it will send (a TCP half-close).
    _readClosed = False

    def connectionMade(self) -> None:
        """Start the clock for the first request's headers."""
        idle = self.timeOut
        if self._deadlines is not None and idle and idle >= self._deadlines.timeout:
            # The header deadline comes first: no idle timer until the
            # headers are in (allHeadersReceived starts it for a body).
            self.timeOut = None
            super().connectionMade()  # type: ignore[no-untyped-call]
            self.timeOut = idle
        else:
            super().connectionMade()  # type: ignore[no-untyped-call]
        self._armHeaderDeadline()

    def getHost(self) -> Any:
        """
        This connection's own address (C{request.host}, asked for every
        request): on a TCP port listening on one IPv4 address, the port's
        own, made once per port instead of asked of the kernel
        (C{getsockname}) for every connection; else the transport's.
        """
        transport: Any = self.transport
        if type(transport) is tcp.Server and transport.server is not None:
            # (A connection handed over with adoptStreamConnection has no port.)
            host = _port_host(transport.server)
            if host is not None:
                return host
        return transport.getHost()

    def dataReceived(self, data: bytes) -> None:
        """
        Read a request: a simple GET of the event stream (see
        L{_serve_simple_get}) or another simple request with its whole
        body (see L{_serve_simple_request}) in one pass, else line by line;
        start the clock at the first byte of a request on a kept-alive
        connection.
        """
        if (
            self.leanRequests
            and not self.requests
            and self.line_mode
            and not self._buffer
            and self.persistent
            and type(self.transport) in PLAIN_SOCKET_TRANSPORTS
            and (
                (self.leanPath is not None and self._serve_simple_get(data))
                or self._serve_simple_request(data)
            )
        ):
            return
        if not self._headerDeadline and not self.requests and self.line_mode:
            # Between requests: these bytes begin the next request's head.
            self._armHeaderDeadline()
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def _serve_simple_get(self, data: bytes) -> bool:
        """
        Serve C{data} if it is the whole head of a simple C{GET} of the
        event stream (L{parse_simple_get}) on a plain TCP or UNIX-socket
        connection, as twisted.web would serve it, without its line parser;
        return whether it was.

        The request, the channel and the response headers end up as
        twisted.web's C{HTTPChannel}, C{Request.requestReceived} and
        C{Request.process} leave them; the request is routed and rendered
        by twisted.web (C{Site.getResourceFor}, C{Request.render}).
        """
        path = self.leanPath
        assert path is not None
        get = parse_simple_get(data, path, self.maxHeaders)
        if get is None:
            return False
        # HTTPChannel: the headers are in, the request is being handled.
        self._cancelHeaderDeadline()
        if self.timeOut:
            self._savedTimeOut = self.setTimeout(None)  # type: ignore[no-untyped-call]
        request: Any = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        request.requestHeaders._rawHeaders = get.headers
        if b"Cookie" in get.headers:
            request.parseCookies()
        site: Any = self.site  # type: ignore[attr-defined]
        get_content_file = getattr(site, "getContentFile", None)
        request.content = (
            get_content_file(0) if get_content_file is not None else _getContentFile(0)
        )
        response_headers = request.responseHeaders._rawHeaders
        self._keepAlive(request, get.persistent)
        self._bodyReceived = 0
        self._handlingRequest = True
        self.setRawMode()  # type: ignore[no-untyped-call]
        # Request.requestReceived.
        request.args = parse_qs(get.query, 1) if get.query is not None else {}
        request.method = b"GET"
        request.uri = get.target
        request.clientproto = b"HTTP/1.1"
        request.path = path
        # Request.process.
        request.site = site
        response_headers[b"Server"] = [_server_version]
        response_headers[b"Date"] = [http_date()]
        request.prepath = []
        request.postpath = path[1:].split(b"/")
        try:
            resrc = site.getResourceFor(request)
            if _IEncodingResource.providedBy(resrc):
                encoder = resrc.getEncoder(request)
                if encoder is not None:
                    request._encoder = encoder
            request.render(resrc)
        except BaseException:  # noqa: BLE001 - as Request.process does
            request.processingFailed(Failure())
        return True

    def _serve_simple_request(self, data: bytes) -> bool:
        """
        Serve C{data} if it is one whole simple request, head and body (see
        L{parse_simple_request}), on a plain TCP or UNIX-socket connection,
        as twisted.web would serve it, without its line parser; return
        whether it was.

        The channel and the request are left as twisted.web's
        C{HTTPChannel} leaves them when the request's last byte is in
        (C{allHeadersReceived}, the body, C{allContentReceived}); then the
        request is handed to C{Request.requestReceived} as there, which
        reads the form body and the query, routes and renders.  A body
        larger than the path's limit, or a head larger than the channel's
        limits, is left to the line parser, which refuses it.
        """
        simple = parse_simple_request(data, self.maxHeaders)
        if simple is None or simple.head_size > min(self.totalHeadersSize, self.MAX_LENGTH):
            return False
        length = simple.length
        if length:
            limit = self._limitFor(simple.target)
            if limit is not None and length > limit:
                return False
        self._cancelHeaderDeadline()
        request: Any = self.requestFactory(self, len(self.requests))
        self.requests.append(request)
        request.requestHeaders._rawHeaders = simple.headers
        # HTTPChannel.allHeadersReceived.
        self._bodyReceived = 0
        request.parseCookies()
        self._keepAlive(request, simple.persistent)
        request.gotLength(length)
        if length:
            request.handleContentChunk(simple.body)
        # HTTPChannel.allContentReceived.
        if self.timeOut:
            self._savedTimeOut = self.setTimeout(None)  # type: ignore[no-untyped-call]
        self._handlingRequest = True
        self.setRawMode()  # type: ignore[no-untyped-call]
        request.requestReceived(simple.method, simple.target, b"HTTP/1.1")
        return True

    def _keepAlive(self, request: Any, persistent: bool) -> None:
        """
        Decide, as C{allHeadersReceived} does with C{checkPersistence},
        whether the connection stays open after C{request}, an HTTP/1.1
        request read in one pass that C{persistent} says asked for it (no
        C{Connection: close}).  C{checkPersistence} is asked only when it
        could answer no: the request said close, or the server is shutting
        down; otherwise the connection stays persistent, as it is.
        """
        if not persistent or self.site.closing:  # type: ignore[attr-defined]
            self.persistent = self.checkPersistence(request, b"HTTP/1.1")

    def allHeadersReceived(self) -> None:
        """
        The headers are complete: stop the clock; refuse a request whose
        C{Host} or C{Content-Type} is wrong (L{_badHead}); refuse a body
        declared too large; count a chunked body's decoded bytes against
        the limit.
        """
        self._cancelHeaderDeadline()
        bad = self._badHead()
        if bad is not None:
            self._refuseAndClose(b"400 Bad Request", bad)
            # (Not 0: twisted.web would go on to hand the request over.)
            self.length = None
            return
        self._bodyReceived = 0
        if self.length != 0:
            # A declared length, or a chunked body (length None).
            limit = self._bodyLimit = self._limitFor(getattr(self, "_path", b""))
            if limit is not None and (
                limit == 0 or (self.length is not None and self.length > limit)
            ):
                self._refuseTooLarge()
                return
            if getattr(self, "_TimeoutMixin__timeoutCall", None) is None and self.timeOut:
                # The body arrives under the idle timeout (see connectionMade).
                self.setTimeout(self.timeOut)  # type: ignore[no-untyped-call]
            if self.length is None and limit is not None:
                self._countDecoded(limit)
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def _badHead(self) -> bytes | None:
        """
        Why the request whose headers are in is refused, or L{None}.

        RFC 9112 3.2: an HTTP/1.1 request without C{Host}, any request with
        more than one, or with a value L{split_host} refuses.  RFC 9112
        3.2.2: an absolute-form target's authority (C{http://host:port/a})
        stands for the C{Host} header, which becomes that authority (it
        may then be missing, not repeated); an authority without a host is
        refused.  RFC 9110 5.3: a C{Content-Type} given twice (where a
        proxy may read one and the app the other).
        """
        headers = self.requests[-1].requestHeaders
        hosts = headers.getRawHeaders(b"Host")
        if hosts is not None and len(hosts) > 1:
            return b"more than one Host header\n"
        types = headers.getRawHeaders(b"Content-Type")
        if types is not None and len(types) > 1:
            return b"more than one Content-Type header\n"
        authority = target_authority(getattr(self, "_path", None) or b"")
        if authority is not None:
            parts = split_host(authority)
            if parts is None or not parts[0]:
                return b"invalid host in the request target\n"
            headers.setRawHeaders(b"Host", [authority])
        elif hosts is None:
            if getattr(self, "_version", None) == b"HTTP/1.1":
                return b"missing Host header\n"
        elif split_host(hosts[0]) is None:
            return b"invalid Host header\n"
        return None

    def _countDecoded(self, limit: int) -> None:
        """
        Count the bytes of the chunked body being read as its decoder hands
        them on: past C{limit}, stop decoding (L{_BodyTooLargeError}), before
        they reach the request.
        """
        self._wireReceived = 0
        decoder: Any = self._transferDecoder
        deliver = decoder.dataCallback

        def counted(data: bytes) -> None:
            self._bodyReceived += len(data)
            if self._bodyReceived > limit:
                raise _BodyTooLargeError()
            deliver(data)

        decoder.dataCallback = counted

    def _refuseTooLarge(self, framing: bool = False) -> None:
        """
        Answer 413 and close: the request body is larger than its path's
        limit or (C{framing}) a chunked body's framing is larger than
        L{CHUNKED_FRAMING_ALLOWANCE} allows.
        """
        limit = self._bodyLimit
        if limit == self.maxRequestBody:
            if framing:
                self._refuseAndClose(
                    b"413 Content Too Large", b"chunked request body framing too large\n"
                )
            else:
                self._refuseAndClose(b"413 Content Too Large", b"request body too large\n")
            return
        # A path with its own limit (the stream, the publish endpoint)
        # answers in JSON, as those endpoints answer their other errors.
        error = f"body larger than {limit} bytes" if limit else "this path takes no request body"
        if framing:
            error = "chunked body framing too large"
        self._refuseAndClose(
            b"413 Content Too Large",
            json.dumps({"error": error}).encode("utf-8") + b"\n",
            b"application/json",
        )

    def _limitFor(self, uri: bytes) -> int | None:
        """The body limit of the path of C{uri}, routed as twisted.web routes it."""
        limit = self.maxRequestBody
        limits = self.bodyLimits
        if limits:
            # Routed by the origin form, as _StreamingRequest routes it.
            path = origin_form(uri).split(b"?", 1)[0]
            # Site.getResourceFor unquotes each segment the same way.
            segments = tuple(unquote_to_bytes(s) for s in path[1:].split(b"/"))
            special = limits.get(segments)
            if special is not None and (limit is None or special < limit):
                return special
        return limit

    def lineReceived(self, line: bytes) -> None:
        """Parse a request or header line, unless the connection was refused."""
        if self._refused:
            return
        if line and self._firstLine():
            # (twisted.web sets them once it has read this line: a refusal
            # before that logs no request line, rather than the last one.)
            self._path = None  # type: ignore[assignment]
            parts = line.split()
            version = line[line.rfind(b" ") + 1 :]
            if len(version) == 8 and version[:5] == b"HTTP/" and version[6:7] == b".":
                if version[5:6] != b"1":
                    if version[5:6].isdigit() and version[7:].isdigit():
                        # RFC 9110 15.6.6: another major version (HTTP/2
                        # and 3 have no request line).
                        self._refuseAndClose(
                            b"505 HTTP Version Not Supported",
                            b"HTTP version not supported\n",
                            line=parts if len(parts) == 3 else None,
                        )
                        return
                elif version[7:] in _LATER_MINORS:
                    # RFC 9110 6.2: a later HTTP/1.x is read as HTTP/1.1.
                    line = line[:-8] + b"HTTP/1.1"
                    parts = line.split()
            if len(parts) == 3 and not routable(parts[1], parts[0]):
                # twisted.web would route "page" as "/age".
                self._refuseAndClose(b"400 Bad Request", _BAD_TARGET, line=parts)
                return
        limit = self.totalHeadersSize
        if self._receivedHeaderSize + len(line) > limit and not self._firstLine():
            # Twisted answers a bare 400 here.
            self._refuseAndClose(
                b"431 Request Header Fields Too Large",
                b"request headers too large (more than %d bytes)\n" % (limit,),
            )
            return
        super().lineReceived(line)  # type: ignore[no-untyped-call]

    def _maybeChooseTransferDecoder(self, header: bytes, data: bytes) -> bool:
        """
        twisted.web's choice of a body decoder, but a C{Transfer-Encoding}
        other than C{chunked} (twisted.web takes C{identity} for none at
        all, so the body's bytes would be read as the next request), or any
        C{Transfer-Encoding} in an HTTP/1.0 request, is refused: C{400},
        then closed (RFC 9112, 6.1 and 6.3).
        """
        if header == b"Transfer-Encoding" and (
            data.lower() != b"chunked" or getattr(self, "_version", None) != b"HTTP/1.1"
        ):
            return self._failChooseTransferDecoder()
        return super()._maybeChooseTransferDecoder(header, data)  # type: ignore[no-any-return, no-untyped-call]

    def headerReceived(self, line: bytes) -> bool:
        """Store one header line, answering 431 past C{maxHeaders} (Twisted: a bare 400)."""
        if self._receivedHeaderCount >= self.maxHeaders:
            self._refuseAndClose(
                b"431 Request Header Fields Too Large",
                b"too many request headers (more than %d)\n" % (self.maxHeaders,),
            )
            return False
        return super().headerReceived(line)  # type: ignore[no-any-return, no-untyped-call]

    def _firstLine(self) -> bool:
        return bool(getattr(self, "_HTTPChannel__first_line", 0))

    def rawDataReceived(self, data: bytes) -> None:
        """
        Read a request body; count a chunked one against the limit as it
        is decoded, and its framing against L{CHUNKED_FRAMING_ALLOWANCE}.
        """
        if self._refused:
            return
        if self._bodyLimit is not None and self.length is None and not self._handlingRequest:
            # (Framing as of the reads before this one: each read is decoded
            # in full, whatever framing it holds.)
            framing = self._wireReceived - self._bodyReceived
            if framing > self._bodyReceived + CHUNKED_FRAMING_ALLOWANCE:
                self._refuseTooLarge(framing=True)
                return
            self._wireReceived += len(data)
            try:
                super().rawDataReceived(data)
            except _BodyTooLargeError:
                self._refuseTooLarge()
            return
        super().rawDataReceived(data)

    def requestDone(self, request: Any) -> None:
        """
        The answer to C{request} is out: on a server shutting down, close
        the connection rather than keep it alive for another request (see
        L{StreamSite.close_kept_alive}), also when the shutdown did not find
        it among the connections being read.  After the client's half-close
        (L{readConnectionLost}), the requests it sent whole before it are
        answered in turn, then the connection is closed.
        """
        if self.persistent and site_closing(self):
            self.persistent = False
        super().requestDone(request)  # type: ignore[no-untyped-call]
        if self._readClosed and not self._handlingRequest:
            # No whole request left: what remains (nothing, or part of
            # one) will never be completed.
            self._closeAfterAnswers()

    def __conform__(self, interface: Any) -> Any:
        """
        Adapt this connection to C{IHalfCloseableProtocol} while the
        client's half-close (its TCP C{FIN}, as C{nc -N}, C{shutdown(SHUT_WR)}
        in a script and some health checkers send after their request) can
        still be answered: a whole request is being handled, other than an
        event stream's, or an answer is still being written.  Twisted's
        transport asks when it reads the end of the client's data, and
        then calls L{readConnectionLost}.

        Otherwise it closes the connection at once, as for any client that
        goes away: between requests, in the middle of a request's head or
        body (which will never be complete, and is not handed to the
        application), and during an event stream, where the end of the
        client's data is how a closed tab or a stopped client is noticed
        (browsers never half-close an C{EventSource}; its reader is gone).
        """
        if interface is IHalfCloseableProtocol:
            if self._handlingRequest:
                if not isinstance(self._requestProducer, StreamClient):
                    return self
            elif unsent_bytes(self.transport):
                return self
        return None

    def readConnectionLost(self) -> None:
        """
        The client has sent all it will send (see L{__conform__}): answer
        the requests it sent whole, then close (see L{requestDone}); with
        no request being handled, close once what is written is sent.
        """
        self._readClosed = True
        if not self._handlingRequest:
            self._closeAfterAnswers()

    def writeConnectionLost(self) -> None:
        """This side's half-close is done (a refusal's, see L{_refuseAndClose})."""

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        """
        Register a response's producer (twisted.web's); an event stream
        opened after its client's half-close (while C{authorize} or a
        view ran) is closed as any other stream whose client has gone:
        the end of the client's data is read again.
        """
        super().registerProducer(producer, streaming)  # type: ignore[no-untyped-call]
        if self._readClosed and isinstance(producer, StreamClient):
            self._networkProducer.resumeProducing()

    def _closeAfterAnswers(self) -> None:
        """Close the connection once what is written is sent: the client sends nothing more."""
        self._cancelHeaderDeadline()
        transport = self.transport
        if transport is not None and not transport.disconnecting:  # type: ignore[attr-defined]
            self.loseConnection()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget the clock."""
        self._cancelHeaderDeadline()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def checkPersistence(self, request: Any, version: bytes) -> bool:
        """
        Whether the connection stays open after C{request}'s answer
        (twisted.web asks once its headers are in): not once the site is
        closing (server shutdown), and the answer then says C{Connection:
        close}; nor after an HTTP/1.1 request whose C{Connection} options
        include C{close}, in any line or place (L{connection_closes}:
        twisted.web looks among the first line's space-separated words only,
        and kept C{Connection: keep-alive,close} open).
        """
        if site_closing(self) or (
            version == b"HTTP/1.1"
            and connection_closes(request.requestHeaders.getRawHeaders(b"Connection"))
        ):
            request.responseHeaders.setRawHeaders(b"Connection", [b"close"])
            return False
        return super().checkPersistence(request, version)  # type: ignore[no-any-return, no-untyped-call]

    def _betweenRequests(self) -> bool:
        """
        Whether this connection waits for its next request: none in
        flight, no byte of the next one received, and (when a header
        deadline applies, whose clock runs from a new connection's start)
        one answered already.
        """
        return bool(
            not self.requests
            and not self._headerDeadline
            and not self._refused
            and self.line_mode
            and not self._buffer
            and self._receivedHeaderCount == 0
            and getattr(self, "_HTTPChannel__first_line", 1)
        )

    def _armHeaderDeadline(self) -> None:
        deadlines = self._deadlines
        if deadlines is not None and not self._headerDeadline:
            self._headerDeadline = True
            deadlines.add(self)

    def _cancelHeaderDeadline(self) -> None:
        if self._headerDeadline:
            self._headerDeadline = False
            deadlines = self._deadlines
            assert deadlines is not None
            deadlines.discard(self)

    def _headersTooSlow(self) -> None:
        self._headerDeadline = False
        transport = self.transport
        if transport is None:  # pragma: no cover - already gone
            return
        if getattr(transport, "negotiatedProtocol", None) == b"h2":
            return  # HTTP/2 took over this connection; it has its own limits.
        self.log.info(
            "closing {peer}: request headers not complete after {timeout}s",
            peer=str(transport.getPeer()),
            timeout=self.headerTimeout,
        )
        # A connection that sent nothing (a browser's preconnect) asked for
        # nothing: its 408 has no access log line.
        silent = self._firstLine() and not self._buffer
        self._refuseAndClose(
            b"408 Request Timeout", b"request headers took too long\n", logged=not silent
        )

    def lineLengthExceeded(self, line: bytes) -> None:
        """Answer an over-long request line (414) or header line (431), then close."""
        if self._firstLine():
            self._refuseAndClose(b"414 URI Too Long", b"request line too long\n")
        else:
            self._refuseAndClose(
                b"431 Request Header Fields Too Large", b"request header line too long\n"
            )

    def _refuseAndClose(
        self,
        status: bytes,
        message: bytes,
        content_type: bytes = b"text/plain; charset=utf-8",
        line: list[bytes] | None = None,
        logged: bool = True,
    ) -> None:
        """
        Send a final answer and close, letting the client read it: ignore
        whatever else it sends, half-close so it sees the end, and abort if it
        does not go away.  The answer has its access log line, with the
        request line C{line} (method, target, version) when it is not the
        one read.
        """
        if self._refused:
            return
        self._refused = True
        if logged:
            self._logRefusal(int(status[:3]), len(message), line)
        self._cancelHeaderDeadline()
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        self.dataReceived = _ignore  # type: ignore[method-assign]
        transport = self.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 %s\r\nConnection: close\r\n"
            b"Content-Type: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (status, content_type, len(message), message)
        )
        lose_write = getattr(transport, "loseWriteConnection", None)
        if lose_write is not None and not ISSLTransport.providedBy(transport):
            lose_write()
        else:
            # TLS closes with its close_notify instead: a TCP half-close
            # under it has Twisted's TLS layer, at the client's next bytes,
            # close the connection in the middle of its read and then write
            # to it ("'NoneType' object has no attribute 'bio_read'", no
            # answer sent).
            transport.loseConnection()
        self.callLater(2.0, _abort, transport)  # type: ignore[no-untyped-call, call-arg]

    def _respondToBadRequestAndDisconnect(self) -> None:
        """twisted.web's bare 400 for a request it cannot read, with its access log line."""
        if not self._refused:
            self._logRefusal(400, 0)
        super()._respondToBadRequestAndDisconnect()  # type: ignore[no-untyped-call]

    def _logRefusal(self, code: int, length: int, line: list[bytes] | None = None) -> None:
        """Log a request the server answered itself, refusing it before the app saw it."""
        log = getattr(getattr(self, "site", None), "log", None)
        if log is not None:
            path = getattr(self, "_path", None)
            if line is None and path is not None and not self._firstLine():
                line = [self._command, path, self._version]
            log(_Refused(self, code, length, line))


def _port_host(port: Any) -> Any:
    """
    The local address of every connection C{port} accepts, if it listens
    on one IPv4 address (every connection accepted there has that address
    and the port's number); L{None} on every address (C{0.0.0.0}, the
    default), where it depends on the connection, and for IPv6 (scopes).
    """
    listening = getattr(port, "socket", None)
    cached = port.__dict__.get("_wsgiSseHost")
    if cached is not None and cached[0] is listening:
        return cached[1]
    # (Made again for a port listening anew: its number may have changed.)
    found = None
    if listening is not None and getattr(port, "addressFamily", None) == socket.AF_INET:
        try:
            one = not ipaddress.IPv4Address(port.interface).is_unspecified
        except ValueError:
            one = False
        if one:
            found = port.getHost()
    port._wsgiSseHost = (listening, found)
    return found


class _Refused:
    """
    A request refused before it was read in full, as an access log
    formatter reads a request: its request line (C{-} where none was read),
    its headers read so far, the answer's status and body length.
    """

    def __init__(
        self, channel: http.HTTPChannel, code: int, length: int, line: list[bytes] | None
    ) -> None:
        self.channel = channel
        self.method, self.uri, self.clientproto = line if line is not None else (b"-", b"-", b"-")
        self.code = code
        self.sentLength = length
        requests = channel.requests
        self.requestHeaders = requests[-1].requestHeaders if requests else Headers()

    def getClientAddress(self) -> Any:
        """The client's address."""
        return self.channel.getPeer()

    def getHeader(self, key: bytes) -> bytes | None:
        """The last value of a request header read, or L{None}."""
        values = self.requestHeaders.getRawHeaders(key)
        return values[-1] if values else None


class _Deadlines:
    """
    The header deadlines of one site's connections, under one timer.

    Every connection gets the same time, so the connections waiting for
    their headers, kept in the order their clocks started, are also in the
    order their deadlines fall: one timer, set for the earliest, serves
    them all, and a connection whose headers arrive only leaves the queue
    (no timer of its own to schedule and cancel, which a reconnect storm
    would do thousands of times a second).

    @ivar timeout: seconds a connection has to send its request headers.
    """

    __slots__ = ("_clock", "_due", "_timer", "timeout")

    def __init__(self, clock: Any, timeout: float) -> None:
        self._clock = clock
        self.timeout = timeout
        self._due: dict[_HeaderDeadlineChannel, float] = {}
        self._timer: IDelayedCall | None = None

    def add(self, channel: _HeaderDeadlineChannel) -> None:
        """Start C{channel}'s clock: it has C{timeout} seconds from now."""
        self._due[channel] = self._clock.seconds() + self.timeout
        if self._timer is None:
            self._timer = self._clock.callLater(self.timeout, self._fire)

    def discard(self, channel: _HeaderDeadlineChannel) -> None:
        """Stop C{channel}'s clock (its headers are in, or it is gone)."""
        self._due.pop(channel, None)

    def _fire(self) -> None:
        self._timer = None
        due = self._due
        now = self._clock.seconds()
        while due:
            channel, when = next(iter(due.items()))
            if when > now + 1e-6:
                self._timer = self._clock.callLater(when - now, self._fire)
                return
            del due[channel]
            try:
                channel._headersTooSlow()
            except Exception:  # noqa: BLE001 - logged; the others still time out
                # One connection's failure leaves the others' deadlines.
                channel.log.failure("closing a connection at its header deadline failed")


def _segments(path: str) -> tuple[bytes, ...]:
    if not path.startswith("/"):
        raise ValueError(f"body_limits paths must start with '/', got {path!r}")
    return tuple(s.encode("utf-8") for s in path[1:].split("/"))


def _lean_path(path: str | None) -> bytes | None:
    """The stream path as a simple GET names it, or L{None} if it cannot be read in one pass."""
    if path is None:
        return None
    if not path.startswith("/"):
        raise ValueError(f"stream_path must start with '/', got {path!r}")
    raw = path.encode("utf-8")
    if any(c <= 0x20 or c >= 0x7F or c in b"%?#" for c in raw):
        return None
    return raw


def _ignore(data: bytes) -> None:
    pass


def _abort(transport: Any) -> None:
    if getattr(transport, "connected", False):
        transport.abortConnection()


class StreamSite(Site):
    """
    A C{Site} with a deadline for request headers and a finite idle timeout.

    @param resource: the root resource.
    @param header_timeout: seconds a client has to send a request line and
        its headers (C{None} or C{0}: no deadline).
    @param idle_timeout: seconds a connection may stay silent between
        requests; an open event stream is never idle in this sense.
    @param max_request_body: bytes a request body may have (C{None}: no
        limit); a larger one is answered C{413} before it is read.
    @param access_log: log a line per request (twisted.web's combined log
        format), as C{twistd web} does; C{False} leaves that to the reverse
        proxy in front.
    @param body_limits: smaller limits for some paths (C{{"/sse": 0}}: no
        body at all), matched against the whole path as twisted.web routes
        it (segments unquoted, no query string).
    @param stream_path: the event stream's path (C{"/sse"}): a plain
        C{GET} of it that arrives whole in one read is read in one pass
        instead of line by line, with the same outcome (see
        L{wsgi_sse._lean}).  A path with other than printable ASCII or
        with a C{%} is always read line by line.
    """

    _logger = Logger()

    def __init__(
        self,
        resource: IResource,
        *,
        header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_request_body: int | None = DEFAULT_MAX_REQUEST_BODY,
        access_log: bool = True,
        body_limits: Mapping[str, int] | None = None,
        stream_path: str | None = None,
        **kwargs: Any,
    ) -> None:
        if header_timeout is not None:
            check_seconds("header_timeout", header_timeout)
        if idle_timeout is not None:
            check_seconds("idle_timeout", idle_timeout, positive=True)
        # Bodies reach resources unparsed (see the module docstring).
        kwargs.setdefault("parsePOSTFormSubmission", False)
        super().__init__(resource, timeout=idle_timeout, **kwargs)  # type: ignore[no-untyped-call]
        if max_request_body is not None and max_request_body < 0:
            raise ValueError("max_request_body must not be negative")
        self.header_timeout = header_timeout
        self.access_log = access_log
        self.max_request_body = max_request_body
        self.body_limits: dict[tuple[bytes, ...], int] = {}
        for path, limit in (body_limits or {}).items():
            if limit < 0:
                raise ValueError(f"the body limit of {path} must not be negative")
            self.body_limits[_segments(path)] = limit
        if self._logFormatter is http.combinedLogFormatter:
            self._logFormatter = combined_line  # the same line, in a third of the time
        else:
            self._logFormatter = redacting(self._logFormatter)
        self.stream_path = stream_path
        self._lean_path = _lean_path(stream_path)
        self._lean_requests = True
        if "requestFactory" not in kwargs:
            self.requestFactory = _StreamingRequest
        self.h2_connections: set[Any] = set()
        """The open HTTP/2 connections (see L{go_away})."""
        self.closing = False
        """Whether the server is shutting down (see L{close_kept_alive})."""

    def close_kept_alive(self) -> int:
        """
        Server shutdown: close this site's HTTP/1.1 connections that are
        kept alive between requests now, and have every other one close
        once its answer is out (C{Connection: close}): the requests in
        flight, and any request read from now on.  A browser then sends its
        next request on a new connection, to whatever listens by then,
        instead of on one the process drops when it exits.

        A connection that has not sent its first request yet is left to it
        (unless C{header_timeout} is off: it then looks the same as one kept
        alive, and is closed too).  Call in the reactor thread.

        @return: the number of connections closed now.
        """
        self.closing = True
        get_readers = getattr(self.reactor, "getReaders", None)
        if get_readers is None:  # pragma: no cover - a reactor without IReactorFDSet
            return 0
        closed = 0
        for selectable in get_readers():
            channel = _http11_channel(getattr(selectable, "protocol", None))
            if channel is None or getattr(channel, "site", None) is not self:
                continue
            transport = channel.transport
            if transport is None or getattr(transport, "disconnecting", False):
                continue
            if channel.requests:
                for request in channel.requests:
                    close_after_response(request)
            elif channel._betweenRequests():
                channel.loseConnection()  # type: ignore[no-untyped-call]
                closed += 1
        if closed:
            self._logger.info("closed {count} idle HTTP/1.1 connection(s)", count=closed)
        return closed

    def go_away(self, timeout: float) -> Deferred[None]:
        """
        Tell every HTTP/2 connection that the server is going away (a
        C{GOAWAY} frame): its client opens no new stream on it, and it is
        closed once its open streams have ended, or aborted after
        C{timeout} seconds (server shutdown).

        HTTP/1.1 connections need nothing of the kind: a stream's response
        ends with its connection (see L{Streams.close
        <wsgi_sse._streams.Streams.close>}).

        @return: a Deferred firing once every one of them is closed.
        """
        closed = [c.go_away(timeout) for c in tuple(self.h2_connections)]
        return gatherResults(closed).addCallback(lambda _: None)

    def log(self, request: Any) -> None:
        """Log a finished request (unless C{access_log} is off).  Reactor thread."""
        if self.access_log:
            log_file = self._logFile
            if log_file is not None:
                log_line(log_file, self._logFormatter(self._logDateTime, request))

    def protocol(self) -> Any:
        """Build one connection's channel (twisted.web calls this)."""
        channel_class = self._channelClass()
        if H2Connection is None:
            return channel_class()
        # The wrapper switches to HTTP/2 when TLS negotiates it.
        return self._negotiatingClass(channel_class)(channel_class())

    def buildProtocol(self, addr: Any) -> Any:
        """
        Build one connection's channel, its settings class attributes.

        twisted.web's own C{buildProtocol} sets C{factory}, C{site},
        C{requestFactory} and C{callLater} on every channel; here the
        channel's class carries them (see L{_share_keys} for why).
        """
        return self.protocol()

    def _classSettings(self) -> dict[str, Any]:
        """The class attributes of this site's HTTP/1.1 and HTTP/2 connection classes."""
        return {
            "__module__": __name__,
            "headerTimeout": self.header_timeout,
            "maxRequestBody": self.max_request_body,
            "bodyLimits": dict(self.body_limits),
            "timeOut": self.timeOut,
            "factory": self,
            "site": self,
            "requestFactory": self.requestFactory,
            "callLater": staticmethod(self.reactor.callLater),
        }

    def _channelClass(self) -> type[_HeaderDeadlineChannel]:
        # Built for every connection: compared with the cached class's.
        settings = (
            self.header_timeout,
            self.max_request_body,
            self.body_limits,
            self.timeOut,
            self.requestFactory,
            self.reactor,
            self._lean_path,
            self._lean_requests,
        )
        cached = self.__dict__.get("_channelClassCache")
        if cached is not None and cached[0] == settings:
            return cached[1]  # type: ignore[no-any-return]
        settings = (*settings[:2], dict(self.body_limits), *settings[3:])
        cls = type(
            "_HeaderDeadlineChannel",
            (_HeaderDeadlineChannel,),
            {
                **self._classSettings(),
                # (Only for this module's request class: another one's
                # requestReceived or process would be skipped.)
                "leanPath": (self._lean_path if self.requestFactory is _StreamingRequest else None),
                "leanRequests": (self._lean_requests and self.requestFactory is _StreamingRequest),
                "_deadlines": (
                    _Deadlines(self.reactor, self.header_timeout) if self.header_timeout else None
                ),
            },
        )
        _share_keys(cls, _CHANNEL_ATTRIBUTES)
        self._channelClassCache = (settings, cls)
        return cls

    def _negotiatingClass(
        self, channel_class: type[_HeaderDeadlineChannel] | None = None
    ) -> type[Any]:
        """
        The protocol wrapper of this site's connections (its settings class
        attributes, like L{_channelClass}): HTTP/1.1 until TLS negotiates
        HTTP/2 (ALPN), then an L{_StreamH2Connection} with the same limits.
        """
        if channel_class is None:
            channel_class = self._channelClass()
        cached = self.__dict__.get("_negotiatingClassCache")
        if cached is not None and cached[0] is channel_class:
            return cached[1]  # type: ignore[no-any-return]
        h2_class = type(
            "_StreamH2Connection",
            (_StreamH2Connection,),
            {**self._classSettings(), "reactor": self.reactor},
        )
        cls = type(
            "_NegotiatingChannel",
            (_NegotiatingChannel,),
            {"__module__": __name__, "h2Class": h2_class},
        )
        self._negotiatingClassCache = (channel_class, cls)
        return cls


# Every attribute name twisted.web's HTTPChannel (and its mixins and
# _HeaderDeadlineChannel) set on an instance while it serves page views and
# streams (Twisted 26.10), besides those the channel class carries.
_CHANNEL_ATTRIBUTES = (
    "requests",
    "_handlingRequest",
    "_dataBuffer",
    "_transferDecoder",
    "connected",
    "transport",
    "timeOut",
    "_TimeoutMixin__timeoutCall",
    "_networkProducer",
    "_headerDeadline",
    "_busyReceiving",
    "_buffer",
    "_receivedHeaderSize",
    "_HTTPChannel__first_line",
    "_command",
    "_path",
    "_version",
    "_HTTPChannel__header",
    "_receivedHeaderCount",
    "persistent",
    "length",
    "_bodyReceived",
    "_bodyLimit",
    "_savedTimeOut",
    "line_mode",
    "_requestProducer",
    "_requestProducerStreaming",
)

# The attribute names of a streaming request (Twisted 26.10); page views add
# two more, which then cost those short-lived requests a private table.
_REQUEST_ATTRIBUTES = (
    "notifications",
    "channel",
    "client",
    "host",
    "requestHeaders",
    "received_cookies",
    "responseHeaders",
    "cookies",
    "transport",
    "queued",
    "_parsePOSTFormSubmission",
    "_adapterCache",
    "content",
    "args",
    "method",
    "uri",
    "clientproto",
    "path",
    "site",
    "prepath",
    "postpath",
    "sitepath",
    "code",
    "code_message",
    "streamingProducer",
    "producer",
    "startedWriting",
    "chunked",
    "sentLength",
)


def _share_keys(cls: type[Any], names: tuple[str, ...]) -> None:
    """
    Memory: put C{names} into the key table C{cls}'s instances share, before
    any real instance exists.

    CPython keeps the attributes of a class's instances as values over one
    key table shared by the class, for at most 29 names.  twisted.web's
    channel and request objects set most attributes lazily and delete some
    per request; once an instance's attributes have become a real dict that
    way, a name not yet in the shared table gives that instance a private
    table of 1.5 KiB instead of about 0.3 KiB.  Which names reach the table
    first depends on what the server served first, and a page view's names
    crowd out a stream's.  A throwaway instance naming everything a
    streaming connection uses, first, keeps every stream's objects small:
    about 2.5 KiB less per open stream.
    """
    probe = object.__new__(cls)
    for name in names:
        object.__setattr__(probe, name, None)


def _http11_channel(protocol: Any) -> _HeaderDeadlineChannel | None:
    """The HTTP/1.1 channel behind a connection (TLS, the h2 switch unwrapped), or None."""
    wrapped = getattr(protocol, "wrappedProtocol", None)  # TLS
    if wrapped is not None:
        protocol = wrapped
    if isinstance(protocol, http._GenericHTTPChannelProtocol):
        protocol = protocol._channel
    return protocol if isinstance(protocol, _HeaderDeadlineChannel) else None


class _NegotiatingChannel(http._GenericHTTPChannelProtocol):
    """
    twisted.web's HTTP/1.1-or-HTTP/2 wrapper, switching to this site's
    L{_StreamH2Connection} when TLS negotiates C{h2}.

    twisted.web's own switch copies the site's settings from fields its
    C{Site.buildProtocol} sets on the wrapper; here the classes carry them.
    """

    h2Class: type[Any]

    def __conform__(self, interface: Any) -> Any:
        """
        Adapt to C{IHalfCloseableProtocol} as the channel in use does (the
        HTTP/1.1 one: see L{_HeaderDeadlineChannel.__conform__}; HTTP/2's
        does not, and the connection is closed at the client's half-close,
        as twisted.web does).
        """
        if interface is IHalfCloseableProtocol:
            return interface(self._channel, None)
        return None

    def dataReceived(self, data: bytes) -> None:
        """Choose the protocol at the first bytes, then pass them on."""
        if self._negotiatedProtocol is None:
            old: Any = self._channel
            negotiated = getattr(old.transport, "negotiatedProtocol", None) or b"http/1.1"
            if negotiated == b"h2":
                # As twisted.web does it, with this site's settings.
                network_producer = old._networkProducer
                network_producer.unregisterProducer()
                old.setTimeout(None)
                old._cancelHeaderDeadline()
                transport = old.transport
                self._channel = self.h2Class(self.h2Class.reactor)
                self._channel.makeConnection(transport)
                network_producer.registerProducer(self._channel, True)
            else:
                transport = old.transport
                if type(transport) in PLAIN_SOCKET_TRANSPORTS and transport.protocol is self:
                    # Plain TCP never negotiates: from now on the channel
                    # takes its transport's calls itself (one object less
                    # per connection, and no forwarding).
                    transport.protocol = old
            self._negotiatedProtocol = negotiated  # type: ignore[assignment]
        self._channel.dataReceived(data)


_H2Base: Any = H2Connection if H2Connection is not None else TimeoutMixin


class _StreamH2Connection(_H2Base):  # type: ignore[misc]
    """
    twisted.web's HTTP/2 connection, with the limits of HTTP/1.1 here.

    - Header deadline: the first request must arrive in full within
      C{headerTimeout} of the connection's start.
    - Idle timeout: only requests, request bodies and response data count
      as activity.  twisted.web also counts every frame the client sends,
      so a client sending nothing but PINGs or WINDOW_UPDATEs would hold
      the connection for ever; an open event stream keeps it alive with
      its heartbeats.
    - A request body over C{maxRequestBody}, or over its path's own limit
      (C{bodyLimits}: none at all on the event stream), has its stream
      reset (a declared length at once, before the body is read).
    - Each stream's unsent data is capped at L{STREAM_BUFFER} bytes, like a
      TCP connection's write buffer: past it the stream's producer is
      paused (an event stream then holds its events and counts them
      against C{max_buffer}), whatever flow-control window the client
      grants.  twisted.web alone queues up to the client's window, which
      the client chooses (up to 2 GiB per stream).
    - A stream with data but no flow-control window leaves the sending loop
      until the client opens its window (twisted.web goes round the loop
      on it without sending, at full CPU, meanwhile).
    - At shutdown, L{go_away} sends C{GOAWAY} and closes the connection
      once its streams have ended (twisted.web: none, the connection is
      dropped when the process exits).
    """

    STREAM_BUFFER = 64 * 1024

    # Seconds between the GOAWAY of a timed-out connection and its abort:
    # the TLS layer waits for the producer (this connection) before it
    # closes, so the abort is what closes it.  Twisted's default is 15.
    abortTimeout = 2

    log = Logger()
    headerTimeout: float | None = None
    maxRequestBody: int | None = None
    bodyLimits: Mapping[tuple[bytes, ...], int] = {}
    reactor: Any = None
    _receiving = False
    _headerDeadline: IDelayedCall | None = None
    _goingAway: Deferred[None] | None = None
    _lastStream = 0
    _abortingCall: IDelayedCall | None = None
    _writingTo: int | None = None
    _connectionWindowOpened = False
    _sendingDeferred: Deferred[Any] | None  # twisted.web's: wakes its sending loop

    def __init__(self, reactor: Any = None) -> None:
        super().__init__(reactor)
        self._overfull: set[int] = set()
        self._abortAfterWrite: set[int] = set()
        # Streams with data to send and no flow-control window: out of the
        # sending loop until the client opens their window.
        self._windowBlocked: set[int] = set()
        self._windowsOpened = False
        self.priority = _WindowedPriority(self._maySend)
        self._bodyReceived: dict[int, int] = {}
        self._bodyLimits: dict[int, int] = {}

    def connectionMade(self) -> None:
        """Start the clock for the first request."""
        super().connectionMade()
        if self.headerTimeout:
            self._headerDeadline = self.callLater(self.headerTimeout, self._headersTooSlow)
        site = getattr(self, "site", None)
        if site is not None:
            site.h2_connections.add(self)

    def go_away(self, timeout: float) -> Deferred[None]:
        """
        Send C{GOAWAY} (no error; its last stream is the last one the client
        opened, which this server still answers), then close once every
        open stream has ended, or abort after C{timeout} seconds.  Streams
        the client opens meanwhile (it had not read the C{GOAWAY} yet) are
        refused (C{REFUSED_STREAM}: the client retries them elsewhere).

        @return: a Deferred firing once the connection is closed.
        """
        if self._goingAway is not None or self.transport is None:
            return succeed(None)
        done: Deferred[None] = Deferred()
        self._goingAway = done
        self._lastStream = self.conn.highest_inbound_stream_id
        # h2's own close_connection() would end every stream at once (its
        # connection is CLOSED once a GOAWAY is sent): the frame is written
        # here, after what h2 has queued, and h2 keeps the streams open.
        frame = GoAwayFrame(0)
        frame.last_stream_id = self._lastStream
        frame.error_code = ErrorCodes.NO_ERROR
        data = self.conn.data_to_send() + frame.serialize()
        if self._consumerBlocked is None and not self._bufferedControlFrames:
            self.transport.write(data)
        else:  # behind the control frames twisted.web holds (in order)
            self._bufferedControlFrames.append(data)
            self._bufferedControlFrameBytes += len(data)
        if self._abortingCall is None:
            self._abortingCall = self.callLater(timeout, self.forceAbortClient)
        if not self.streams:
            self._close()
        return done

    def _close(self) -> None:
        """The last stream has ended after GOAWAY: close (h2's GOAWAY, then the connection)."""
        self.conn.close_connection(last_stream_id=self._lastStream)
        if self._tryToWriteControlData():
            # This connection is the TLS transport's producer: TLS closes
            # only once it is unregistered (nothing is left to produce).
            self.transport.unregisterProducer()
            self.transport.loseConnection()

    def _headersTooSlow(self) -> None:
        self._headerDeadline = None
        transport = self.transport
        self.log.info(
            "closing HTTP/2 connection {peer}: no request after {timeout}s",
            peer=str(transport.getPeer()) if transport is not None else "?",
            timeout=self.headerTimeout,
        )
        self.timeoutConnection()

    def dataReceived(self, data: bytes) -> None:
        """
        Parse frames; only requests (not every frame) restart the idle
        clock.  Streams whose window the frames opened go back to the
        sending loop, once per read.

        A connection done with (a connection error, the client's
        C{GOAWAY}) reads nothing more and is closed: twisted.web leaves it
        open until the idle timeout, this connection still the TLS
        transport's producer, and hands each read to h2, which keeps it.
        """
        if not self._stillProducing:
            return
        self._receiving = True
        initial_window = self.conn.remote_settings.initial_window_size
        try:
            super().dataReceived(data)
        finally:
            self._receiving = False
        if not self._stillProducing:
            self._closeAfterError()
            return
        if self._connectionWindowOpened:
            self._connectionWindowOpened = False
            self._wakeStreams()
        if self._windowsOpened or self.conn.remote_settings.initial_window_size > initial_window:
            self._windowsOpened = False
            self._windowOpened()

    def _terminate(self, reason: Failure) -> None:
        """
        A connection error: done with the connection, its C{GOAWAY} written
        or, behind a client that does not read, queued (twisted.web then
        leaves the connection as it is, reading on).
        """
        self._tryToWriteControlData()
        self.connectionLost(reason, _cancelTimeouts=False)

    def _closeAfterError(self) -> None:
        """
        Close a connection twisted.web is done with (its C{GOAWAY} queued),
        and abort it if the client has not let it close C{abortTimeout}
        seconds later.
        """
        transport = self.transport
        if transport is None or not transport.connected:
            return
        # This connection is the TLS transport's producer: TLS closes only
        # once it is unregistered.
        transport.unregisterProducer()
        transport.loseConnection()
        if self._abortingCall is None and self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self.forceAbortClient)

    def _handleWindowUpdate(self, event: Any) -> None:
        self._windowsOpened = True
        if not event.stream_id:
            # The connection's window: every stream is woken once, after the
            # read (twisted.web wakes them all for each frame: a read full of
            # WINDOW_UPDATEs then costs frames times streams).
            self._connectionWindowOpened = True
            return
        super()._handleWindowUpdate(event)

    def _wakeStreams(self) -> None:
        """What twisted.web does for a WINDOW_UPDATE of the connection, once."""
        for stream in tuple(self.streams.values()):
            stream.windowUpdated()
            if self._outboundStreamQueues.get(stream.streamID):
                self.priority.unblock(stream.streamID)

    def _maySend(self, stream_id: int) -> bool:
        """
        Whether a stream the sending loop chose can send now; if not (data,
        and no window for it), it leaves the loop until its window opens.

        twisted.web keeps such a stream in the loop, which then goes round
        without sending anything, as fast as the reactor turns, for as long
        as the client does not open the window.
        """
        queue = self._outboundStreamQueues.get(stream_id)
        if not queue or queue[0] is _END_STREAM:
            return True
        if self.conn.local_flow_control_window(stream_id) > 0:
            return True
        self._windowBlocked.add(stream_id)
        return False

    def _windowOpened(self) -> None:
        """Put the streams whose window opened back in the sending loop, and run it."""
        for stream_id in tuple(self._windowBlocked):
            if stream_id not in self.streams:
                self._windowBlocked.discard(stream_id)
            elif self.conn.local_flow_control_window(stream_id) > 0:
                self._windowBlocked.discard(stream_id)
                if self._outboundStreamQueues[stream_id]:  # (else it stays blocked)
                    self.priority.unblock(stream_id)
        # twisted.web wakes the loop up on new data only.
        waiting = self._sendingDeferred
        if waiting is not None:
            self._sendingDeferred = None
            waiting.callback(None)

    def resetTimeout(self) -> None:
        """Restart the idle clock, unless called for a mere received frame."""
        if not self._receiving:
            super().resetTimeout()

    def _requestReceived(self, event: Any) -> None:
        if self._goingAway is not None and event.stream_id > self._lastStream:
            # Opened after the GOAWAY was sent: not answered here.
            self.conn.reset_stream(event.stream_id, ErrorCodes.REFUSED_STREAM)
            self._tryToWriteControlData()
            return
        deadline, self._headerDeadline = self._headerDeadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        TimeoutMixin.resetTimeout(self)
        if self._headersTooLarge(event) or self._badHead(event):
            return
        super()._requestReceived(event)
        headers = dict(event.headers)
        # The limit of the path, as for HTTP/1.1 (body_limits).
        limit = _HeaderDeadlineChannel._limitFor(self, headers.get(b":path", b"/"))
        if limit is not None:
            self._bodyLimits[event.stream_id] = limit
            length = headers.get(b"content-length", b"")
            if length.isdigit() and int(length) > limit:
                self._bodyTooLarge(event.stream_id)

    def _headersTooLarge(self, event: Any) -> bool:
        """
        Answer as over HTTP/1.1 a request with more headers, or more bytes
        of them (each counted as its C{name: value} line), than an HTTP/1.1
        request may have (twisted.web's C{maxHeaders} and
        C{totalHeadersSize}: C{431}), or pseudo-headers (method, path, ...)
        longer than its request line may be (C{MAX_LENGTH}: C{414}): the
        app never sees it.  h2's own limit alone is 64 KiB of headers, in
        any number.
        """
        count = size = line = 0
        for name, value in event.headers:
            if name[:1] == b":":
                line += len(value) + 1
            else:
                count += 1
                size += len(name) + len(value) + 2
        channel = _HeaderDeadlineChannel
        if line > channel.MAX_LENGTH:
            # (The request line's limit: its method and target.)
            status, body = b"414", b"request line too long\n"
        elif count > channel.maxHeaders:
            status = b"431"
            body = b"too many request headers (more than %d)\n" % (channel.maxHeaders,)
        elif size > channel.totalHeadersSize:
            status = b"431"
            limit = channel.totalHeadersSize
            body = b"request headers too large (more than %d bytes)\n" % (limit,)
        else:
            return False
        self._answerAndEnd(event, status, body)
        return True

    def _badHead(self, event: Any) -> bool:
        """
        Answer C{400}, as over HTTP/1.1, a request whose C{:authority} (or
        C{Host}) is not C{host[:port]} (L{split_host}) or with two
        C{Content-Type} fields; the app never sees it.  (h2 itself refuses
        a request without either C{:authority} or C{Host}, with several
        C{Host} fields, or with both and different.)  A C{Host} field the
        same as C{:authority} is left out: the request has one C{Host}.
        """
        headers = event.headers
        authority = host = None
        types = 0
        for name, value in headers:
            if name == b":authority":
                authority = value
            elif name == b"host":
                host = value
            elif name == b"content-type":
                types += 1
        value = authority if authority is not None else host
        if types > 1:
            body = b"more than one Content-Type header\n"
        elif value is not None and split_host(value) is None:
            body = b"invalid Host header\n"
        else:
            if authority is not None and host is not None:
                event.headers = [(n, v) for n, v in headers if n != b"host"]
            return False
        self._answerAndEnd(event, b"400", body)
        return True

    def _answerAndEnd(self, event: Any, status: bytes, body: bytes) -> None:
        """Answer the request of C{event} with C{status} and C{body} (text), and end its stream."""
        stream_id = event.stream_id
        head = [
            (b":status", status),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        if self.conn.local_flow_control_window(stream_id) < len(body):
            # (No window for the answer: the stream is refused instead.)
            self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            self._tryToWriteControlData()
            return
        self.conn.send_headers(stream_id, head)
        self.conn.send_data(stream_id, body, end_stream=True)
        if not event.stream_ended:
            # A body would follow, for a request that is not handled.
            self.conn.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        self._tryToWriteControlData()

    def _requestDataReceived(self, event: Any) -> None:
        TimeoutMixin.resetTimeout(self)
        stream_id = event.stream_id
        if stream_id not in self.streams:
            # Reset here earlier in the same read: count the bytes toward
            # the connection's window only.
            if event.flow_controlled_length:
                self.conn.increment_flow_control_window(event.flow_controlled_length)
            return
        limit = self._bodyLimits.get(stream_id)
        if limit is not None:
            received = self._bodyReceived.get(stream_id, 0) + len(event.data)
            self._bodyReceived[stream_id] = received
            if received > limit:
                # The bytes still count toward the connection's window.
                self.conn.increment_flow_control_window(event.flow_controlled_length)
                self._bodyTooLarge(stream_id)
                return
        super()._requestDataReceived(event)

    def _requestEnded(self, event: Any) -> None:
        if event.stream_id in self.streams:  # not reset here meanwhile
            super()._requestEnded(event)

    def _requestAborted(self, event: Any) -> None:
        if event.stream_id in self.streams:  # not reset here meanwhile
            super()._requestAborted(event)

    def _bodyTooLarge(self, stream_id: int) -> None:
        """Reset a stream whose request body is over its path's limit."""
        self.log.info(
            "resetting HTTP/2 stream {stream} of {peer}: request body over {limit} bytes",
            stream=stream_id,
            peer=str(self.transport.getPeer()) if self.transport is not None else "?",
            limit=self._bodyLimits.get(stream_id),
        )
        stream = self.streams.get(stream_id)
        if stream is not None:
            # The request (never dispatched) lets go of its spooled body.
            stream.connectionLost(Failure(ConnectionAborted("request body too large")))
        self.abortRequest(stream_id)

    def _requestDone(self, stream_id: int) -> None:
        self._abortAfterWrite.discard(stream_id)
        self._windowBlocked.discard(stream_id)
        self._bodyReceived.pop(stream_id, None)
        self._bodyLimits.pop(stream_id, None)
        super()._requestDone(stream_id)
        if self._goingAway is not None and not self.streams and self._stillProducing:
            self._close()

    def queued_bytes(self, stream_id: int) -> int:
        """
        Bytes of response data queued for a stream and not sent yet (its
        flow-control window is spent, or other streams go first).
        """
        queue = self._outboundStreamQueues.get(stream_id)
        if not queue:
            return 0
        if queue[-1] is _END_STREAM:
            # A finished stream's queue ends with a marker, not data (and
            # nothing is queued after it).
            return sum(map(len, itertools.islice(queue, len(queue) - 1)))
        return sum(map(len, queue))

    def _streamClosed(self, stream_id: int) -> bool:
        """
        Whether h2 has closed the stream already: a client that sent a
        request and its C{RST_STREAM} in one read has it closed before the
        request is handed over, and what is then written for it would end
        the sending loop (C{StreamClosedError}) or escape (C{send_headers}
        on a stream h2 has forgotten: C{StreamIDTooLowError}).
        """
        stream = self.conn.streams.get(stream_id)
        return stream is None or bool(stream.closed)

    def writeHeaders(
        self,
        version: bytes,
        code: bytes,
        reason: bytes,
        headers: Any,
        streamID: int,  # noqa: N803
    ) -> None:
        """Write a response head, unless the client has reset its stream."""
        if self._streamClosed(streamID):
            return
        super().writeHeaders(version, code, reason, headers, streamID)

    def writeDataToStream(self, stream_id: int, data: bytes) -> None:
        """Queue data for a stream; pause its producer past L{STREAM_BUFFER}."""
        if self._streamClosed(stream_id):
            # (Its reset is on its way to the request: twisted.web's
            # StreamReset event follows.)
            return
        # Pausing the producer may reset the stream (a reader too far
        # behind): twisted.web's write goes on with the stream after it
        # pauses it, so a reset asked for meanwhile waits for it to return.
        writing, self._writingTo = self._writingTo, stream_id
        try:
            super().writeDataToStream(stream_id, data)
        finally:
            self._writingTo = writing
        if stream_id in self._abortAfterWrite:
            self._abortAfterWrite.discard(stream_id)
            self.abortRequest(stream_id)
            return
        if stream_id not in self.streams:
            return
        if self.conn.local_flow_control_window(stream_id) <= 0:
            # Out of the loop (twisted.web leaves it as it was) until the
            # window opens.
            self._windowBlocked.add(stream_id)
        if self.queued_bytes(stream_id) > self.STREAM_BUFFER:
            self._overfull.add(stream_id)
            self.streams[stream_id].flowControlBlocked()

    def producer_registered(self, stream_id: int) -> None:
        """
        Pause the producer just registered on a stream if the stream is full
        (past L{STREAM_BUFFER}, or its window spent): twisted.web would
        only tell it at the stream's next write.
        """
        stream = self.streams.get(stream_id)
        if stream is not None and (
            stream_id in self._overfull or self.remainingOutboundWindow(stream_id) <= 0
        ):
            stream.flowControlBlocked()

    def abortRequest(self, stream_id: int) -> None:
        """Reset a stream (C{RST_STREAM}), once data being written to it is queued."""
        if stream_id == self._writingTo:
            self._abortAfterWrite.add(stream_id)
        elif stream_id in self.streams:
            super().abortRequest(stream_id)

    def _sendPrioritisedData(self, *args: Any) -> None:
        super()._sendPrioritisedData(*args)
        if self._overfull:
            for stream_id in tuple(self._overfull):
                stream = self.streams.get(stream_id)
                if stream is None:
                    self._overfull.discard(stream_id)
                elif self.queued_bytes(stream_id) <= self.STREAM_BUFFER // 2:
                    self._overfull.discard(stream_id)
                    # Resumes the producer if the client's window allows.
                    stream.windowUpdated()

    def connectionLost(
        self,
        reason: Failure = connectionDone,
        _cancelTimeouts: bool = True,  # noqa: N803 - twisted.web passes it by name
    ) -> None:
        """Forget the clocks."""
        deadline, self._headerDeadline = self._headerDeadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        site = getattr(self, "site", None)
        if site is not None:
            site.h2_connections.discard(self)
        super().connectionLost(reason, _cancelTimeouts)
        going, self._goingAway = self._goingAway, None
        if going is not None:
            going.callback(None)


class _WindowedPriority(_PriorityTree if _PriorityTree is not None else object):  # type: ignore[misc]
    """
    The priority tree of an HTTP/2 connection's sending loop, which skips
    (blocks) the streams that cannot send now.
    """

    def __init__(self, may_send: Callable[[int], bool]) -> None:
        super().__init__()
        self._may_send = may_send

    def __next__(self) -> int:
        """The next stream to send data on (C{DeadlockError}: none)."""
        while True:
            stream_id: int = super().__next__()
            if self._may_send(stream_id):
                return stream_id
            self.block(stream_id)


class _StreamingRequest(server.Request):
    """
    twisted.web's request, its attribute names shared (see L{_share_keys}),
    its target in origin form.
    """

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Route the request by its origin-form target (twisted.web calls this)."""
        if path[:1] != b"/" or b"#" in path:
            # (Over HTTP/1.1 the channel has refused a target not routable.)
            if not routable(path, command):
                self.process = self._refuseTarget  # type: ignore[method-assign]
            path = origin_form(path)
        super().requestReceived(command, path, version)  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Failure) -> None:
        """
        The connection is gone before the response ended (twisted.web calls
        this): a response whose head went out is logged now, with what was
        sent, as a finished one is (twisted.web logs only those), so that a
        stream its reader closed, the usual end of a stream, and a download
        cut short have their access log line too.  A request whose client
        left before any answer has none: no status was sent.
        """
        if self.startedWriting and not self.finished and not self._disconnected:
            channel = self.channel
            factory = getattr(channel, "factory", None)
            if factory is not None:
                factory.log(self)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _refuseTarget(self) -> None:
        """Answer 400 for a target not L{routable} (instead of C{process})."""
        self.setResponseCode(400)
        headers = self.responseHeaders
        headers.setRawHeaders(b"Content-Type", [b"text/plain; charset=utf-8"])
        headers.setRawHeaders(b"Content-Length", [b"%d" % len(_BAD_TARGET)])
        self.write(_BAD_TARGET)  # type: ignore[no-untyped-call]
        self.finish()  # type: ignore[no-untyped-call]

    def setResponseCode(self, code: int, message: bytes | None = None) -> None:
        """
        Set the response's status (twisted.web's), refusing a reason phrase
        that would end the status line early: twisted.web writes it as it
        is, and a CR or LF in it would start a header line of its own.

        @raise ValueError: for a C{message} with a CR or LF.
        """
        if message is not None and (b"\r" in message or b"\n" in message):
            raise ValueError(f"a reason phrase cannot hold a line break: {message!r}")
        super().setResponseCode(code, message)


def origin_form(target: bytes) -> bytes:
    """
    The origin form of a request target: C{/path?query}.

    A client talking to a proxy sends the absolute form
    (C{http://host/path?query}), which RFC 9112 requires servers to accept
    too; twisted.web alone would route it as a path starting C{/ttp:}.  A
    fragment (C{#part}) has no place in a request target and is dropped.
    C{*} (for C{OPTIONS}) stays as it is.

    >>> origin_form(b"http://example.test/a/b?x=1#top")
    b'/a/b?x=1'
    """
    target = target.split(b"#", 1)[0]
    if target[:1] == b"/" or target == b"*":
        return target
    parts = _absolute_form(target)
    return target if parts is None else parts[1]


def target_authority(target: bytes) -> bytes | None:
    """
    The authority of an absolute-form request target (C{host:port} of
    C{http://host:port/path?query}), or L{None} for a target in another
    form (C{/path}, C{*}, or one L{routable} refuses).

    >>> target_authority(b"http://example.test:8080/a?x=1"), target_authority(b"http://h?x")
    (b'example.test:8080', b'h')
    >>> target_authority(b"/a"), target_authority(b"http:///a")
    (None, b'')
    """
    if target[:1] == b"/":
        return None
    parts = _absolute_form(target.split(b"#", 1)[0])
    return None if parts is None else parts[0]


def _absolute_form(target: bytes) -> tuple[bytes, bytes] | None:
    """
    The authority and the origin form of an absolute-form C{target}
    without its fragment (C{scheme://authority/path?query}), or L{None}
    for a target in another form.
    """
    scheme, sep, rest = target.partition(b"://")
    if not sep or not scheme.isalpha():
        return None
    slash = rest.find(b"/")
    query = rest.find(b"?")
    if slash < 0 or 0 <= query < slash:
        if query >= 0:
            return rest[:query], b"/" + rest[query:]
        return rest, b"/"
    return rest[:slash], rest[slash:]


_BAD_TARGET = b"invalid request target\n"

# The minor versions of HTTP/1.x after 1.1, read as HTTP/1.1.
_LATER_MINORS = frozenset(b"%d" % n for n in range(2, 10))


def routable(target: bytes, method: bytes) -> bool:
    """
    Whether C{target} is a request target this server routes: the origin
    form (C{/path?query}), the absolute form (L{origin_form}), or C{*}
    for C{OPTIONS} (RFC 9112 3.2).  Any other (C{page}, C{example.test:443})
    is answered 400.

    >>> routable(b"/a?b", b"GET"), routable(b"http://h/a", b"GET"), routable(b"*", b"OPTIONS")
    (True, True, True)
    >>> routable(b"page", b"GET"), routable(b"*", b"GET")
    (False, False)
    """
    if target[:1] == b"/":
        return True
    form = origin_form(target)
    return form[:1] == b"/" or (form == b"*" and method == b"OPTIONS")


_share_keys(_StreamingRequest, _REQUEST_ATTRIBUTES)
