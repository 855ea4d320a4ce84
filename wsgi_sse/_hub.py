"""
The hub: channels, subscribers, event ids and the replay history.

Every method of L{Hub} must be called in the reactor thread; the only code
that crosses threads is in L{wsgi_sse._broadcast}.
"""

from __future__ import annotations

import heapq
import itertools
import math
import re
import secrets
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Protocol, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._backplane import LOCAL_BITS, Backplane, Entry, Fetched, LocalBackplane, Published
from ._checks import check_seconds
from ._client import send_to_each
from ._encoding import encode_body, frame
from ._names import CONTROL_CHANNEL, check_identity, validate_channel
from ._presence import PresenceTracker, parse_control, publish_control
from ._revoked import RevokedTokens
from ._tokens import MAX_TOKEN_TTL

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime

__all__ = [
    "CLOSE_BODY",
    "DEFAULT_CHANNEL",
    "DEFAULT_HISTORY_CHANNELS",
    "RESET",
    "Event",
    "Hub",
    "HubStats",
    "Joined",
    "Replay",
    "Route",
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

RESET = frame(None, encode_body("", event="reset"))
"""The control event telling a client its missed events cannot be replayed."""

_LOCAL_MASK = (1 << LOCAL_BITS) - 1
# A wire id: the backplane's id, then for a local-only event the publishing
# hub's instance and a counter.
_WIRE_ID = re.compile(r"([^.]{1,64})(?:\.([0-9a-z]{1,16})\.([0-9]{1,10}))?\Z")
_INSTANCE = re.compile(r"[0-9a-z]{1,16}\Z")


class Subscriber(Protocol):
    """Anything the hub can deliver encoded events to (a connected stream)."""

    def send(self, wire: bytes) -> None:
        """Deliver one complete, encoded event.  Called in the reactor thread."""


def _identity(subscriber: Subscriber) -> str | None:
    """
    The identity a subscriber carries (its C{identity} attribute), for
    presence and revocation; L{None} for a guest.
    """
    identity = getattr(subscriber, "identity", None)
    return identity if isinstance(identity, str) else None


def revocation_covers(
    revoked_identity: str | None,
    revoked_channel: str | None,
    identity: str | None,
    channels: Iterable[str],
) -> bool:
    """
    Whether a revocation of C{revoked_identity} and/or C{revoked_channel}
    (L{None}: any) covers a stream of C{identity} on C{channels}.
    """
    return (revoked_identity is None or revoked_identity == identity) and (
        revoked_channel is None or revoked_channel in channels
    )


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
    replays_fetched: int = 0
    replay_resets: int = 0


Replay = Callable[[list[Event] | None], None]
"""
Takes a joining subscriber's replay (see L{Hub.join}): the events it missed,
oldest first, or L{None} when they cannot be replayed (a reset).
"""

Route = Callable[[str], Subscriber]
"""
Gives, for each channel of a subscriber, what that channel's live events
are delivered to instead of the subscriber itself (see L{Hub.subscribe}).
"""


@dataclass(slots=True, frozen=True)
class Joined:
    """
    How a subscriber joined its channels (see L{Hub.join}).

    @ivar replayed: events it was sent (or handed to C{replay}) from the
        history before live ones.
    @ivar reset: it was sent C{reset}: its missed events could not be replayed.
    @ivar ended: a channel was closed in what it missed: it was replayed up
        to the close and ended (its C{end()} called), not subscribed.
    """

    replayed: int
    reset: bool
    ended: bool = False


class _Channel:
    __slots__ = ("_snapshot", "evicted_upto", "history", "name", "subscribers")

    def __init__(self, name: str) -> None:
        self.name = name
        # A dict keeps insertion order and O(1) removal; values unused.
        # Change it only through add() and discard().
        self.subscribers: dict[Subscriber, None] = {}
        # The subscribers as a tuple, kept until they change: a fan-out
        # iterates over a snapshot (a send may drop a slow client, which
        # unsubscribes it), and most events find the same subscribers as
        # the last one (10,000 of them are a tuple built, and freed, per
        # event otherwise).
        self._snapshot: tuple[Subscriber, ...] | None = ()
        self.history: deque[Event] = deque()
        # Highest seq dropped from this channel's history (0: nothing yet).
        self.evicted_upto = 0

    def add(self, subscriber: Subscriber) -> None:
        self.subscribers[subscriber] = None
        self._snapshot = None

    def discard(self, subscriber: Subscriber) -> None:
        if self.subscribers.pop(subscriber, _MISSING) is not _MISSING:
            self._snapshot = None

    def snapshot(self) -> tuple[Subscriber, ...]:
        """The subscribers now, in the order they subscribed."""
        snapshot = self._snapshot
        if snapshot is None:
            snapshot = self._snapshot = tuple(self.subscribers)
        return snapshot


_MISSING: Any = object()


_REVOCATIONS_KEPT = 1024
"""Revocations a hub remembers for L{Hub.revoked_since}."""


class RevocationWatch:
    """
    The revocations (L{Hub.end_streams}, here or from another process) made
    while a stream was not open yet: its hooks were running, and who it
    belongs to may not be known before they return.  See
    L{Hub.watch_revocations}.

    A watch is where the hub's revocations stood when it began (its
    L{Hub.revocation_mark}), read against the hub's last 1,024
    (L{Hub.revoked_since}): it holds no list of its own, and a revocation
    costs the hub nothing per watch, however many streams are opening.
    """

    __slots__ = ("_hub", "mark")

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self.mark = hub.revocation_mark

    def any(self) -> bool:
        """Whether anything was revoked since the watch began."""
        return self._hub.revocation_mark != self.mark

    def revoked(self, identity: str | None, channels: Iterable[str]) -> bool:
        """
        Whether a stream of C{identity} on C{channels} was revoked since the
        watch began; C{True} past the hub's last 1,024 revocations (the
        stream is not known to be safe).
        """
        return self._hub.revoked_since(self.mark, identity, channels)


class _Held:
    """A subscriber waiting for its replay to come back from the backplane."""

    __slots__ = (
        "after",
        "channels",
        "done",
        "fetched",
        "preface",
        "replay",
        "route",
        "subscriber",
        "timer",
    )

    def __init__(
        self,
        subscriber: Subscriber,
        channels: tuple[str, ...],
        after: int,
        preface: bytes,
        replay: Replay | None,
        route: Route | None,
    ) -> None:
        self.subscriber = subscriber
        self.channels = channels
        self.after = after
        self.preface = preface
        self.replay = replay
        self.route = route
        self.done: Deferred[Joined] = Deferred()
        self.fetched: Fetched | None = None
        self.timer: Any = None  # an IDelayedCall


def _base36(n: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = []
    while True:
        n, r = divmod(n, 36)
        out.append(digits[r])
        if not n:
            return "".join(reversed(out))


def _new_instance_id() -> str:
    """A short random token: ids of another run or process are never mistaken for ours."""
    return _base36(secrets.randbits(48))


class Hub:
    """
    Route published events to the subscribers of their channel and keep a
    bounded history of each channel for replay.

    The hub is composed with a L{backplane<wsgi_sse._backplane.Backplane>},
    which gives every event its id and carries it to every process: by
    default a L{LocalBackplane<wsgi_sse._backplane.LocalBackplane>} (ids
    C{"<instance>-<n>"}, C{instance} new every run, so a browser reconnecting
    with an id of a previous run is told to reset instead of being replayed
    the wrong events); Redis or PostgreSQL to share events between processes.

    While a shared backplane is unreachable, events are delivered to this
    process's clients only (I{local-only}): their ids are the id of the last
    shared event followed by this hub's instance and a counter
    (C{"1700000000000-0.k3x9ab.1"}); only this process replays them, another
    one replays from the shared event before them.

    All methods: call in the reactor thread.

    @param backplane: where ids come from and events go (default: in-process).
    @param history_size: events kept per channel for replay (0 disables replay).
    @param history_age: seconds an event stays in the history (L{prune}
        forgets older ones; the server calls it on a timer).
    @param history_channels: channels kept at most.  Publishing to one more
        forgets the history of the channel published to least recently that
        nobody listens to (a client resuming there gets C{reset}); channels
        with listeners are never forgotten.
    @param clock: the time source (the reactor by default).
    @param instance_id: 1-16 characters of C{[0-9a-z]} naming this hub in
        ids; random by default, fixed in tests.
    @param replay_wait: seconds a reconnecting client may wait for this
        process to catch up with a shared backplane before it is sent C{reset}.
    @param max_held: clients that may wait for a replay from a shared
        backplane at once; past it, new ones are sent C{reset}.
    @param presence_interval: seconds between the full presence reports
        this process sends through a shared backplane; a process silent
        for three intervals is forgotten (see L{presence}).
    """

    log = Logger()

    def __init__(
        self,
        *,
        backplane: Backplane | None = None,
        history_size: int = 1000,
        history_age: float = 600.0,
        history_channels: int = DEFAULT_HISTORY_CHANNELS,
        clock: IReactorTime | None = None,
        instance_id: str | None = None,
        replay_wait: float = 5.0,
        max_held: int = 1000,
        presence_interval: float = 10.0,
    ) -> None:
        if history_size < 0:
            raise ValueError("history_size must not be negative")
        check_seconds("history_age", history_age, positive=True)
        if history_channels < 1:
            raise ValueError("history_channels must be at least 1")
        if instance_id is None:
            instance_id = _new_instance_id()
        if not _INSTANCE.match(instance_id):
            raise ValueError("instance_id must be 1-16 characters of [0-9a-z]")
        self.history_size = history_size
        self.history_age = history_age
        self.history_channels = history_channels
        self.replay_wait = replay_wait
        self.max_held = max_held
        self._clock = clock
        self.instance_id = instance_id
        self._channels: dict[str, _Channel] = {}
        self._subscriptions: dict[Subscriber, tuple[str, ...]] = {}
        # Routed subscribers (see subscribe()): channel -> what receives it,
        # and back from each of those to its subscriber.
        self._routes: dict[Subscriber, dict[str, Subscriber]] = {}
        self._routed: dict[Subscriber, Subscriber] = {}
        # The highest seq evicted from any channel that was later forgotten.
        self._forgotten_upto = 0
        self.stats = HubStats()
        # Positions (backplane position << LOCAL_BITS | local-only number).
        self._seq = 0
        # Every event with a seq above this one reached this hub.
        self._base_seq = 0
        self._last_shared_seq = 0
        self._last_shared_id = ""
        self._last_id = ""
        self._local_count = 0
        self._held: dict[Subscriber, _Held] = {}
        self._waiting: list[_Held] = []
        # The revocations made so far (end_streams() calls), and the last
        # ones: (number, identity, channel), for revoked_since().
        self._revocations = 0
        self._recent_revocations: deque[tuple[int, str | None, str | None]] = deque(
            maxlen=_REVOCATIONS_KEPT
        )
        # The revocations made here or heard from another process, for
        # resend_revocations: (when, identity, channel), in the order known.
        self._known_revocations: deque[tuple[float, str | None, str | None]] = deque(
            maxlen=_REVOCATIONS_KEPT
        )
        self._next_resend = 0.0
        self._resend_call: IDelayedCall | None = None
        self.revoked_tokens = RevokedTokens()
        """When tokens were last revoked, for L{token_revoked}."""
        self.revocation_hooks: list[Callable[[str | None, str | None], int]] = []
        """
        Called by L{end_streams} with its identity and channel, for streams
        no longer subscribed that still hold a connection (ended while their
        reader is behind): each ends its own and says how many.
        """
        self.backplane: Backplane = (
            backplane if backplane is not None else LocalBackplane(instance_id)
        )
        self.presence = PresenceTracker(self, interval=presence_interval)
        """Who is connected to each channel (see L{wsgi_sse.presence})."""
        self.backplane.attach(self)

    # -- time ------------------------------------------------------------

    def _now(self) -> float:
        seconds: float = self._reactor().seconds()
        return seconds

    def _reactor(self) -> Any:
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = reactor
        return self._clock

    # -- ids -------------------------------------------------------------

    @property
    def last_id(self) -> str:
        """
        The id of the newest event published or delivered (the backplane's
        position before any): a client resuming from it misses nothing that
        follows.
        """
        return self._last_id

    def _position(self, event_id: str) -> tuple[int, str, int] | None:
        """(seq, the backplane's part of the id, its position) of any wire id, or None."""
        match = _WIRE_ID.match(event_id)
        if match is None:
            return None
        shared, instance, local = match.groups()
        position = self.backplane.parse_id(shared)
        if position is None or position < 0:
            return None
        seq = position << LOCAL_BITS
        if instance is not None:
            number = int(local)
            if number >= 1 << LOCAL_BITS:
                return None
            if instance == self.instance_id:
                seq |= number
        return seq, shared, position

    def parse_id(self, event_id: str) -> int | None:
        """
        Return the position of C{event_id} in this hub if its own history
        can answer for it, else L{None} (another run, another server,
        garbage, from the future, or older than this process).
        """
        found = self._position(event_id)
        if found is None:
            return None
        seq = found[0]
        if seq < self._base_seq or seq > self._seq:
            return None
        return seq

    # -- what backplanes call ----------------------------------------------

    def start_at(self, position: int, event_id: str) -> None:
        """
        Declare that this hub receives every event after C{position} (the
        backplane's head when this process started reading it).
        """
        seq = position << LOCAL_BITS
        if seq > self._seq or not self._last_id:
            self._base_seq = self._seq = self._last_shared_seq = seq
            self._last_shared_id = self._last_id = event_id
            self._local_count = 0
            if self._waiting:
                self._check_waiting()

    def restart_at(self, position: int, event_id: str) -> None:
        """
        Start over from C{position}: the backplane lost its history or moved
        backwards (a deleted stream or table).  The history kept here is
        dropped, clients waiting for a replay are reset, and ids issued
        before are unknown from now on.
        """
        for held in list(self._held.values()):
            self._release(held, None)
        for ch in list(self._channels.values()):
            ch.history.clear()
            ch.evicted_upto = 0
            self._forget_if_idle(ch)
        self._forgotten_upto = 0
        self._seq = -1
        self.start_at(position, event_id)

    def deliver_batch(self, entries: Sequence[Entry]) -> list[int]:
        """
        Record and fan out entries from the backplane, in its order; those
        at or before the newest one delivered are skipped (a re-read).
        Consecutive entries of one channel reach each subscriber in one write.

        @return: for each entry, the number of subscribers it reached.
        """
        if len(entries) == 1:
            # The common case (one broadcast), without the run bookkeeping.
            position, event_id, channel, body = entries[0]
            seq = position << LOCAL_BITS
            if seq <= self._seq:
                return [0]
            if channel == CONTROL_CHANNEL:
                self._forged_control(seq, event_id)
                return [0]
            ch = self._channel(channel)
            wire = self._record(seq, event_id, ch, body, self._now())
            self._last_shared_seq = seq
            self._last_shared_id = event_id
            self._local_count = 0
            count = self._end(ch, wire) if body == CLOSE_BODY else self._fan_out(ch, wire, 1)
            if self._waiting:
                self._check_waiting()
            return [count]
        counts = [0] * len(entries)
        now = self._now()
        i, end = 0, len(entries)
        while i < end:
            channel = entries[i][2]
            if channel == CONTROL_CHANNEL:
                position, event_id, _, body = entries[i]
                if position << LOCAL_BITS > self._seq:
                    self._forged_control(position << LOCAL_BITS, event_id)
                i += 1
                continue
            ch = self._channel(channel)
            if entries[i][3] == CLOSE_BODY:
                # close(channel): ends the channel's streams after what came
                # before it.
                position, event_id = entries[i][0], entries[i][1]
                seq = position << LOCAL_BITS
                if seq > self._seq:
                    wire = self._record(seq, event_id, ch, CLOSE_BODY, now)
                    self._last_shared_seq = seq
                    self._last_shared_id = event_id
                    self._local_count = 0
                    counts[i] = self._end(ch, wire)
                else:
                    self._forget_if_idle(ch)
                i += 1
                continue
            wires = []
            delivered = []
            j = i
            while j < end and entries[j][2] == channel and entries[j][3] != CLOSE_BODY:
                position, event_id, _, body = entries[j]
                seq = position << LOCAL_BITS
                if seq > self._seq:
                    wires.append(self._record(seq, event_id, ch, body, now))
                    self._last_shared_seq = seq
                    self._last_shared_id = event_id
                    self._local_count = 0
                    delivered.append(j)
                j += 1
            if wires:
                count = self._fan_out(
                    ch, wires[0] if len(wires) == 1 else b"".join(wires), len(wires)
                )
                for k in delivered:
                    counts[k] = count
            else:
                self._forget_if_idle(ch)
            i = j
        if self._waiting:
            self._check_waiting()
        return counts

    def deliver_local(self, channel: str, bodies: Sequence[bytes]) -> Published:
        """
        Deliver events to this process's clients only (the shared backplane
        is unreachable), with ids only this process replays.
        """
        if channel == CONTROL_CHANNEL:
            # Meant for the other processes, which cannot be reached.
            return Published(self._last_id, 0)
        ch = self._channel(channel)
        now = self._now()
        wires: list[bytes] = []
        event_id = self._last_id
        count = len(ch.subscribers)
        for body in bodies:
            self._local_count += 1
            if self._local_count >= 1 << LOCAL_BITS:  # pragma: no cover - 4e9 events
                raise OverflowError("too many local-only events in a row")
            event_id = f"{self._last_shared_id}.{self.instance_id}.{self._local_count}"
            wire = self._record(self._last_shared_seq | self._local_count, event_id, ch, body, now)
            if body == CLOSE_BODY:
                if wires:
                    self._fan_out(ch, b"".join(wires), len(wires))
                    wires = []
                count = self._end(ch, wire)
                ch = self._channel(channel)
            else:
                wires.append(wire)
        if wires:
            count = self._fan_out(ch, b"".join(wires), len(wires))
        return Published(event_id, count)

    # -- subscriptions -----------------------------------------------------

    def join(
        self,
        subscriber: Subscriber,
        channels: Iterable[str],
        last_event_id: str | None = None,
        *,
        preface: bytes = b"",
        replay: Replay | None = None,
        route: Route | None = None,
    ) -> Deferred[Joined]:
        """
        Subscribe C{subscriber} to C{channels}, first sending it (in order,
        without gap or duplicate) C{preface} and every event published after
        C{last_event_id}; or C{reset} alone when they cannot be replayed.

        With C{replay}, the replay is handed over instead of sent: C{replay}
        is called with the events (L{None} for a reset, which is then not
        sent either), after C{preface} was sent and before the subscriber is
        subscribed, in the same reactor turn, so that the caller may write
        them at its own pace with live events queued behind.  If a channel
        was closed in them, they end with the close and the caller ends the
        subscriber (it is not subscribed, nor its C{end()} called).  A reset
        decided at once is the caller's to count; one after a fetch from the
        backplane counts in C{stats.replay_resets}, like every reset sent.

        When this process's history does not reach back to C{last_event_id}
        and the backplane is shared, the missed events are fetched from it:
        the subscriber is held meanwhile (see L{held_count}), then replayed
        and subscribed in one reactor turn.

        C{route}: live events go to C{route(channel)} for each channel (see
        L{subscribe}); the replay goes to C{subscriber} or C{replay} all the
        same.

        @return: a Deferred firing, once the subscriber is live, with how it
            joined (at once unless it was held).  It fires in the reactor
            turn that subscribed it, before any live event: a callback may
            still send something first (an C{init} event after a C{reset}).
        """
        names = tuple(dict.fromkeys(channels))
        if subscriber in self._subscriptions or subscriber in self._held:
            raise ValueError("already subscribed")
        if last_event_id is None:
            if preface:
                subscriber.send(preface)
            if replay is not None:
                replay([])
            self.subscribe(subscriber, names, route=route)
            return succeed(Joined(0, False))
        seq = self.parse_id(last_event_id)
        events = self._missed_after(names, seq) if seq is not None else None
        if events is not None:
            closed = next((n for n, e in enumerate(events) if e.closes), None)
            if closed is not None:
                events = events[: closed + 1]
            if replay is not None:
                if preface:
                    subscriber.send(preface)
                replay(events)
            else:
                wire = b"".join([preface, *(e.wire for e in events)])
                if wire:
                    subscriber.send(wire)
            if closed is not None:
                # Its channel was closed after its last event: replayed up to
                # the close, then ended.
                if replay is None:
                    _end_subscriber(subscriber)
                return succeed(Joined(len(events), False, True))
            self.subscribe(subscriber, names, route=route)
            return succeed(Joined(len(events), False))
        found = self._position(last_event_id) if self.backplane.shared else None
        if found is None or len(self._held) >= self.max_held:
            if replay is None:
                # (A caller taking the replay counts the reset it sends.)
                self.stats.replay_resets += 1
            self._send_reset(subscriber, replay)
            self.subscribe(subscriber, names, route=route)
            return succeed(Joined(0, True))
        held = self._held[subscriber] = _Held(subscriber, names, found[0], preface, replay, route)
        self.backplane.fetch_after(found[2], found[1]).addBoth(self._fetched, held)
        return held.done

    def subscribe(
        self, subscriber: Subscriber, channels: Iterable[str], *, route: Route | None = None
    ) -> None:
        """
        Start delivering events of C{channels} to C{subscriber} (no replay:
        see L{join}).

        With C{route}, each channel's events are delivered to
        C{route(channel)} instead (called once per channel, now): a
        subscriber that must know which channel an event came from (the
        hub hands every subscriber of a channel the same bytes) gets one
        receiver per channel.  They count as C{subscriber} (its identity,
        one subscription): L{unsubscribe}C{(subscriber)} stops them all, and
        a channel's close calls their C{end()}, if they have one, after
        unsubscribing C{subscriber} from every channel.
        """
        names = tuple(dict.fromkeys(channels))
        if subscriber in self._subscriptions or subscriber in self._held:
            raise ValueError("already subscribed")
        self._subscriptions[subscriber] = names
        if route is not None:
            targets = self._routes[subscriber] = {name: route(name) for name in names}
            for target in targets.values():
                self._routed[target] = subscriber
        for name in names:
            channel = self._channels.get(name)
            if channel is None:
                channel = self._channels[name] = _Channel(name)
            channel.add(subscriber if route is None else targets[name])
        self.presence.add(names, _identity(subscriber))

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop delivering to C{subscriber}; unknown subscribers are ignored."""
        held = self._held.pop(subscriber, None)
        if held is not None:
            self._cancel(held)
            return
        names = self._subscriptions.pop(subscriber, ())
        targets = self._routes.pop(subscriber, None) if self._routes else None
        for name in names:
            channel = self._channels.get(name)
            if channel is None:
                continue
            if targets is None:
                channel.discard(subscriber)
            else:
                target = targets[name]
                channel.discard(target)
                self._routed.pop(target, None)
            self._forget_if_idle(channel)
        if names:
            self.presence.remove(names, _identity(subscriber))

    # -- presence and revocation -------------------------------------------

    def revoke(
        self, identity: str | None = None, channel: str | None = None, at: float | None = None
    ) -> int:
        """
        End the streams of C{identity} (on C{channel} only, if given), or
        every stream of C{channel}, here and in every process sharing the
        backplane (see L{wsgi_sse.disconnect}).

        @param at: when the revocation was asked for (default: now); stream
            tokens made at or before it are refused here from now on.
        @return: the streams ended in this process.
        """
        if identity is None and channel is None:
            raise ValueError("revoke() needs an identity, a channel or both")
        if at is None:
            at = self._now()
        ended = self.end_streams(identity, channel, at)
        if self.backplane.shared:
            self._known_revocations.append((at, identity, channel))
            self._send_revocation(at, identity, channel)
        return ended

    def stop_resending(self) -> None:
        """Cancel a resend of revocations asked for by another process (at stop)."""
        call, self._resend_call = self._resend_call, None
        if call is not None and call.active():
            call.cancel()

    def _answer_resend(self) -> None:
        self._resend_call = None
        self._next_resend = self._now() + 1.0
        self.resend_revocations()

    def _send_revocation(self, at: float, identity: str | None, channel: str | None) -> None:
        # Dated: one that arrives late (sent again, see resend_revocations)
        # refuses the tokens made before it was asked for, not those since.
        message = {"k": "d", "i": self.instance_id, "u": identity, "c": channel, "t": at}
        publish_control(self, message)

    def resend_revocations(self) -> int:
        """
        Send again the revocations of the last day this process knows of
        (the last 1,024: made here, or heard from another process), for
        processes that could not hear them when they were made: started
        since, or cut off from the backplane's server meanwhile.  So a
        revocation outlives the process that made it while any process that
        knows of it runs (a rolling restart).  Done when this process starts
        listening to the others again, and when another one does (it asks
        for reports); at most once a second for the latter.  Processes that
        had them already do nothing more.

        @return: how many were sent.
        """
        horizon = self._now() - MAX_TOKEN_TTL
        known = self._known_revocations
        while known and known[0][0] <= horizon:
            known.popleft()
        sent = 0
        for at, identity, channel in known:
            if at > horizon:
                self._send_revocation(at, identity, channel)
                sent += 1
        return sent

    def end_streams(
        self, identity: str | None = None, channel: str | None = None, at: float | None = None
    ) -> int:
        """
        End this process's streams of C{identity} and/or C{channel} now:
        they are unsubscribed and their response is ended, by their
        C{revoke()} method, else their C{finish()} method (a subscriber with
        neither is only unsubscribed).  Streams not
        open yet learn of it through their L{RevocationWatch}; stream tokens
        made at or before C{at} (default: now) for them are refused from now
        on (L{token_revoked}).

        @return: how many were ended.
        """
        now = self._now()
        self.revoked_tokens.record(identity, channel, now if at is None else at, now)
        self._revocations += 1
        self._recent_revocations.append((self._revocations, identity, channel))
        matching = [
            subscriber
            for subscriber, names in [*self._subscriptions.items(), *self._held_items()]
            if revocation_covers(identity, channel, _identity(subscriber), names)
        ]
        for subscriber in matching:
            self.unsubscribe(subscriber)
            end = getattr(subscriber, "revoke", None) or getattr(subscriber, "finish", None)
            if end is not None:
                end()
        return len(matching) + sum(hook(identity, channel) for hook in self.revocation_hooks)

    def watch_revocations(self) -> RevocationWatch:
        """
        Start watching for the revocations made from now on (here, or in
        another process sharing the backplane) for a stream that is not
        subscribed yet: a stream whose hooks are still running when
        L{end_streams} is called must not open as if nothing had happened.
        A watch needs no cleanup.
        """
        return RevocationWatch(self)

    @property
    def revocation_mark(self) -> int:
        """
        Where the revocations stand now, for L{revoked_since} (what a
        L{RevocationWatch} holds).
        """
        return self._revocations

    def revoked_since(self, mark: int, identity: str | None, channels: Iterable[str]) -> bool:
        """
        Whether a stream of C{identity} on C{channels} was revoked (here, or
        in another process sharing the backplane) since L{revocation_mark}
        was C{mark}.  Past the last 1,024 revocations the answer is C{True}:
        the stream is not known to be safe.
        """
        if mark == self._revocations:
            return False
        recent = self._recent_revocations
        if not recent or recent[0][0] > mark + 1:
            return True
        names = channels if isinstance(channels, (set, frozenset)) else frozenset(channels)
        for number, revoked_identity, revoked_channel in reversed(recent):
            if number <= mark:
                break
            if revocation_covers(revoked_identity, revoked_channel, identity, names):
                return True
        return False

    def token_revoked(
        self, identity: str | None, channels: Iterable[str], issued: float | None
    ) -> bool:
        """
        Whether a stream token made at C{issued} (seconds since the epoch;
        L{None}: unknown) for C{identity}, opening C{channels}, was made at
        or before a revocation matching it (L{end_streams}, here or from
        another process) that is still remembered (see L{RevokedTokens}).
        """
        return self.revoked_tokens.refused(identity, channels, issued, self._now())

    def _held_items(self) -> list[tuple[Subscriber, tuple[str, ...]]]:
        return [(s, held.channels) for s, held in self._held.items()]

    def _forged_control(self, seq: int, event_id: str) -> None:
        """
        An event on the reserved channel in the shared history: control
        messages never travel there, so somebody wrote it by hand.  It is
        dropped (and its position passed over).
        """
        self._seq = seq
        self._last_id = event_id
        self._last_shared_seq = seq
        self._last_shared_id = event_id
        self._local_count = 0
        self.presence.malformed += 1
        if self._waiting:
            self._check_waiting()

    def control_listening(self) -> None:
        """
        The backplane reads the other processes' control messages from now
        on (it started, or reconnected): exchange full presence reports, and
        send again the revocations known here (the others may have missed
        them while this process was cut off).
        """
        self.presence.listening()
        self.resend_revocations()

    def deliver_control(self, body: bytes) -> None:
        """
        Act on a presence or revocation message from another process
        (hostile input: anything malformed is dropped and counted).
        """
        message = parse_control(body)
        if message is None:
            self.presence.malformed += 1
            return
        if message.get("i") == self.instance_id:
            return
        kind = message.get("k")
        if kind == "p":
            self.presence.received(message, self._now())
        elif kind == "q":
            now = self._now()
            self.presence.asked(now)
            # Another process listens anew (started, or back after an
            # outage): what it could not hear, at most once a second.
            if self._resend_call is None:
                wait = max(0.0, self._next_resend - now)
                self._resend_call = self._reactor().callLater(wait, self._answer_resend)
        elif kind == "d":
            identity, channel = message.get("u"), message.get("c")
            # No more than disconnect() takes: each revocation is remembered
            # (for stream tokens) for a day.
            if not _revocable(identity, channel):
                self.presence.malformed += 1
                return
            now = self._now()
            at = _revoked_at(message.get("t"), now)
            if at is not None and self.revoked_tokens.knows(identity, channel, at):
                # Heard already (sent again for another process): streams
                # opened since then were opened after it.
                return
            self.end_streams(identity, channel, at)
            # Sent again, like those made here, for processes started later.
            self._known_revocations.append((now if at is None else at, identity, channel))
        else:
            self.presence.malformed += 1

    def subscriber_count(self, channel: str | None = None) -> int:
        """Connections subscribed to C{channel}, or to anything if L{None}."""
        if channel is None:
            return len(self._subscriptions)
        found = self._channels.get(channel)
        return len(found.subscribers) if found is not None else 0

    def channel_counts(self) -> dict[str, int]:
        """Subscribers per channel, for channels that have any."""
        return {name: len(ch.subscribers) for name, ch in self._channels.items() if ch.subscribers}

    def busiest_channels(self, limit: int) -> tuple[dict[str, int], int]:
        """
        The C{limit} channels with the most subscribers (the first by name
        among channels with as many), by name, and how many channels have
        any subscriber.  Its cost grows with the channels that have
        subscribers, its answer only with C{limit}.
        """
        # (-count, name): the smallest are the busiest, the first by name.
        live = [
            (-len(ch.subscribers), name) for name, ch in self._channels.items() if ch.subscribers
        ]
        total = len(live)
        if total > limit:
            live = heapq.nsmallest(limit, live)
        return dict(sorted((name, -n) for n, name in live)), total

    def held_count(self) -> int:
        """Connections waiting for a replay from the backplane."""
        return len(self._held)

    # -- publishing --------------------------------------------------------

    def publish(self, channel: str, body: bytes) -> int | Deferred[int]:
        """
        Publish C{body} (an event encoded without its id) through the
        backplane: it gets the next id, is kept for replay and sent to every
        subscriber of C{channel} (of every process sharing the backplane).

        A C{body} of L{CLOSE_BODY} closes the channel (see there).

        @return: the number of this process's subscribers it was sent to
            (a Deferred of it when the backplane answers later).
        """
        result = self.backplane.publish(channel, (body,))
        if isinstance(result, Deferred):
            return result.addCallback(_delivered)
        return result.delivered

    def publish_many(self, channel: str, bodies: Sequence[bytes]) -> int | Deferred[int]:
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
        result = self.backplane.publish(channel, bodies)
        if isinstance(result, Deferred):
            return result.addCallback(_delivered)
        return result.delivered

    def publish_event(self, channel: str, body: bytes) -> Deferred[Published]:
        """Like L{publish}, answering with the event's id and its delivery count."""
        result = self.backplane.publish(channel, (body,))
        if isinstance(result, Deferred):
            return result
        return succeed(result)

    def _end(self, ch: _Channel, wire: bytes) -> int:
        """
        Close C{ch}: send its subscribers the close's id (C{wire}), then
        unsubscribe each (from all its channels) and end it, if it has an
        C{end()} method.

        @return: the number of streams ended.
        """
        subscribers = ch.snapshot()
        self.stats.bytes_queued += len(wire) * len(subscribers)
        for subscriber in subscribers:
            subscriber.send(wire)
            self.unsubscribe(self._routed.get(subscriber, subscriber))
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
        # subscriber (framed for HTTP once, for all of them, and written
        # straight to the socket: see send_to_each).  Iterate over a
        # snapshot: a send may drop a slow client, which unsubscribes it
        # while we loop.
        subscribers = ch.snapshot()
        send_to_each(subscribers, wire)
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
        Return the events of C{channels} in this process's history published
        after C{last_event_id}, in order, or L{None} if that cannot be done
        exactly (the id is unknown, or some events after it have already
        left the history).  A shared backplane is not asked: L{join} does.
        """
        return self._missed(channels, last_event_id)

    def can_replay(self, channels: Iterable[str], last_event_id: str) -> bool:
        """Whether L{join} may replay after C{last_event_id} (here or from the backplane)."""
        if self._missed(channels, last_event_id) is not None:
            return True
        return self.backplane.shared and self._position(last_event_id) is not None

    def _missed(self, channels: Iterable[str], last_event_id: str) -> list[Event] | None:
        """The events after C{last_event_id} in this hub's history (see L{replay})."""
        seq = self.parse_id(last_event_id)
        if seq is None:
            return None
        return self._missed_after(channels, seq)

    def _missed_after(self, channels: Iterable[str], seq: int) -> list[Event] | None:
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

    # -- replay from a shared backplane ----------------------------------

    def _cancel(self, held: _Held) -> None:
        if held.timer is not None and held.timer.active():
            held.timer.cancel()
        if held in self._waiting:
            self._waiting.remove(held)

    def _fetched(self, result: Fetched | Failure, held: _Held) -> None:
        if self._held.get(held.subscriber) is not held:
            return
        if isinstance(result, Failure):
            self.log.warn(
                "cannot replay from the backplane: {error}", error=result.getErrorMessage()
            )
            self._release(held, None)
            return
        if not result.found or result.truncated:
            self._release(held, None)
            return
        held.fetched = result
        if result.end << LOCAL_BITS > self._seq:
            # The backplane is ahead of this process: wait until its events
            # have been delivered here up to the end of what it returned.
            self._waiting.append(held)
            held.timer = self._reactor().callLater(self.replay_wait, self._give_up, held)
            return
        self._complete(held)

    def _check_waiting(self) -> None:
        ready = [h for h in self._waiting if h.fetched and h.fetched.end << LOCAL_BITS <= self._seq]
        for held in ready:
            self._waiting.remove(held)
            self._complete(held)

    def _give_up(self, held: _Held) -> None:
        held.timer = None
        if self._held.get(held.subscriber) is held:
            self._release(held, None)

    def _complete(self, held: _Held) -> None:
        fetched = held.fetched
        assert fetched is not None
        end = fetched.end << LOCAL_BITS
        # The fetch read to the backplane's head, which was at or past this
        # hub's start: the events after it are all in the local history.
        after = self._missed_after(held.channels, max(end, self._base_seq))
        if after is None:
            self._release(held, None)
            return
        wanted = set(held.channels)
        events: list[Event] = []
        ends = False
        now = self._now()
        for entry in fetched.entries:
            seq = entry.position << LOCAL_BITS
            if entry.channel in wanted and held.after < seq <= end:
                ends = entry.body == CLOSE_BODY
                wire = frame(entry.id, b"" if ends else entry.body)
                events.append(Event(seq, entry.id, entry.channel, wire, now, ends))
                if ends:
                    break
        if not ends:
            for e in after:
                events.append(e)
                if e.closes:
                    ends = True
                    break
        self._release(held, events, ends=ends)

    def _send_reset(self, subscriber: Subscriber, replay: Replay | None) -> None:
        """A reset instead of the replay (no preface): sent, or handed to C{replay}."""
        if replay is not None:
            replay(None)
        else:
            subscriber.send(RESET)

    def _release(self, held: _Held, events: list[Event] | None, *, ends: bool = False) -> None:
        """
        Send the replay (or a reset) and join the live stream, in one turn;
        or end the stream after the replay if its channel was closed in it.
        """
        del self._held[held.subscriber]
        self._cancel(held)
        subscriber = held.subscriber
        replay = held.replay
        if events is None:
            self.stats.replay_resets += 1
            self._send_reset(subscriber, replay)
            joined = Joined(0, True)
        else:
            self.stats.replays_fetched += 1
            if replay is not None:
                if held.preface:
                    subscriber.send(held.preface)
                replay(events)
            else:
                wire = b"".join([held.preface, *(e.wire for e in events)])
                if wire:
                    subscriber.send(wire)
            joined = Joined(len(events), False, ends)
        if ends:
            if replay is None:
                _end_subscriber(subscriber)
        else:
            self.subscribe(subscriber, held.channels, route=held.route)
        held.done.callback(joined)


def _end_subscriber(subscriber: Subscriber) -> None:
    """End a stream whose channel was closed, if it can be ended."""
    end = getattr(subscriber, "end", None)
    if end is not None:
        end()


def _delivered(published: Published) -> int:
    return published.delivered


def _revoked_at(when: object, now: float) -> float | None:
    """
    When another process's revocation was asked for (its C{t}, sent again
    after an outage: later than then), within the last day and not in the
    future; L{None} (now) for a message without one, or with anything but
    a finite number.
    """
    if type(when) not in (int, float) or not math.isfinite(when):  # type: ignore[arg-type]
        return None
    return min(now, max(float(when), now - MAX_TOKEN_TTL))  # type: ignore[arg-type]


def _revocable(identity: object, channel: object) -> bool:
    """Whether another process's revocation names what C{disconnect()} could."""
    if identity is None and channel is None:
        return False
    try:
        check_identity(identity)
        if channel is not None:
            validate_channel(channel)
    except (TypeError, ValueError):
        return False
    return True
