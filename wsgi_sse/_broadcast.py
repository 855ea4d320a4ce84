"""
Publishing from any thread: the only code in wsgi-sse that crosses threads.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from twisted.logger import Logger
from twisted.python import threadable

from ._backplane import MAX_BODY
from ._encoding import encode_body
from ._hub import CLOSE_BODY, DEFAULT_CHANNEL, Hub
from ._names import validate_channel

if TYPE_CHECKING:
    from collections.abc import Callable

    from twisted.internet.defer import Deferred

    from ._backplane import Published

__all__ = [
    "Broadcaster",
    "Publisher",
    "broadcast",
    "broadcast_and_wait",
    "close",
    "get_broadcaster",
    "prepare_event",
    "set_broadcaster",
    "validate_channel",
]

_log = Logger()
# Channel names a Broadcaster remembers as checked (its memory stays bounded
# however many names a program makes up; past it, names are checked again).
_REMEMBERED_NAMES = 256


class Publisher(Protocol):
    """
    Where a L{Broadcaster} sends prepared events, in the reactor thread: a
    L{Hub} (which hands them to its backplane).
    """

    def publish(self, channel: str, body: bytes) -> int | Deferred[int]:
        """Publish an encoded event body; return (a Deferred of) the delivery count."""

    def publish_many(self, channel: str, bodies: Sequence[bytes]) -> int | Deferred[int]:
        """Publish several encoded bodies of one channel, in order."""

    def publish_event(self, channel: str, body: bytes) -> Deferred[Published]:
        """Publish an encoded event body; answer with its id and delivery count."""


def validate_timeout(timeout: object) -> float:
    """
    Check the C{timeout} given to C{broadcast_and_wait()}, returning it.

    @raise TypeError: if it is not an int or a float (a bool is neither).
    @raise ValueError: if it is negative or not a number.
    """
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
    if not timeout >= 0:  # (NaN too)
        raise ValueError("timeout must not be negative")
    return float(timeout)


def prepare_event(
    data: object,
    *,
    event: str | None = None,
    channel: str | None = None,
    retry: int | None = None,
) -> tuple[str, bytes]:
    """
    Validate and encode an event the way C{broadcast()} does, without
    sending it.  May be called in any thread.

    @return: the channel (the default one for L{None}) and the encoded body
        (without its id).
    @raise TypeError: for values of the wrong type.
    @raise ValueError: for values that would break the stream.
    """
    name = DEFAULT_CHANNEL if channel is None else validate_channel(channel)
    return name, encode_body(data, event=event, retry=retry)


def prepare_shared_event(
    data: object,
    *,
    event: str | None = None,
    channel: str | None = None,
    retry: int | None = None,
) -> tuple[str, bytes]:
    """
    Like L{prepare_event}, for an event written straight into a shared
    backplane (no server to deliver it locally): one larger than
    L{MAX_BODY} bytes encoded, which every server would drop, is refused.
    May be called in any thread.

    @raise ValueError: also for an event larger than L{MAX_BODY} bytes.
    """
    name, body = prepare_event(data, event=event, channel=channel, retry=retry)
    if len(body) > MAX_BODY:
        raise ValueError(
            f"an event sent through a shared backplane may be at most {MAX_BODY} bytes "
            f"encoded, not {len(body)}"
        )
    return name, body


class Broadcaster:
    """
    Send events to every connected client of a channel, from any thread.

    Events are validated and encoded in the caller's thread (so a bad value
    raises there and nothing is sent), then handed to the reactor thread.
    Events broadcast from one thread are delivered in the order they were
    broadcast.

    @param publisher: a L{Hub}; called in the reactor thread.
    @param reactor: the reactor, which provides C{callFromThread} and
        C{callLater} (default: the global one, looked up late).
    @ivar check_channel: the server's check of a channel name a page asks
        for (L{StreamOptions.check_channel
        <wsgi_sse._options.StreamOptions.check_channel>}), or L{None}: an
        event broadcast on a channel it refuses, which no page of this
        server can subscribe to, is sent all the same (another server
        sharing the backplane may serve it) and logged as a warning, once
        per channel name.
    """

    check_channel: Callable[[str], object] | None = None

    def __init__(self, publisher: Publisher, *, reactor: Any = None) -> None:
        self.publisher = publisher
        self._reactor = reactor
        # Channel names check_channel accepted, and those it was warned of.
        self._subscribable: set[str] = set()
        self._warned: set[str] = set()
        # Events from other threads wait here for the reactor thread.  One
        # callFromThread per batch, not per event: while the reactor is busy
        # (fanning out the previous event), new broadcasts pile up and are
        # then published together.  The batch goes out after the reactor's
        # next look at its sockets (see _drain_soon).
        self._queue: list[tuple[str, bytes]] = []
        self._queue_lock = threading.Lock()
        self._drain_scheduled = False

    @property
    def reactor(self) -> Any:
        """The reactor events are handed to."""
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def prepare(
        self,
        data: object,
        *,
        event: str | None = None,
        channel: str | None = None,
        retry: int | None = None,
    ) -> tuple[str, bytes]:
        """
        Validate and encode an event without sending it.  May be called in
        any thread.

        @return: the channel and the encoded body (without its id).
        """
        prepared = prepare_event(data, event=event, channel=channel, retry=retry)
        if self.check_channel is not None and prepared[0] not in self._subscribable:
            self._check_subscribable(prepared[0])
        return prepared

    def _check_subscribable(self, name: str) -> None:
        """Remember C{name} if a page may subscribe to it, else warn of it (once)."""
        check = self.check_channel
        assert check is not None
        try:
            check(name)
        except ValueError as why:
            if name not in self._warned and len(self._warned) < _REMEMBERED_NAMES:
                self._warned.add(name)
                _log.warn(
                    "broadcast on channel {channel!r}, which no page of this server can"
                    " subscribe to ({why}): check the name, or the server's"
                    " channel_pattern",
                    channel=name,
                    why=str(why),
                )
            return
        if len(self._subscribable) < _REMEMBERED_NAMES:
            self._subscribable.add(name)

    def broadcast(
        self,
        data: object,
        *,
        event: str | None = None,
        channel: str | None = None,
        retry: int | None = None,
    ) -> None:
        """
        Send an event to every client subscribed to C{channel}, without
        waiting for it to be delivered.  May be called in any thread.

        @param data: a C{str} is sent as it is; anything else as JSON.
        @param event: the event name (C{addEventListener(event, ...)} in the
            browser); L{None} for a plain C{message}.
        @param channel: L{None} for the default channel.
        @param retry: a new reconnection delay for the clients, in ms.
        @raise TypeError: for values of the wrong type (data that JSON cannot
            encode, a non-int C{retry}, ...); nothing is sent.
        @raise ValueError: for values that would break the stream (CR, LF or
            NUL in C{event}, a negative C{retry}, ...); nothing is sent.
        """
        name, body = self.prepare(data, event=event, channel=channel, retry=retry)
        self.publish_prepared(name, body)

    def publish_prepared(self, channel: str, body: bytes) -> None:
        """
        Send an event that L{prepare} encoded, without waiting.  May be
        called in any thread; events from one thread keep their order.
        """
        if threadable.isInIOThread():
            self.publisher.publish(channel, body)
        else:
            with self._queue_lock:
                self._queue.append((channel, body))
                if self._drain_scheduled:
                    return
                self._drain_scheduled = True
            # callFromThread keeps a FIFO queue, so one thread's events keep
            # their order; it costs a fraction of crochet's EventualResult.
            self.reactor.callFromThread(self._drain_soon)

    def _drain_soon(self) -> None:
        """
        Publish the queued events after the reactor's next look at its
        sockets.  Reactor thread.

        By then the answer of the view that broadcast (handed over right
        after) is on its way, and the requests that arrived meanwhile have
        been read and handed to the WSGI threads: under load, their
        broadcasts join this batch, and each client gets the batch in one
        write instead of one per event.  Hand-overs that must come after
        the events (L{broadcast_and_wait}, L{call_after_broadcasts}) publish
        what is queued first.
        """
        # A call timed now runs in this same turn, after the calls handed
        # over by threads; the one it times runs in the next turn, once the
        # reactor has looked at its sockets (and keeps that look from
        # waiting).  callFromThread would do the same through the reactor's
        # waker pipe: two writes, then a read and a turn of its own.
        reactor = self.reactor
        reactor.callLater(0, reactor.callLater, 0, self._drain)

    def call_after_broadcasts(self, f: Any, *args: Any) -> None:
        """
        Call C{f(*args)} in the reactor thread once the events broadcast so
        far from any thread have been published.  May be called in any
        thread.
        """
        if threadable.isInIOThread():
            self._drain_queued()
            f(*args)
        else:
            self.reactor.callFromThread(self._after_queued, f, *args)

    def _after_queued(self, f: Any, *args: Any) -> Any:
        self._drain_queued()
        return f(*args)

    def _drain_queued(self) -> None:
        if self._queue:
            self._drain()

    def close(self, channel: str) -> None:
        """
        End every stream subscribed to C{channel}, in every process sharing
        this server's backplane, once it has been sent everything broadcast
        before this call.  The close has an id, like an event: a stream
        that resumes from before it (a reconnecting page, a view's stream
        that started while the close happened) is replayed up to it and
        ended too; streams that start after it live on.  May be called in
        any thread; does not wait.

        A browser's C{EventSource} reconnects when its response ends: see
        the guide to views for how a page stops it.

        @raise TypeError: if C{channel} is not a str.
        @raise ValueError: if it is empty or contains control characters.
        """
        name = validate_channel(channel)
        if threadable.isInIOThread():
            # Broadcasts from other threads still waiting go first.
            self._drain_queued()
        self.publish_prepared(name, CLOSE_BODY)

    def _drain(self) -> None:
        """Publish every queued event, in order.  Called in the reactor thread."""
        with self._queue_lock:
            queue, self._queue = self._queue, []
            self._drain_scheduled = False
        publisher = self.publisher
        # A run of events on one channel goes in one call: each subscriber
        # then gets them in a single write, and a shared backplane carries
        # them in one round trip (see Hub.publish_many).
        i, end = 0, len(queue)
        while i < end:
            name = queue[i][0]
            j = i + 1
            while j < end and queue[j][0] == name:
                j += 1
            try:
                if j - i == 1:
                    publisher.publish(name, queue[i][1])
                else:
                    publisher.publish_many(name, [body for _, body in queue[i:j]])
            except Exception:  # noqa: BLE001 - logged, and the rest still published
                # One failing publisher call must not lose the events queued
                # behind it (callFromThread per event used to isolate them).
                _log.failure("publishing to {channel!r} failed", channel=name)
            i = j

    def broadcast_and_wait(
        self,
        data: object,
        *,
        event: str | None = None,
        channel: str | None = None,
        retry: int | None = None,
        timeout: float = 5.0,
    ) -> int:
        """
        Like L{broadcast}, but wait until the event has been handed to the
        clients and return how many there were.  Call it from a thread other
        than the reactor's (a WSGI view, a worker thread).

        @raise RuntimeError: in the reactor thread (it would deadlock), or if
            the reactor is not managed by crochet (call
            L{make_application<wsgi_sse.make_application>} or
            C{crochet.setup()} first).
        @raise crochet.TimeoutError: if the reactor did not answer in time.
        @raise TypeError: for values of the wrong type (C{timeout} included);
            nothing is sent.
        @raise ValueError: for values that would break the stream, or a
            negative C{timeout}; nothing is sent.
        """
        if threadable.isInIOThread():
            raise RuntimeError(
                "broadcast_and_wait() would block the reactor thread; use broadcast()"
            )
        timeout = validate_timeout(timeout)
        name, body = self.prepare(data, event=event, channel=channel, retry=retry)
        import crochet

        try:
            # After the events this thread (or another) broadcast before.
            result = crochet.run_in_reactor(self._after_queued)(self.publisher.publish, name, body)
        except AttributeError:
            raise RuntimeError(
                "crochet is not set up: run under make_application() or call crochet.setup()"
            ) from None
        count = result.wait(timeout)
        assert isinstance(count, int)
        return count


_lock = threading.Lock()
_current: Broadcaster | None = None


def get_broadcaster() -> Broadcaster:
    """
    Return the broadcaster that L{broadcast} uses, creating one (over a new
    L{Hub}) if there is none yet.  May be called in any thread.
    """
    global _current
    with _lock:
        if _current is None:
            _current = Broadcaster(Hub())
        return _current


def set_broadcaster(broadcaster: Broadcaster | None) -> Broadcaster | None:
    """
    Make C{broadcaster} the one L{broadcast} uses; return the previous one.

    L{make_application<wsgi_sse.make_application>} calls this for the server
    it builds; tests and applications composing their own pieces may call it
    too.  May be called in any thread.
    """
    global _current
    with _lock:
        previous, _current = _current, broadcaster
        return previous


def broadcast(
    data: object,
    *,
    event: str | None = None,
    channel: str | None = None,
    retry: int | None = None,
) -> None:
    """
    Send an event to every connected client of C{channel}, from any thread,
    without waiting.  See L{Broadcaster.broadcast}.

    >>> broadcast("Ada knocked")                          # doctest: +SKIP
    >>> broadcast({"n": 3}, event="count", channel="user-42")  # doctest: +SKIP
    """
    get_broadcaster().broadcast(data, event=event, channel=channel, retry=retry)


def close(channel: str) -> None:
    """
    End every stream held on C{channel} after it has received everything
    broadcast before the call, from any thread, without waiting.  See
    L{Broadcaster.close}.

    >>> broadcast({"done": True}, event="done", channel="job-42")  # doctest: +SKIP
    >>> close("job-42")                                             # doctest: +SKIP
    """
    get_broadcaster().close(channel)


def broadcast_and_wait(
    data: object,
    *,
    event: str | None = None,
    channel: str | None = None,
    retry: int | None = None,
    timeout: float = 5.0,
) -> int:
    """
    Send an event and wait until it has been handed to the clients; return
    how many.  See L{Broadcaster.broadcast_and_wait}.
    """
    return get_broadcaster().broadcast_and_wait(
        data, event=event, channel=channel, retry=retry, timeout=timeout
    )
