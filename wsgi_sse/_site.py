"""
The twisted.web C{Site} used by wsgi-sse: a deadline for request headers.

Twisted's C{HTTPChannel} only has an idle timeout, which every received byte
resets: a client that trickles its request headers one byte at a time
("slowloris") holds a connection for as long as it likes.  L{StreamSite}
gives each request's headers a fixed time to arrive in full, counted from
the connection's start or from the first byte of the next request on a
kept-alive connection; past it the connection is answered C{408} and closed.
A request line or header line longer than Twisted accepts is answered C{414}
or C{431} (Twisted itself closes such connections without an answer), and a
request body over C{max_request_body} is answered C{413} (Twisted itself has
no limit and spools large bodies to disk).

All methods: call in the reactor thread (twisted.web does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.server import Site

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall
    from twisted.python.failure import Failure
    from twisted.web.resource import IResource

__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_REQUEST_BODY",
    "StreamSite",
]

DEFAULT_HEADER_TIMEOUT = 30.0
"""Seconds a client has to send a request's line and headers in full."""

DEFAULT_IDLE_TIMEOUT = 180.0
"""Seconds a connection may stay silent between requests (not during a stream)."""

DEFAULT_MAX_REQUEST_BODY = 64 * 1024 * 1024
"""Bytes a request body may have (Twisted alone accepts any size, spooled to disk)."""


class _HeaderDeadlineChannel(http.HTTPChannel):
    """An C{HTTPChannel} that aborts requests whose headers arrive too slowly."""

    log = Logger()
    headerTimeout: float | None = DEFAULT_HEADER_TIMEOUT
    maxRequestBody: int | None = DEFAULT_MAX_REQUEST_BODY
    _headerDeadline: IDelayedCall | None = None
    _bodyReceived = 0
    _refused = False

    def connectionMade(self) -> None:
        """Start the clock for the first request's headers."""
        super().connectionMade()  # type: ignore[no-untyped-call]
        self._armHeaderDeadline()

    def dataReceived(self, data: bytes) -> None:
        """Start the clock at the first byte of a request on a kept-alive connection."""
        if self._headerDeadline is None and not self.requests and self.line_mode:
            # Between requests: these bytes begin the next request's head.
            self._armHeaderDeadline()
        super().dataReceived(data)  # type: ignore[no-untyped-call]

    def allHeadersReceived(self) -> None:
        """The headers are complete: stop the clock; refuse a body declared too large."""
        self._cancelHeaderDeadline()
        limit = self.maxRequestBody
        if limit is not None and self.length is not None and self.length > limit:
            self._refuseAndClose(b"413 Content Too Large", b"request body too large\n")
            return
        self._bodyReceived = 0
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

    def lineReceived(self, line: bytes) -> None:
        """Parse a request or header line, unless the connection was refused."""
        if not self._refused:
            super().lineReceived(line)  # type: ignore[no-untyped-call]

    def rawDataReceived(self, data: bytes) -> None:
        """Count a chunked body against the limit as it arrives."""
        if self._refused:
            return
        limit = self.maxRequestBody
        if limit is not None and self.length is None and not self._handlingRequest:
            self._bodyReceived += len(data)
            if self._bodyReceived > limit:
                self._refuseAndClose(b"413 Content Too Large", b"request body too large\n")
                return
        super().rawDataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget the clock."""
        self._cancelHeaderDeadline()
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def _armHeaderDeadline(self) -> None:
        if self.headerTimeout and self._headerDeadline is None:
            self._headerDeadline = self.callLater(  # type: ignore[no-untyped-call]
                self.headerTimeout, self._headersTooSlow
            )

    def _cancelHeaderDeadline(self) -> None:
        deadline, self._headerDeadline = self._headerDeadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()

    def _headersTooSlow(self) -> None:
        self._headerDeadline = None
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
        self._refuseAndClose(b"408 Request Timeout", b"request headers took too long\n")

    def lineLengthExceeded(self, line: bytes) -> None:
        """Answer an over-long request line (414) or header line (431), then close."""
        first = getattr(self, "_HTTPChannel__first_line", 0)
        if first:
            self._refuseAndClose(b"414 URI Too Long", b"request line too long\n")
        else:
            self._refuseAndClose(
                b"431 Request Header Fields Too Large", b"request header line too long\n"
            )

    def _refuseAndClose(self, status: bytes, message: bytes) -> None:
        """
        Send a final answer and close, letting the client read it: ignore
        whatever else it sends, half-close so it sees the end, and abort if it
        does not go away.
        """
        if self._refused:
            return
        self._refused = True
        self._cancelHeaderDeadline()
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        self.dataReceived = _ignore  # type: ignore[method-assign]
        transport = self.transport
        assert transport is not None
        transport.write(
            b"HTTP/1.1 %s\r\nConnection: close\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n\r\n%s"
            % (status, len(message), message)
        )
        lose_write = getattr(transport, "loseWriteConnection", None)
        if lose_write is not None:
            lose_write()
        else:  # pragma: no cover - transports that cannot half-close
            transport.loseConnection()
        self.callLater(2.0, _abort, transport)  # type: ignore[no-untyped-call, call-arg]


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
    """

    def __init__(
        self,
        resource: IResource,
        *,
        header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_request_body: int | None = DEFAULT_MAX_REQUEST_BODY,
        access_log: bool = True,
        **kwargs: Any,
    ) -> None:
        if header_timeout is not None and header_timeout < 0:
            raise ValueError("header_timeout must not be negative")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive or None")
        super().__init__(resource, timeout=idle_timeout, **kwargs)  # type: ignore[no-untyped-call]
        if max_request_body is not None and max_request_body < 0:
            raise ValueError("max_request_body must not be negative")
        self.header_timeout = header_timeout
        self.access_log = access_log
        self.max_request_body = max_request_body
        if "requestFactory" not in kwargs:
            self.requestFactory = _StreamingRequest

    def log(self, request: Any) -> None:
        """Log a finished request (unless C{access_log} is off).  Reactor thread."""
        if self.access_log:
            super().log(request)

    def protocol(self) -> Any:
        """Build one connection's channel (twisted.web calls this)."""
        channel = self._channelClass()()
        wrapper = getattr(http, "_GenericHTTPChannelProtocol", None)
        # The wrapper switches to HTTP/2 when TLS negotiates it.
        return wrapper(channel) if wrapper is not None else channel

    def buildProtocol(self, addr: Any) -> Any:
        """
        Build one connection's channel, its settings class attributes.

        twisted.web's own C{buildProtocol} sets C{factory}, C{site},
        C{requestFactory} and C{callLater} on every channel; here the
        channel's class carries them (see L{_share_keys} for why).
        """
        return self.protocol()

    def _channelClass(self) -> type[_HeaderDeadlineChannel]:
        settings = (
            self.header_timeout,
            self.max_request_body,
            self.timeOut,
            self.requestFactory,
            self.reactor,
        )
        cached = self.__dict__.get("_channelClassCache")
        if cached is not None and cached[0] == settings:
            return cached[1]  # type: ignore[no-any-return]
        cls = type(
            "_HeaderDeadlineChannel",
            (_HeaderDeadlineChannel,),
            {
                "__module__": __name__,
                "headerTimeout": self.header_timeout,
                "maxRequestBody": self.max_request_body,
                "timeOut": self.timeOut,
                "factory": self,
                "site": self,
                "requestFactory": self.requestFactory,
                "callLater": staticmethod(self.reactor.callLater),
            },
        )
        _share_keys(cls, _CHANNEL_ATTRIBUTES)
        self._channelClassCache = (settings, cls)
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


class _StreamingRequest(server.Request):
    """twisted.web's request, its attribute names shared (see L{_share_keys})."""


_share_keys(_StreamingRequest, _REQUEST_ATTRIBUTES)
