"""
Presence and revocation: who is connected to each channel, across the
processes of a site, and ending streams by identity or channel.

A stream may carry an I{identity} (a short string naming the user behind
it): the C{authorize} hook returns it with L{Allowed<wsgi_sse.Allowed>},
or it is set on the L{StreamRequest<wsgi_sse.StreamRequest>} before the
stream opens.  Streams without one are I{guests}.

Every L{Hub<wsgi_sse.Hub>} keeps a L{PresenceTracker}: channel → identity →
open connections, for its own streams.  With a shared backplane (Redis,
PostgreSQL) each process also sends its counts to the others, as messages
on the reserved channel L{CONTROL_CHANNEL} (never delivered to a browser,
never kept for replay): the changed channels shortly after a change, and
everything every C{interval} seconds.  A process that stops sending (killed)
is forgotten C{ttl} seconds after its last message.

Revocation messages (L{disconnect}) travel the same way.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping

from twisted.logger import Logger
from twisted.python import threadable

from ._names import (
    CONTROL_CHANNEL,
    CONTROL_CHARACTERS,
    MAX_IDENTITY,
    channel_too_long,
    check_identity,
    valid_identity,
    validate_channel,
)

if TYPE_CHECKING:
    from ._hub import Hub

__all__ = [
    "CONTROL_CHANNEL",
    "MAX_IDENTITY",
    "Presence",
    "PresenceChange",
    "PresenceTracker",
    "check_identity",
    "disconnect",
    "presence",
]

MAX_SHARED_IDENTITIES = 2000
"""
Identities of one channel one process sends to the others at most; past
it, the others see the rest as guests (their connections still count).
"""

MAX_REMOTE_BYTES = 256 * 1024 * 1024
"""
Memory (estimated, in bytes) the reports of other processes may take in all
by default (see L{PresenceTracker.max_remote_bytes}).
"""

MAX_PROCESS_BYTES = 128 * 1024 * 1024
"""
Memory (estimated, in bytes) the report of any one other process may take by
default: more than its streams fill (10,000 streams on 16 channels of their
own each, every one with an identity: about 68 MiB estimated, 42 MiB taken).
"""

# Estimated cost of a channel in a report beside its name (the table's slot,
# its counts and guests), and of an identity beside its string (the slot and
# its count).
_CHANNEL_COST = 250
_IDENTITY_COST = 70
_OVERFLOW_LOG_PERIOD = 60.0
_MAX_INSTANCES = 1024
_CHUNK = 256 * 1024
_INSTANCE = re.compile(r"[0-9a-z]{1,16}\Z")

log = Logger()


@dataclass(frozen=True, slots=True)
class Presence:
    """
    Who is connected to a channel (in every process sharing the backplane).

    @ivar channel: the channel.
    @ivar identities: each identity connected, with its number of open
        streams (three tabs of one user: C{{"ada": 3}}).
    @ivar guests: open streams without an identity.
    """

    channel: str
    identities: Mapping[str, int] = field(default_factory=dict)
    guests: int = 0

    @property
    def connections(self) -> int:
        """Every open stream of the channel, guests included."""
        return sum(self.identities.values()) + self.guests

    @property
    def users(self) -> list[str]:
        """The identities connected, sorted."""
        return sorted(self.identities)


@dataclass(frozen=True, slots=True)
class PresenceChange:
    """
    A join or leave, as the C{on_presence} hook receives it.

    Joins and leaves are coalesced per identity: a user opening a third tab
    does not join again, and leaves when the last one closes.  Every guest
    stream joins and leaves on its own (C{identity} L{None}).

    @ivar channel: the channel joined or left.
    @ivar identity: who, or L{None} for a guest.
    @ivar joined: C{True} for a join, C{False} for a leave.
    @ivar presence: the channel's presence just after the change.
    """

    channel: str
    identity: str | None
    joined: bool
    presence: Presence


Counts = dict[str | None, int]
"""Open streams of one channel by identity (L{None}: guests)."""


class PresenceTracker:
    """
    Presence of one hub's streams, and what other processes reported.

    L{add}, L{remove}, L{received}, L{start}, L{stop}: call in the reactor
    thread.  L{get} and L{channels}: any thread.

    @param hub: the hub whose backplane carries the messages.
    @param interval: seconds between full reports to the other processes.
    @param ttl: seconds after which a silent process is forgotten (at
        least twice C{interval}).
    @param delay: seconds changes are gathered before they are reported.
    """

    def __init__(
        self, hub: Hub, *, interval: float = 10.0, ttl: float | None = None, delay: float = 0.05
    ) -> None:
        if not (interval > 0 and delay >= 0):
            raise ValueError("presence interval must be positive")
        if ttl is None:
            ttl = 3 * interval
        if ttl < 2 * interval:
            raise ValueError("presence ttl must be at least twice the interval")
        self.hub = hub
        self.interval = interval
        self.ttl = ttl
        self.delay = delay
        self._lock = threading.Lock()
        self._local: dict[str, Counts] = {}
        # instance -> (expires at, channel -> counts)
        self._remote: dict[str, tuple[float, dict[str, Counts]]] = {}
        # instance -> the estimated size of its table, and their sum.
        self._sizes: dict[str, int] = {}
        self.remote_bytes = 0
        """Estimated memory the other processes' reports take (bytes)."""
        self.max_remote_bytes = MAX_REMOTE_BYTES
        """
        Estimated memory (bytes) the other processes' reports may take in
        all; past it, a channel is counted as guests only, or dropped if even
        that does not fit.  Raise it for a site whose presence needs more.
        """
        self.max_process_bytes = MAX_PROCESS_BYTES
        """The same bound, for the report of any one other process."""
        self._dirty: set[str] = set()
        self._flush_call: Any = None
        self._timer: Any = None
        # A full report asked for by another process: when it goes out, and
        # the earliest time the next one may (asks are untrusted input).
        self._answer_call: Any = None
        self._next_answer = 0.0
        self._listeners: list[Callable[[PresenceChange], None]] = []
        self.messages_sent = 0
        self.messages_received = 0
        self.malformed = 0
        self.overflow = 0
        """Channels of other processes' reports dropped, or counted as guests, for memory."""
        self._overflow_logged = 0
        self._overflow_log_at = float("-inf")

    # -- listeners ---------------------------------------------------------

    def listen(self, listener: Callable[[PresenceChange], None]) -> None:
        """
        Call C{listener} (in the reactor thread) on every coalesced join and
        leave of this process's streams; it must not block.
        """
        self._listeners.append(listener)

    # -- local streams (reactor thread) ------------------------------------

    def add(self, channels: tuple[str, ...], identity: str | None) -> None:
        """Count one more stream of C{identity} on C{channels}."""
        joined = []
        local = self._local
        with self._lock:
            for name in channels:
                counts = local.get(name)
                if counts is None:
                    local[name] = {identity: 1}
                    joined.append(name)
                    continue
                n = counts.get(identity, 0) + 1
                counts[identity] = n
                if n == 1 or identity is None:
                    joined.append(name)
        if joined and (self._listeners or self.hub.backplane.shared):
            self._changed(identity, joined, True)

    def remove(self, channels: tuple[str, ...], identity: str | None) -> None:
        """Count one stream of C{identity} less on C{channels}."""
        left = []
        local = self._local
        with self._lock:
            for name in channels:
                counts = local.get(name)
                if counts is None or identity not in counts:
                    continue
                n = counts[identity] - 1
                if n:
                    counts[identity] = n
                else:
                    del counts[identity]
                    if not counts:
                        del local[name]
                if not n or identity is None:
                    left.append(name)
        if left and (self._listeners or self.hub.backplane.shared):
            self._changed(identity, left, False)

    def _changed(self, identity: str | None, changed: list[str], joined: bool) -> None:
        if self.hub.backplane.shared:
            self._dirty.update(changed)
            if self._flush_call is None and self._timer is not None:
                self._flush_call = self.hub._reactor().callLater(self.delay, self._flush)
        if self._listeners:
            for name in changed:
                snapshot = self.get(name)
                if identity is not None and snapshot.identities.get(identity, 0) != int(joined):
                    # Still (or already) connected through another stream.
                    continue
                change = PresenceChange(name, identity, joined, snapshot)
                for listener in self._listeners:
                    try:
                        listener(change)
                    except Exception:  # noqa: BLE001 - one listener must not break streams
                        log.failure("presence listener failed")

    # -- reading (any thread) ----------------------------------------------

    def get(self, channel: str) -> Presence:
        """The presence of C{channel} in every process.  Any thread."""
        now = self.hub._now()
        merged: dict[str, int] = {}
        guests = 0
        with self._lock:
            sources = [self._local.get(channel)]
            for expires, channels in self._remote.values():
                if expires >= now:
                    sources.append(channels.get(channel))
            for counts in sources:
                if not counts:
                    continue
                for identity, n in counts.items():
                    if identity is None:
                        guests += n
                    else:
                        merged[identity] = merged.get(identity, 0) + n
        return Presence(channel, merged, guests)

    def channels(self) -> list[str]:
        """Channels with anyone connected, in any process.  Any thread."""
        now = self.hub._now()
        with self._lock:
            names = set(self._local)
            for expires, channels in self._remote.values():
                if expires >= now:
                    names.update(channels)
        return sorted(names)

    # -- between processes (reactor thread) --------------------------------

    def start(self) -> None:
        """Report this process's presence now and every C{interval} seconds."""
        if self._timer is not None or not self.hub.backplane.shared:
            return
        from twisted.internet.task import LoopingCall

        self._timer = LoopingCall(self._refresh)
        self._timer.clock = self.hub._reactor()
        self._timer.start(self.interval, now=True)

    def stop(self) -> None:
        """Stop reporting, and tell the others this process has nobody."""
        timer, self._timer = self._timer, None
        if timer is None:
            return
        if timer.running:
            timer.stop()
        for call in (self._flush_call, self._answer_call):
            if call is not None and call.active():
                call.cancel()
        self._flush_call = self._answer_call = None
        self._send({}, full=True)

    def listening(self) -> None:
        """
        This process reads the others' messages from now on (its backplane
        started or reconnected): report everything now, and ask the others
        to do the same, rather than leave either side without the reports
        sent while it could not hear them until the next C{interval}.
        """
        if self._timer is None:
            return
        self._refresh()
        self._publish({"k": "q"})

    def asked(self, now: float) -> None:
        """
        Another process asked for a full report: send one after C{delay},
        and at most one a second however often it is asked.
        """
        if self._timer is None or self._answer_call is not None:
            return
        wait = max(self.delay, self._next_answer - now)
        self._answer_call = self.hub._reactor().callLater(wait, self._answer)

    def _answer(self) -> None:
        self._answer_call = None
        self._next_answer = self.hub._now() + 1.0
        self._refresh()

    def _refresh(self) -> None:
        now = self.hub._now()
        with self._lock:
            self._forget_expired(now)
            local = {name: dict(counts) for name, counts in self._local.items()}
        self._dirty.clear()
        self._send(local, full=True)

    def _flush(self) -> None:
        self._flush_call = None
        dirty, self._dirty = self._dirty, set()
        with self._lock:
            changed = {name: dict(self._local.get(name) or {}) for name in dirty}
        if changed:
            self._send(changed, full=False)

    def _send(self, channels: dict[str, Counts], *, full: bool) -> None:
        """
        Send C{channels}' counts in messages the backplane carries: each
        channel's table replaces the one reported before (C{"c"}); a table
        too large for one message continues in the next ones (C{"a"}: add).
        """
        limit = getattr(self.hub.backplane, "max_control_body", _CHUNK)
        budget = max(limit - 160 - MAX_IDENTITY * 6, 400)
        messages: list[dict[str, Any]] = []
        current: dict[str, dict[str, list[Any]]] = {"c": {}, "a": {}}
        size = 0

        def flush() -> None:
            nonlocal current, size
            messages.append({"k": "p", "c": current["c"], "a": current["a"]})
            current, size = {"c": {}, "a": {}}, 0

        for name, counts in sorted(channels.items()):
            # An identity others would refuse (set by hand on a stream) is
            # reported as a guest rather than spoiling the whole message.
            named = sorted((i, n) for i, n in counts.items() if i is not None and valid_identity(i))
            guests = sum(counts.values()) - sum(n for _, n in named[:MAX_SHARED_IDENTITIES])
            head = len(json.dumps(name)) + 24
            if size + head > budget:
                flush()
            part: dict[str, int] = {}
            current["c"][name] = [part, guests]
            size += head
            for identity, n in named[:MAX_SHARED_IDENTITIES]:
                cost = len(json.dumps(identity)) + len(str(n)) + 4
                if size + cost > budget:
                    flush()
                    part = {}
                    current["a"][name] = [part, 0]
                    size = head
                part[identity] = n
                size += cost
        if current["c"] or current["a"] or (full and not messages):
            flush()
        if full:
            messages[0]["f"] = True
        for message in messages:
            self._publish(message)

    def _publish(self, message: dict[str, Any]) -> None:
        message["i"] = self.hub.instance_id
        message["t"] = self.ttl
        self.messages_sent += 1
        publish_control(self.hub, message)

    def received(self, message: Mapping[str, Any], now: float) -> None:
        """Take in another process's report (already checked to be a mapping)."""
        instance = message.get("i")
        ttl = message.get("t")
        replaced = message.get("c")
        added = message.get("a", {})
        if (
            not isinstance(instance, str)
            or not _INSTANCE.match(instance)
            or isinstance(ttl, bool)
            or not isinstance(ttl, (int, float))
            or not 1 <= ttl <= 3600
            or not isinstance(replaced, dict)
            or not isinstance(added, dict)
        ):
            self.malformed += 1
            return
        parsed: list[dict[str, Counts]] = [{}, {}]
        for target, given in zip(parsed, (replaced, added), strict=True):
            for name, value in given.items():
                counts = _parse_counts(value)
                if (
                    counts is None
                    or not name
                    or channel_too_long(name)
                    or CONTROL_CHARACTERS.search(name)
                ):
                    self.malformed += 1
                    return
                target[name] = counts
        self.messages_received += 1
        with self._lock:
            known = self._remote.get(instance)
            if known is None and len(self._remote) >= _MAX_INSTANCES:
                self._forget_expired(now)
                if len(self._remote) >= _MAX_INSTANCES:
                    self.malformed += 1
                    return
            fit = _Fit(self, instance, now)
            if message.get("f") is True or known is None:
                table: dict[str, Counts] = {}
                fit.grow(-self._sizes.get(instance, 0))
            else:
                table = known[1]
            for name, counts in parsed[0].items():
                before = table.pop(name, None)
                if before is not None:
                    fit.grow(-_size(name, before))
                if counts:
                    cost = _size(name, counts)
                    if not fit.room(cost):
                        self.overflow += 1
                        # Every connection still counts, as guests, if that fits.
                        counts = {None: sum(counts.values())}
                        cost = _size(name, counts)
                        if not fit.room(cost):
                            continue
                    table[name] = counts
                    fit.grow(cost)
            for name, counts in parsed[1].items():
                into = table.get(name)
                if into is None:
                    into = {}
                    if not fit.room(_size(name, into)):
                        self.overflow += 1
                        continue
                    table[name] = into
                    fit.grow(_size(name, into))
                folded = False
                for identity, n in counts.items():
                    if identity is not None and identity not in into:
                        cost = sys.getsizeof(identity) + _IDENTITY_COST
                        if len(into) > MAX_SHARED_IDENTITIES:
                            identity = None  # past the bound: counted as guests
                        elif fit.room(cost):
                            fit.grow(cost)
                        else:
                            identity, folded = None, True
                    into[identity] = into.get(identity, 0) + n
                if folded:
                    self.overflow += 1
                if not into:
                    del table[name]
                    fit.grow(-_size(name, into))
            self._remote[instance] = (now + float(ttl), table)
            self._sizes[instance] = fit.size
        if self.overflow != self._overflow_logged and now >= self._overflow_log_at:
            log.warn(
                "presence reports from other processes past their memory bound "
                "({remote_bytes} of {max_remote_bytes} bytes in all, {max_process_bytes} "
                "per process): {count} channels dropped or counted as guests",
                remote_bytes=self.remote_bytes,
                max_remote_bytes=self.max_remote_bytes,
                max_process_bytes=self.max_process_bytes,
                count=self.overflow - self._overflow_logged,
            )
            self._overflow_logged = self.overflow
            self._overflow_log_at = now + _OVERFLOW_LOG_PERIOD

    def _forget_expired(self, now: float, keep: str | None = None) -> None:
        """Forget the processes silent past their TTL (but C{keep}).  With the lock held."""
        for instance in [i for i, (exp, _) in self._remote.items() if exp < now and i != keep]:
            del self._remote[instance]
            self.remote_bytes -= self._sizes.pop(instance, 0)


class _Fit:
    """
    What one process's table may still grow by while a report is taken in
    (with the tracker's lock held).
    """

    __slots__ = ("expired", "instance", "now", "size", "tracker")

    def __init__(self, tracker: PresenceTracker, instance: str, now: float) -> None:
        self.tracker = tracker
        self.instance = instance
        self.now = now
        self.size = tracker._sizes.get(instance, 0)
        self.expired = False

    def grow(self, by: int) -> None:
        self.size += by
        self.tracker.remote_bytes += by

    def room(self, cost: int) -> bool:
        """Whether C{cost} more bytes fit, after forgetting expired processes if need be."""
        tracker = self.tracker
        if self.size + cost > tracker.max_process_bytes:
            return False
        if tracker.remote_bytes + cost <= tracker.max_remote_bytes:
            return True
        if not self.expired:
            self.expired = True
            # This process's own table is being rewritten: keep it.
            tracker._forget_expired(self.now, keep=self.instance)
        return tracker.remote_bytes + cost <= tracker.max_remote_bytes


def _size(name: str, counts: Counts) -> int:
    """The estimated memory one channel of another process's report takes."""
    size = sys.getsizeof(name) + _CHANNEL_COST
    for identity in counts:
        if identity is not None:
            size += sys.getsizeof(identity) + _IDENTITY_COST
    return size


def _parse_counts(value: object) -> Counts | None:
    if not isinstance(value, list) or len(value) != 2:
        return None
    named, guests = value
    if not isinstance(named, dict) or len(named) > MAX_SHARED_IDENTITIES:
        return None
    if isinstance(guests, bool) or not isinstance(guests, int) or not 0 <= guests < 1 << 31:
        return None
    counts: Counts = {}
    for identity, n in named.items():
        if isinstance(n, bool) or not isinstance(n, int) or not 0 < n < 1 << 31:
            return None
        try:
            check_identity(identity)
        except ValueError:
            return None
        counts[identity] = n
    if guests:
        counts[None] = guests
    return counts


def publish_control(hub: Hub, message: Mapping[str, Any]) -> None:
    """
    Send a control message to every process but this one, through the
    backplane's control path (never the event history).  Reactor thread.
    """
    from ._encoding import encode_body

    try:
        hub.backplane.send_control(encode_body(json.dumps(message)))
    except Exception:  # noqa: BLE001 - reported, never raised into a stream's close
        log.failure("cannot send a presence/revocation message")


def parse_control(body: bytes) -> dict[str, Any] | None:
    """The message in a control event's body, or L{None} if malformed."""
    if not body.startswith(b"data: ") or body.count(b"\n") != 1:
        return None
    try:
        message = json.loads(body[6:-1])
    except (ValueError, RecursionError):  # nested deeper than the parser recurses
        return None
    return message if isinstance(message, dict) else None


# -- the API for applications (any thread) ---------------------------------


def _current_hub() -> Hub:
    from ._broadcast import get_broadcaster
    from ._hub import Hub

    publisher = get_broadcaster().publisher
    if not isinstance(publisher, Hub):
        raise RuntimeError("presence and disconnect need the server's Hub as the publisher")
    return publisher


def presence(channel: str, *, hub: Hub | None = None) -> Presence:
    """
    Who is connected to C{channel} now, in every process sharing the
    backplane.  May be called in any thread.

    >>> presence("ticket-7").users                   # doctest: +SKIP
    ['ada', 'grace']
    """
    return (hub or _current_hub()).presence.get(channel)


def disconnect(
    *, identity: str | None = None, channel: str | None = None, hub: Hub | None = None
) -> None:
    """
    End every open stream of C{identity} (on C{channel} only, if given), or
    every stream of C{channel}, in every process sharing the backplane.
    May be called in any thread; returns at once.

    The browser reconnects after its C{retry} delay, and the C{authorize}
    hook decides again: a user who logged out is refused.  A stream whose
    reader is behind (it stopped reading, and events are held for it) has
    its connection aborted at once (over HTTP/2: its stream reset), rather
    than ended after what it has not read.  A stream token
    made before this call for that identity or channel is refused too
    (C{403}, as an expired one), so a page that opened its stream with a
    token must get a new one.

    @raise ValueError: if neither C{identity} nor C{channel} is given.
    """
    if identity is None and channel is None:
        raise ValueError("disconnect() needs an identity, a channel or both")
    check_identity(identity)
    if channel is not None:
        validate_channel(channel)
    target = hub or _current_hub()
    # Tokens made from now on (a new login, in this thread) are not revoked.
    at = target._now()
    from ._broadcast import get_broadcaster

    broadcaster = get_broadcaster()
    if broadcaster.publisher is target:
        # After what this thread broadcast before (a last word to the streams).
        broadcaster.call_after_broadcasts(target.revoke, identity, channel, at)
    elif threadable.isInIOThread():
        target.revoke(identity, channel, at)
    else:
        target._reactor().callFromThread(target.revoke, identity, channel, at)
