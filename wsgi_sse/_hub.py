"""
The hub: channels, subscribers, event ids and the replay history.

Every method of L{Hub} must be called in the reactor thread; the only code
that crosses threads is in L{wsgi_sse._broadcast}.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence

from twisted.logger import Logger

from ._encoding import frame

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

__all__ = [
    "CLOSE_BODY",
    "DEFAULT_CHANNEL",
    "DEFAULT_HISTORY_CHANNELS",
    "Event",
    "Hub",
    "HubStats",
    "Subscriber",
]

DEFAULT_CHANNEL = "default"
"""The channel of a connection that names none, and of a broadcast that names none."""

CLOSE_BODY = b":close\n"
"""
The body published to close a channel (C{close(channel)}).  It travels the
publish path like an event (so a backplane carries it to every process, in
order with the events before it) and gets an id like one, but a hub that
receives it sends only that id (C{id: ...} and a blank line: the browser's
C{lastEventId} moves past it, nothing is dispatched) and then ends the
streams subscribed to the channel.  It is kept in the history: a stream
that resumes from before it is replayed up to it and ended too.  No event
body can be equal to it (L{encode_body<wsgi_sse._encoding.encode_body>}
always ends with C{data:} lines).
"""

DEFAULT_HISTORY_CHANNELS = 10_000
"""Channels a hub keeps at most (see L{Hub}'s C{history_channels})."""


class Subscriber(Protocol):
    """Anything the hub can deliver encoded events to (a connected stream)."""

    def send(self, wire: bytes) -> None:
        """Deliver one complete, encoded event.  Called in the reactor thread."""


@dataclass(slots=True, frozen=True)
class Event:
    """
    One published event as it is kept in the history.

    @ivar seq: the position in this hub's id space, for ordering and replay.
    @ivar id: the id sent on the wire (C{"<instance>-<seq>"}).
    @ivar channel: the channel it was published on.
    @ivar wire: the complete encoded event, id line included.
    @ivar published: the clock time it was published at.
    @ivar closes: whether it is the close of its channel (L{CLOSE_BODY}):
        streams end after it.
    """

    seq: int
    id: str
    channel: str
    wire: bytes
    published: float
    closes: bool = False


@dataclass(slots=True)
class HubStats:
    """Counters kept by a hub since it was created."""

    events_published: int = 0
    deliveries: int = 0
    bytes_queued: int = 0


class _Channel:
    __slots__ = ("evicted_upto", "history", "name", "subscribers")

    def __init__(self, name: str) -> None:
        self.name = name
        # A dict keeps insertion order and O(1) removal; values unused.
        self.subscribers: dict[Subscriber, None] = {}
        self.history: deque[Event] = deque()
        # Highest seq dropped from this channel's history (0: nothing yet).
        self.evicted_upto = 0


def _new_instance_id() -> str:
    """A short token that differs between runs, so old ids are never mistaken for new ones."""
    return _base36(int(time.time() * 1000))


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    while True:
        n, r = divmod(n, 36)
        out.append(digits[r])
        if not n:
            return "".join(reversed(out))


class Hub:
    """
    Route published events to the subscribers of their channel and keep a
    bounded history of each channel for replay.

    Ids have the form C{"<instance>-<seq>"}: C{seq} grows by one per event
    across all channels, and C{instance} changes every time a hub is created,
    so a browser reconnecting with an id from a previous run of the server is
    told to reset instead of being replayed the wrong events.

    All methods: call in the reactor thread.

    @param history_size: events kept per channel for replay (0 disables replay).
    @param history_age: seconds an event stays in the history (L{prune}
        forgets older ones; the server calls it on a timer).
    @param history_channels: channels kept at most.  Publishing to one more
        forgets the history of the channel published to least recently that
        nobody listens to (a client resuming there gets C{reset}); channels
        with listeners are never forgotten.
    @param clock: the time source (the reactor by default).
    @param instance_id: the id prefix; random-enough by default, fixed in tests.
    """

    log = Logger()

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_age: float = 600.0,
        history_channels: int = DEFAULT_HISTORY_CHANNELS,
        clock: IReactorTime | None = None,
        instance_id: str | None = None,
    ) -> None:
        if history_size < 0:
            raise ValueError("history_size must not be negative")
        if history_age <= 0:
            raise ValueError("history_age must be positive")
        if history_channels < 1:
            raise ValueError("history_channels must be at least 1")
        self.history_size = history_size
        self.history_age = history_age
        self.history_channels = history_channels
        self._clock = clock
        self.instance_id = instance_id if instance_id is not None else _new_instance_id()
        self._prefix = self.instance_id + "-"
        self._seq = 0
        self._last_id = self._prefix + "0"
        self._channels: dict[str, _Channel] = {}
        self._subscriptions: dict[Subscriber, tuple[str, ...]] = {}
        # The highest seq evicted from any channel that was later forgotten.
        self._forgotten_upto = 0
        self.stats = HubStats()

    # -- time ------------------------------------------------------------

    def _now(self) -> float:
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        assert self._clock is not None
        return self._clock.seconds()

    # -- ids -------------------------------------------------------------

    @property
    def last_id(self) -> str:
        """
        The id of the newest event published or delivered (C{"<instance>-0"}
        before any): a client resuming from it misses nothing that follows.
        """
        return self._last_id

    def parse_id(self, event_id: str) -> int | None:
        """
        Return the seq of an id this hub issued, or L{None} if it did not
        issue it (another run, another server, garbage, or from the future).
        """
        if not event_id.startswith(self._prefix):
            return None
        digits = event_id[len(self._prefix) :]
        if not digits.isdigit() or not digits.isascii() or len(digits) > 20:
            return None
        seq = int(digits)
        if seq > self._seq:
            return None
        return seq

    # -- subscriptions -----------------------------------------------------

    def subscribe(self, subscriber: Subscriber, channels: Iterable[str]) -> None:
        """Start delivering events of C{channels} to C{subscriber}."""
        names = tuple(dict.fromkeys(channels))
        if subscriber in self._subscriptions:
            raise ValueError("already subscribed")
        self._subscriptions[subscriber] = names
        for name in names:
            channel = self._channels.get(name)
            if channel is None:
                channel = self._channels[name] = _Channel(name)
            channel.subscribers[subscriber] = None

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop delivering to C{subscriber}; unknown subscribers are ignored."""
        names = self._subscriptions.pop(subscriber, ())
        for name in names:
            channel = self._channels.get(name)
            if channel is None:
                continue
            channel.subscribers.pop(subscriber, None)
            self._forget_if_idle(channel)

    def subscriber_count(self, channel: str | None = None) -> int:
        """Connections subscribed to C{channel}, or to anything if L{None}."""
        if channel is None:
            return len(self._subscriptions)
        found = self._channels.get(channel)
        return len(found.subscribers) if found is not None else 0

    def channel_counts(self) -> dict[str, int]:
        """Subscribers per channel, for channels that have any."""
        return {name: len(ch.subscribers) for name, ch in self._channels.items() if ch.subscribers}

    # -- publishing --------------------------------------------------------

    def publish(self, channel: str, body: bytes) -> int:
        """
        Give C{body} (an event encoded without its id) the next id, keep it
        for replay and send it to every subscriber of C{channel}.

        A C{body} of L{CLOSE_BODY} closes the channel (see there).

        @return: the number of subscribers it was sent to.
        """
        self._seq += 1
        return self.deliver(self._seq, self._prefix + str(self._seq), channel, body)

    def deliver(self, seq: int, event_id: str, channel: str, body: bytes) -> int:
        """
        Record and fan out an event whose id was assigned elsewhere (by
        L{publish}, or by a backplane shared between processes).

        C{seq} must grow with every call.  A C{body} of L{CLOSE_BODY} closes
        the channel.
        """
        ch = self._channel(channel)
        wire = self._record(seq, event_id, ch, body, self._now())
        if body == CLOSE_BODY:
            return self._end(ch, wire)
        return self._fan_out(ch, wire, 1)

    def publish_many(self, channel: str, bodies: Sequence[bytes]) -> int:
        """
        Publish several events on one channel at once: each gets its own id
        and history entry, as with L{publish}, but every subscriber receives
        them joined in a single write.

        Events that queued up while the reactor was busy (a burst of
        broadcasts from the WSGI threads) then cost one socket write per
        subscriber instead of one per event and subscriber.

        A L{CLOSE_BODY} among C{bodies} closes the channel after the events
        before it.

        @return: the number of subscribers they were sent to.
        """
        if CLOSE_BODY in bodies:
            at = list(bodies).index(CLOSE_BODY)
            count = self.publish_many(channel, bodies[:at]) if at else 0
            count = max(count, self.publish(channel, CLOSE_BODY))
            rest = bodies[at + 1 :]
            return self.publish_many(channel, rest) if rest else count
        ch = self._channel(channel)
        now = self._now()
        prefix = self._prefix
        wires = []
        for body in bodies:
            self._seq += 1
            seq = self._seq
            wires.append(self._record(seq, prefix + str(seq), ch, body, now))
        if not wires:
            return len(ch.subscribers)
        return self._fan_out(ch, b"".join(wires), len(wires))

    def _end(self, ch: _Channel, wire: bytes) -> int:
        """
        Close C{ch}: send its subscribers the close's id (C{wire}), then
        unsubscribe each (from all its channels) and end it, if it has an
        C{end()} method.

        @return: the number of streams ended.
        """
        subscribers = tuple(ch.subscribers)
        for subscriber in subscribers:
            subscriber.send(wire)
            self.unsubscribe(subscriber)
            end = getattr(subscriber, "end", None)
            if end is not None:
                end()
        self._forget_if_idle(ch)
        return len(subscribers)

    def _channel(self, channel: str) -> _Channel:
        """The channel C{channel} is published to, moved to the end of the eviction order."""
        channels = self._channels
        ch = channels.pop(channel, None)
        if ch is None:
            ch = _Channel(channel)
            if len(channels) >= self.history_channels:
                self._evict()
        # The dict's order: least recently published first.
        channels[channel] = ch
        return ch

    def _evict(self) -> None:
        """Make room for one more channel: forget those published to least recently."""
        channels = self._channels
        # Bounded work per call; channels with listeners are moved out of
        # the way, so later calls reach the idle ones behind them.
        budget = 64
        while len(channels) >= self.history_channels and budget:
            budget -= 1
            oldest = next(iter(channels.values()))
            if oldest.subscribers:
                del channels[oldest.name]
                channels[oldest.name] = oldest
                continue
            if oldest.history:
                oldest.evicted_upto = oldest.history[-1].seq
                oldest.history.clear()
            self._forget_if_idle(oldest)

    def _record(self, seq: int, event_id: str, ch: _Channel, body: bytes, now: float) -> bytes:
        """Frame one event and keep it in its channel's history; return the wire bytes."""
        if seq > self._seq:
            self._seq = seq
        self._last_id = event_id
        closes = body == CLOSE_BODY
        wire = frame(event_id, b"" if closes else body)
        if self.history_size:
            ch.history.append(Event(seq, event_id, ch.name, wire, now, closes))
            self._trim(ch, now)
        else:
            ch.evicted_upto = seq
        return wire

    def _fan_out(self, ch: _Channel, wire: bytes, events: int) -> int:
        """Write C{wire} (C{events} complete events) to every subscriber of C{ch}."""
        # The hot path: one pre-encoded bytes object handed to every
        # subscriber (StreamClient.send frames it for HTTP once, for all of
        # them, and writes it straight to the socket).  Iterate over a
        # snapshot: a send may drop a slow client, which unsubscribes it
        # while we loop.
        subscribers = tuple(ch.subscribers)
        for subscriber in subscribers:
            subscriber.send(wire)
        count = len(subscribers)
        stats = self.stats
        stats.events_published += events
        stats.deliveries += count * events
        stats.bytes_queued += count * len(wire)
        self._forget_if_idle(ch)
        return count

    def _forget_if_idle(self, ch: _Channel) -> None:
        """Delete a channel nobody listens to and that has no history left."""
        # The identity check: a subscriber dropped during a fan-out may have
        # forgotten the channel already.
        if not ch.subscribers and not ch.history and self._channels.get(ch.name) is ch:
            if ch.evicted_upto > self._forgotten_upto:
                self._forgotten_upto = ch.evicted_upto
            del self._channels[ch.name]

    def _trim(self, ch: _Channel, now: float) -> None:
        history = ch.history
        cutoff = now - self.history_age
        while history and (len(history) > self.history_size or history[0].published < cutoff):
            ch.evicted_upto = history.popleft().seq

    def prune(self) -> None:
        """
        Drop events older than C{history_age} from every channel, and forget
        the channels left with no history and no listener.
        """
        now = self._now()
        for ch in list(self._channels.values()):
            self._trim(ch, now)
            self._forget_if_idle(ch)

    # -- replay ------------------------------------------------------------

    def replay(self, channels: Iterable[str], last_event_id: str) -> list[Event] | None:
        """
        Return the events of C{channels} published after C{last_event_id}, in
        order, or L{None} if that cannot be done exactly (the id is unknown, or
        some events after it have already left the history).

        Call it in the same reactor turn as L{subscribe} so no event can fall
        between the replay and the live stream.
        """
        return self._missed(channels, last_event_id)

    def _missed(self, channels: Iterable[str], last_event_id: str) -> list[Event] | None:
        """The events after C{last_event_id} in this hub's history (see L{replay})."""
        seq = self.parse_id(last_event_id)
        if seq is None:
            return None
        now = self._now()
        selected: list[list[Event]] = []
        for name in dict.fromkeys(channels):
            ch = self._channels.get(name)
            if ch is None:
                # Never published to, or forgotten once its history emptied:
                # only the latter can hide events, and _forgotten_upto bounds
                # what any forgotten channel could have held.
                if seq < self._forgotten_upto:
                    return None
                continue
            self._trim(ch, now)
            if ch.evicted_upto > seq:
                return None
            if ch.history and ch.history[-1].seq > seq:
                selected.append(list(itertools.dropwhile(lambda e: e.seq <= seq, ch.history)))
        if not selected:
            return []
        if len(selected) == 1:
            return selected[0]
        return list(heapq.merge(*selected, key=lambda e: e.seq))

    def can_replay(self, channels: Iterable[str], last_event_id: str) -> bool:
        """Whether L{replay} would succeed now."""
        return self._missed(channels, last_event_id) is not None
