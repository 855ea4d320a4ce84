"""
One connected event stream, with backpressure and a cap on what it may owe.

All methods: call in the reactor thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.web.server import Request

__all__ = ["StreamClient"]


@implementer(IPushProducer)
class StreamClient:
    """
    Write events to one HTTP response and drop the connection if its reader
    falls too far behind.

    The client registers itself as the request's streaming producer.  When
    the socket's send buffer fills up Twisted calls L{pauseProducing}; from
    then on events are held here (and counted) instead of piling up in the
    transport's unbounded buffer.  They are written in one go when Twisted
    calls L{resumeProducing}.  If more than C{max_buffer} bytes are held, or
    the pause lasts longer than C{max_pause} seconds, the connection is
    aborted: the browser reconnects with its Last-Event-ID and replays.

    @ivar channels: the channels this stream is subscribed to.
    @ivar peer: the client's address, for logs and per-address limits.
    @ivar closed: whether the stream has ended (nothing more is written).
    @ivar discarded: bytes that were held for this reader and thrown away
        when it left or was dropped.
    """

    log = Logger()

    __slots__ = (
        "__weakref__",
        "_clock",
        "_held",
        "_held_bytes",
        "_max_buffer",
        "_max_pause",
        "_on_close",
        "_on_drop",
        "_pause_timer",
        "_paused",
        "channels",
        "closed",
        "discarded",
        "peer",
        "request",
    )

    def __init__(
        self,
        request: Request,
        *,
        channels: tuple[str, ...],
        peer: str,
        clock: IReactorTime,
        max_buffer: int,
        max_pause: float,
        on_drop: Callable[[StreamClient, str], None] | None = None,
    ) -> None:
        self.request = request
        self.channels = channels
        self.peer = peer
        self._clock = clock
        self._max_buffer = max_buffer
        self._max_pause = max_pause
        self._on_drop = on_drop
        self._paused = False
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._pause_timer: IDelayedCall | None = None
        self.closed = False
        self.discarded = 0

    # -- writing -------------------------------------------------------------

    def send(self, wire: bytes) -> None:
        """Write one encoded event, or hold it while the reader is behind."""
        if self.closed:
            return
        if self._paused:
            self._held.append(wire)
            self._held_bytes += len(wire)
            if self._held_bytes > self._max_buffer:
                self.drop("buffer")
            return
        self.request.write(wire)

    @property
    def held_bytes(self) -> int:
        """Bytes waiting for the reader to catch up."""
        return self._held_bytes

    @property
    def paused(self) -> bool:
        """Whether the transport has asked this stream to stop writing."""
        return self._paused

    # -- IPushProducer -------------------------------------------------------

    def pauseProducing(self) -> None:
        """The socket is full: hold events from now on and start the clock."""
        if self._paused or self.closed:
            return
        self._paused = True
        if self._max_pause is not None:
            self._pause_timer = self._clock.callLater(self._max_pause, self.drop, "stalled")

    def resumeProducing(self) -> None:
        """The socket drained: write what was held, as one write."""
        if not self._paused or self.closed:
            return
        self._paused = False
        timer, self._pause_timer = self._pause_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        if self._held:
            held = b"".join(self._held)
            self._held = []
            self._held_bytes = 0
            self.request.write(held)

    def stopProducing(self) -> None:
        """The connection is going away."""
        self._forget()

    # -- ending --------------------------------------------------------------

    def drop(self, reason: str) -> None:
        """
        Abort the connection at once, discarding what is held.

        Used for readers that fell behind: unlike C{loseConnection}, aborting
        does not wait for a buffer that may never drain.
        """
        if self.closed:
            return
        self.log.info(
            "dropping slow client {peer} ({reason}): {held} bytes held",
            peer=self.peer,
            reason=reason,
            held=self._held_bytes,
            channels=list(self.channels),
            max_buffer=self._max_buffer,
            max_pause=self._max_pause,
        )
        # on_drop sees what was held, before it is discarded.
        if self._on_drop is not None:
            self._on_drop(self, reason)
        self._forget()
        transport = getattr(self.request.channel, "transport", None)
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:  # pragma: no cover - transports without abortConnection
                transport.loseConnection()

    def finish(self) -> None:
        """End the response cleanly (server shutdown): the reader sees EOF."""
        if self.closed:
            return
        held = b"".join(self._held)
        self._held = []
        self._held_bytes = 0
        self._forget()
        request = self.request
        if getattr(request, "_disconnected", False) or request.finished:
            return
        if held:
            request.write(held)
        request.unregisterProducer()
        request.finish()

    def _forget(self) -> None:
        self.closed = True
        self.discarded += self._held_bytes
        self._held = []
        self._held_bytes = 0
        timer, self._pause_timer = self._pause_timer, None
        if timer is not None and timer.active():
            timer.cancel()
