"""
The twisted.web C{Site} used by wsgi-sse: a deadline for request headers.

Twisted's C{HTTPChannel} only has an idle timeout, which every received byte
resets: a client that trickles its request headers one byte at a time
("slowloris") holds a connection for as long as it likes.  L{StreamSite}
gives each request's headers a fixed time to arrive in full, counted from
the connection's start or from the first byte of the next request on a
kept-alive connection; past it the connection is answered C{408} and closed.
A request line or header line longer than Twisted accepts is answered C{414}
or C{431} (Twisted itself closes such connections without an answer).

All methods: call in the reactor thread (twisted.web does).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.web import http
from twisted.web.server import Site

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall
    from twisted.python.failure import Failure
    from twisted.web.resource import IResource

__all__ = ["DEFAULT_HEADER_TIMEOUT", "DEFAULT_IDLE_TIMEOUT", "StreamSite"]

DEFAULT_HEADER_TIMEOUT = 30.0
"""Seconds a client has to send a request's line and headers in full."""

DEFAULT_IDLE_TIMEOUT = 180.0
"""Seconds a connection may stay silent between requests (not during a stream)."""


class _HeaderDeadlineChannel(http.HTTPChannel):
    """An C{HTTPChannel} that aborts requests whose headers arrive too slowly."""

    log = Logger()
    headerTimeout: float | None = DEFAULT_HEADER_TIMEOUT
    _headerDeadline: IDelayedCall | None = None

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
        """The headers are complete: stop the clock."""
        self._cancelHeaderDeadline()
        super().allHeadersReceived()  # type: ignore[no-untyped-call]

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
    """

    def __init__(
        self,
        resource: IResource,
        *,
        header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        **kwargs: Any,
    ) -> None:
        if header_timeout is not None and header_timeout < 0:
            raise ValueError("header_timeout must not be negative")
        if idle_timeout is not None and idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive or None")
        super().__init__(resource, timeout=idle_timeout, **kwargs)  # type: ignore[no-untyped-call]
        self.header_timeout = header_timeout

    def protocol(self) -> Any:
        """Build one connection's channel (twisted.web calls this)."""
        channel = _HeaderDeadlineChannel()  # type: ignore[no-untyped-call]
        channel.headerTimeout = self.header_timeout
        wrapper = getattr(http, "_GenericHTTPChannelProtocol", None)
        # The wrapper switches to HTTP/2 when TLS negotiates it.
        return wrapper(channel) if wrapper is not None else channel
