"""
One connected event stream, with backpressure and a cap on what it may owe.

All methods: call in the reactor thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

from twisted.internet import tcp, unix
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import NO_BODY_CODES
from twisted.web.http_headers import Headers
from zope.interface import implementer

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.web.server import Request

__all__ = [
    "PLAIN_SOCKET_TRANSPORTS",
    "StreamClient",
    "close_after_response",
    "cut_response",
    "h2_stream",
    "send_to_each",
    "unsent_bytes",
]

# Request headers Twisted's access log formatters read when a stream ends.
_LOGGED_HEADERS = (b"Referer", b"User-Agent", b"Authorization", b"X-Forwarded-For")

# The fast path (see StreamClient.send) frames each event for HTTP/1.1 chunked
# transfer once, for the first client that needs it, and every other client
# reuses the same bytes: the hub hands the same ``wire`` object to all of them,
# so an identity check finds the cached frame.  Reactor thread only.
_framed_wire: bytes = b""
_framed_chunk: bytes = b""


# Bytes of a replay written at a time: the transport takes about this much
# (twisted's bufferSize) before it pushes back.
_REPLAY_BATCH = 64 * 1024

# Transports whose socket may be written to directly: plain TCP and UNIX
# sockets (exact types: subclasses such as TLS wrap the bytes themselves).
PLAIN_SOCKET_TRANSPORTS = (tcp.Server, unix.Server)


def _chunk(wire: bytes) -> bytes:
    """Return C{wire} as one HTTP/1.1 chunk, computed once per event."""
    global _framed_wire, _framed_chunk
    if wire is not _framed_wire:
        _framed_chunk = b"%x\r\n%b\r\n" % (len(wire), wire)
        _framed_wire = wire
    return _framed_chunk


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

    A replay (L{replay}) is written the same way, as fast as the socket
    takes it and no faster: the events stay in the hub's history, and this
    client only keeps its place in them, so a replay costs no copy however
    large it is.  Live events published meanwhile are held behind it, and
    count toward C{max_buffer}.

    A stream the server ends (L{finish}, L{end}) while its reader is behind
    ends once the reader has taken what it is owed, within what is left of
    C{max_pause}, or is aborted then; a revoked one (L{revoke}) is aborted
    at once.  Either way nothing is kept for a reader that stopped reading
    beyond C{max_buffer} and C{max_pause}.

    @ivar channels: the channels this stream is subscribed to.
    @ivar peer: the client's address, for logs and per-address limits.
    @ivar identity: who the stream belongs to (presence, revocation), or
        L{None} for a guest.
    @ivar closed: whether the stream has ended: nothing more is sent to it
        (what was held for a reader that is behind may still be written
        before the end, see L{finish}).
    @ivar discarded: bytes that were held for this reader and thrown away
        when it left or was dropped.
    @ivar ended: whether L{end} ended it (its channel was closed).
    """

    log = Logger()

    __slots__ = (
        "__weakref__",
        "_backlog",
        "_backlog_left",
        "_clock",
        "_ending",
        "_held",
        "_held_bytes",
        "_max_buffer",
        "_max_pause",
        "_on_close",
        "_on_drop",
        "_pause_timer",
        "_paused",
        "_sock",
        "_transport",
        "channels",
        "closed",
        "discarded",
        "ended",
        "identity",
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
        identity: str | None = None,
    ) -> None:
        self.request = request
        self.identity = identity
        self.channels = channels
        self.peer = peer
        self._clock = clock
        self._max_buffer = max_buffer
        self._max_pause = max_pause
        self._on_drop = on_drop
        self._paused = False
        # Events held while paused or replaying (a list only while there are some).
        self._held: list[bytes] | None = None
        self._held_bytes = 0
        # Replayed events not written yet, oldest first, taken one by one
        # (from the hub's history: references, not copies), and their bytes.
        self._backlog: Iterator[bytes] | None = None
        self._backlog_left = 0
        self._pause_timer: IDelayedCall | None = None
        # Set when the stream was ended while its reader was behind: the
        # end waits for the reader to catch up; whether the connection is
        # closed after it.
        self._ending: bool | None = None
        self.closed = False
        self.discarded = 0
        self.ended = False
        # Fast path state: the socket, while direct writes are allowed (see
        # send()); False until the response has started and been checked.
        self._sock: Any = False
        self._transport: Any = None

    # -- writing -------------------------------------------------------------

    def send(self, wire: bytes) -> None:
        """Write one encoded event, or hold it while the reader is behind."""
        # The fast path, taken for almost every delivery: a chunked HTTP/1.1
        # response on a plain TCP connection that is neither paused nor
        # closed (self._sock is None in every other case, so one test
        # covers them all).
        sock = self._sock
        if sock:
            # The frame of this event, computed by the first client.
            # (send_to_each repeats this path inline: change both.)
            chunk = _framed_chunk if wire is _framed_wire else _chunk(wire)
            transport = self._transport
            if not transport.dataBuffer and not transport._tempDataLen:
                # Nothing queued in Twisted's buffer, so nothing can be
                # overtaken: hand the bytes to the kernel now.  The first
                # client gets the event at once instead of after every
                # other client's write has been queued and the reactor
                # comes back to poll for writability; and no epoll
                # registration is made and undone per client per event.
                try:
                    sent = sock.send(chunk)
                except OSError:
                    # EAGAIN (the kernel buffer is full), or an error the
                    # transport will find and report itself on its next
                    # write: let it take the bytes.
                    sent = 0
                if sent == len(chunk):
                    return
                chunk = chunk[sent:]
            # Something is already waiting (or the kernel took only part of
            # this event): queue behind it, in order.  Twisted flushes its
            # buffer when the socket is writable and pauses this producer
            # when it grows past its limit.
            transport.write(chunk)
            return
        if sock is False and not self.closed and getattr(self.request, "startedWriting", False):
            self._check_fast_path()
            if self._sock:
                self.send(wire)
                return
        self._send_generic(wire)

    def _send_generic(self, wire: bytes) -> None:
        """Hold the event while paused or replaying, else write it through the request."""
        if self.closed:
            return
        if self._paused or self._backlog is not None:
            held = self._held
            if held is None:
                self._held = [wire]
            else:
                held.append(wire)
            self._held_bytes += len(wire)
            if self._held_bytes > self._max_buffer:
                self.drop("buffer")
            return
        self.request.write(wire)

    def replay(self, wires: Iterable[bytes], size: int) -> None:
        """
        Write C{wires} (replayed events, C{size} bytes in all), oldest
        first, as the reader takes them; call once, after L{started}, before
        any live event is sent.

        C{wires} is iterated as the connection drains (L{resumeProducing}),
        so it may be lazy; live events sent in the meantime follow it.
        """
        self._backlog = iter(wires)
        self._backlog_left = size
        self._feed()

    def _feed(self) -> None:
        """Write the replay backlog, then what was held, until the transport pushes back."""
        backlog = self._backlog
        if backlog is not None:
            self._sock = None  # nothing overtakes the replay
            while True:
                if self._paused or self.closed:
                    return
                # A batch of up to _REPLAY_BATCH bytes per write.  Writing
                # may pause this producer at once (the transport's buffer
                # is full): the loop stops there.
                batch = []
                size = 0
                for wire in backlog:
                    batch.append(wire)
                    size += len(wire)
                    if size >= _REPLAY_BATCH:
                        break
                if not batch:
                    break
                self._backlog_left -= size
                self.request.write(batch[0] if len(batch) == 1 else b"".join(batch))
            self._backlog = None
            self._backlog_left = 0
            if self._transport is not None and not self._paused and not self.closed:
                self._sock = self._transport.socket
        if self._held and not self._paused and not self.closed:
            held = b"".join(self._held)
            self._held = None
            self._held_bytes = 0
            self.request.write(held)

    def started(self) -> None:
        """
        Call once the response headers have been written (the first write):
        choose the write path and shed what a long-lived stream keeps for
        nothing.

        Twisted keeps every request's header objects and body buffer until
        the response ends, which for an event stream is hours.  The response
        headers are never read again once sent; of the request headers only
        those the access log reads are kept, and the path segments and the
        query arguments, read while the request was routed and rendered,
        are dropped.  A few hundred bytes and a few objects for the
        garbage collector to go through per connection, which matters at
        ten thousand connections.
        """
        self._check_fast_path()
        request = self.request
        if not request.startedWriting:
            return
        request.responseHeaders = Headers()
        old = request.requestHeaders
        kept = Headers()
        raw = getattr(old, "_rawHeaders", None)
        if raw is not None:
            # (Twisted keeps each name in its canonical case.  Tuples of
            # bytes: the garbage collector stops going through them.)
            kept_raw: Any = {name: tuple(raw[name]) for name in _LOGGED_HEADERS if raw.get(name)}
            kept._rawHeaders = kept_raw
        else:  # pragma: no cover - another Headers implementation
            for name in _LOGGED_HEADERS:
                values = old.getRawHeaders(name)
                if values is not None:
                    kept.setRawHeaders(name, values)
        request.requestHeaders = kept
        content = request.content
        if content is not None:
            content.close()
            request.content = None
        routed: Any = request
        routed.prepath = routed.postpath = routed.sitepath = None
        if request.args:
            request.args = {}

    def _check_fast_path(self) -> None:
        """
        Decide, once the response headers are out, whether events may be
        written straight to the socket.

        Only a chunked HTTP/1.1 response over a plain TCP or UNIX-socket
        connection (a reverse proxy in front) qualifies: HTTP/1.0
        (unframed), TLS and HTTP/2 transports frame or encrypt the bytes
        themselves and keep the generic path.
        """
        request = self.request
        channel = getattr(request, "channel", None)
        transport = getattr(channel, "transport", None)
        socket = getattr(transport, "socket", None)
        if (
            request.chunked
            and transport is not None
            and type(transport) in PLAIN_SOCKET_TRANSPORTS
            and socket is not None
            and transport.connected
            and not transport.disconnecting
        ):
            self._transport = transport
            self._sock = socket if not self._paused and self._backlog is None else None
        else:
            self._sock = None
            self._transport = None

    def _queued_in_transport(self) -> int:
        """
        Bytes written to the connection's transport that the kernel has
        not taken yet; over HTTP/2, the stream's data its connection holds
        (for the client's flow-control window, or for its turn).
        """
        transport = self._transport
        if transport is None:
            stream = h2_stream(self.request)
            if stream is not None:
                queued_bytes = getattr(stream[0], "queued_bytes", None)
                if queued_bytes is not None:  # a StreamSite's HTTP/2 connection
                    return int(queued_bytes(stream[1]))
            # (Over TLS, the TCP transport's buffer: twisted's TLS transport
            # hands attribute lookups down to it.)
            transport = getattr(getattr(self.request, "channel", None), "transport", None)
        return unsent_bytes(transport)

    @property
    def held_bytes(self) -> int:
        """Bytes waiting for the reader to catch up."""
        return self._held_bytes

    @property
    def paused(self) -> bool:
        """Whether the transport has asked this stream to stop writing."""
        return self._paused

    @property
    def ending(self) -> bool:
        """Whether the stream was ended and waits for its reader to catch up."""
        return self.closed and self._ending is not None

    # -- IPushProducer -------------------------------------------------------

    def pauseProducing(self) -> None:
        """
        The socket is full: hold events from now on and start the clock.

        Twisted pauses a producer as soon as more than its own buffer size
        (64 KiB) waits in the transport, so the write that crossed it is
        what the transport holds now: if that is more than C{max_buffer}
        (one large event the kernel did not take), the connection is
        aborted at once, as for held events.  Over HTTP/2 the same holds
        for the stream's data its connection queues (past 64 KiB, or past
        the client's flow-control window), and only the stream is reset.
        The stream's first write (its
        opening, an C{init} event, a view's first body) is not counted: it
        is the application's answer to this one reader.
        """
        if self._paused or (self.closed and self._ending is None):
            return
        self._paused = True
        sock = self._sock
        if sock:
            self._sock = None  # held events go through _send_generic
        if sock is not False and self._queued_in_transport() > self._max_buffer:
            self.drop("buffer")
            return
        timer = self._pause_timer
        if self._max_pause is not None and (timer is None or not timer.active()):
            self._pause_timer = self._clock.callLater(self._max_pause, self.drop, "stalled")

    def resumeProducing(self) -> None:
        """The socket drained: write what was held, as one write."""
        if not self._paused:
            return
        if self._ending is not None:
            # The clock started when the reader stopped keeps running: if
            # what it is owed fills the connection again, the end waits
            # only for what is left of max_pause.
            self._paused = False
            self._end_when_caught_up()
            return
        if self.closed:
            return
        self._paused = False
        if self._transport is not None and self._backlog is None:
            # Back on the fast path; anything still queued in the
            # transport keeps its place (send() checks the buffer).
            self._sock = self._transport.socket
        self._cancel_pause_timer()
        self._feed()

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
        if self.closed and self._ending is None:
            return
        self.log.info(
            "dropping slow client {peer} ({reason}): {held} bytes held",
            peer=self.peer,
            reason=reason,
            held=self._held_bytes + self._queued_in_transport(),
            channels=list(self.channels),
            max_buffer=self._max_buffer,
            max_pause=self._max_pause,
        )
        # A stream whose end waited for this reader never ended cleanly: it
        # counts as dropped only.
        self.ended = False
        # on_drop sees what was held, before it is discarded.
        if self._on_drop is not None:
            self._on_drop(self, reason)
        self._forget()
        # Over HTTP/2 the connection carries other streams: only this one is reset.
        cut_response(self.request, reason, abort=True)

    def end(self) -> None:
        """
        End the response after everything sent so far, held events
        included: the stream's channel was closed.  (A replay still being
        written is cut short: the reader resumes from its last event.)
        """
        if not self.closed:
            self.ended = True
            self.finish()

    def finish(self, *, close_connection: bool = False) -> None:
        """
        End the response cleanly (server shutdown): the reader sees EOF.

        With C{close_connection}, the connection is closed once the response
        has ended instead of being kept alive for another request.

        A reader that is behind (the connection asked this stream to stop
        writing) is not sent the end yet, which would wait behind what it
        has not read, for as long as the connection lasts: nothing more is
        written to it but what it is owed (the events held for it), and the
        response ends once it has taken that.  If it does not within
        C{max_pause} of when it stopped, the connection is aborted (over
        HTTP/2: the stream is reset), as for any reader that stalls.
        """
        if self.closed:
            if self._ending is not None and close_connection:
                self._ending = True
            return
        if self._backlog is not None:
            # What is left of a replay is not written, nor the live events
            # held behind it: the reader resumes from the last event it got.
            self.discarded += self._held_bytes + max(self._backlog_left, 0)
            self._backlog = None
            self._backlog_left = 0
            self._held = None
            self._held_bytes = 0
        if self._paused and self._max_pause is not None and not self._gone():
            self.closed = True
            self._sock = None
            self._ending = close_connection
            return
        self._end_now(close_connection)

    def revoke(self) -> None:
        """
        End the stream now: who it belongs to may no longer read it
        (L{disconnect<wsgi_sse.disconnect>}).

        A reader that is behind (the connection asked this stream to stop
        writing, or holds bytes the kernel has not taken) has its
        connection aborted at once (over HTTP/2: its stream reset), and
        what was held for it is freed: a clean end would wait for it to read
        what it is owed first, keeping the connection and its buffers until
        the reader comes back or the connection times out.  Any other
        stream ends cleanly, as with L{finish}.
        """
        if self.closed and self._ending is None:
            return
        if self._gone() or not (self._paused or self._queued_in_transport()):
            self.finish()
            return
        self.log.info(
            "cutting revoked stream of {peer}: {held} bytes it had not read",
            peer=self.peer,
            held=self._held_bytes + self._queued_in_transport(),
            channels=list(self.channels),
        )
        # A stream whose end waited for this reader never ended cleanly.
        self.ended = False
        self._forget()
        cut_response(self.request, "revoked", abort=True)

    def _end_when_caught_up(self) -> None:
        """
        A reader that was behind when its stream was ended has caught up:
        write what it was owed, and end the response unless that fills the
        connection again (the end then waits for the next catch-up).
        """
        held = self._held
        if held:
            self._held = None
            self._held_bytes = 0
            self.request.write(b"".join(held))
        close_connection = self._ending
        if self._paused or close_connection is None:
            return
        self._end_now(close_connection)

    def _end_now(self, close_connection: bool) -> None:
        """Write what is held and end the response."""
        held = b"".join(self._held) if self._held else b""
        self._held = None
        self._held_bytes = 0
        self._forget()
        if self._gone():
            return
        request = self.request
        if held:
            request.write(held)
        if close_connection:
            close_after_response(request)
        request.unregisterProducer()
        request.finish()

    def _gone(self) -> bool:
        """Whether the response has ended, or its connection is lost."""
        request = self.request
        return bool(getattr(request, "_disconnected", False) or request.finished)

    def _cancel_pause_timer(self) -> None:
        timer, self._pause_timer = self._pause_timer, None
        if timer is not None and timer.active():
            timer.cancel()

    def _forget(self) -> None:
        self.closed = True
        self._ending = None
        self.discarded += self._held_bytes
        if self._backlog is not None:
            self.discarded += max(self._backlog_left, 0)
            self._backlog = None
            self._backlog_left = 0
        self._sock = None
        self._transport = None
        self._held = None
        self._held_bytes = 0
        timer, self._pause_timer = self._pause_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        # The request holds its producer (this client) until the response
        # ends, and this client holds the request: a reference cycle that,
        # once the connection is gone, only a full pass of the cyclic
        # garbage collector would free (with a dozen of the request's
        # objects, the transport and its socket's memory).  Breaking it
        # frees a closed stream at once; a response that ends cleanly
        # unregisters the producer in the same way.
        request = self.request
        if getattr(request, "producer", None) is self:
            request.producer = None


def send_to_each(subscribers: Iterable[Any], wire: bytes) -> None:
    """
    Write one encoded event to each of C{subscribers}: the same as calling
    C{subscriber.send(wire)} for each, in order.  Call in the reactor thread.

    This is the hub's fan-out, the loop that runs once per client and
    event.  A L{StreamClient} on the fast path (see L{StreamClient.send})
    is written to here, without a method call per client: that halves the
    loop's own cost (measured inside a server holding 10,000 streams: 4.3
    ms of CPU per event for the calls, 2.4 ms inline).  Every other
    subscriber, and every client off the fast path, gets C{send(wire)}.
    """
    chunk = _chunk(wire)
    size = len(chunk)
    stream_client = StreamClient
    for subscriber in subscribers:
        if type(subscriber) is stream_client:
            sock = subscriber._sock
            if sock:
                # StreamClient.send's fast path, step for step.
                transport = subscriber._transport
                if not transport.dataBuffer and not transport._tempDataLen:
                    try:
                        sent = sock.send(chunk)
                    except OSError:
                        sent = 0
                    if sent == size:
                        continue
                    transport.write(chunk[sent:])
                else:
                    transport.write(chunk)
                continue
        subscriber.send(wire)


def close_after_response(request: Request) -> None:
    """
    Close C{request}'s connection once its response has ended, rather than
    keep it alive for another request.

    HTTP/1.x only: an HTTP/2 stream ends by itself, and its connection is
    shared with other streams.
    """
    channel = request.channel
    if getattr(channel, "persistent", None) is None:
        return
    channel.persistent = False
    if not request.startedWriting:
        request.setHeader(b"Connection", b"close")


def cut_response(request: Request, reason: str, *, abort: bool = False) -> None:
    """
    End a response that cannot be completed, so that its reader sees it
    was cut short: over HTTP/1.x its connection is closed once what was
    written went out (with C{abort}: at once); over HTTP/2 its stream is
    reset (C{RST_STREAM}), and the connection and its other streams go on.
    An HTTP/2 stream ended by C{loseConnection} would end cleanly
    (C{END_STREAM}), a truncated body looking whole; so would an HTTP/1.x
    body with neither chunks nor a C{Content-Length} (HTTP/1.0), whose
    end is the connection's: its connection is aborted (a TCP reset).  An
    answer without a body (to C{HEAD}, a C{204} or C{304}) is whole once
    its head is out, and its connection is closed as usual.

    @param reason: why, given to the request as the reason it lost its
        connection (HTTP/2).
    """
    if _reset_h2_stream(request):
        # twisted.web does not tell the request; the stream ends here.
        request.connectionLost(Failure(ConnectionAborted(f"stream reset: {reason}")))
        return
    if not abort and (
        request.chunked
        or request.responseHeaders.hasHeader(b"content-length")
        # Complete once its head is out: no body to cut short.
        or request.method == b"HEAD"
        or request.code in NO_BODY_CODES
    ):
        request.loseConnection()
        return
    transport = getattr(request.channel, "transport", None)
    if transport is not None:
        transport.abortConnection()


def site_closing(holder: Any) -> bool:
    """
    Whether the site C{holder} (a request or a channel) belongs to is
    shutting down (L{StreamSite.close_kept_alive} was called); C{False}
    when it has no site, or a plain twisted.web one.
    """
    return bool(getattr(getattr(holder, "site", None), "closing", False))


def h2_stream(request: Any) -> tuple[Any, int] | None:
    """
    The HTTP/2 connection C{request} came over and its stream id, or
    L{None} for a request over HTTP/1.x (or one whose connection is gone).
    May be called in any thread: it only reads.
    """
    channel: Any = getattr(request, "channel", None)
    connection = getattr(channel, "_conn", None)
    if connection is None:
        return None
    return connection, channel.streamID


def unsent_bytes(transport: Any) -> int:
    """
    Bytes written to an HTTP/1.x C{transport} (TCP or UNIX socket, or TLS
    over one) that the kernel has not taken yet; 0 for anything else
    (an HTTP/2 request's transport is L{None}).
    """
    if transport is None:
        return 0
    try:
        queued: int = len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except (AttributeError, TypeError):
        return 0
    return queued


def _reset_h2_stream(request: Any) -> bool:
    """
    Reset C{request}'s stream if it is a live HTTP/2 stream (an
    C{RST_STREAM} frame); return whether it was.
    """
    stream = h2_stream(request)
    if stream is None or stream[1] not in getattr(stream[0], "streams", {}):
        return False
    request.channel.abortConnection()
    return True
