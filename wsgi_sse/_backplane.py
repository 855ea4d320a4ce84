"""
The backplane protocol: where event ids come from, and how events travel
between the processes of a site.

A L{Hub<wsgi_sse.Hub>} keeps the channels, subscribers and replay history of
one process; it is I{composed} with one backplane, which assigns every
event its id and carries it to every process (this one included):

    - L{LocalBackplane}, the default: one process, ids C{"<instance>-<n>"};
    - L{RedisBackplane<wsgi_sse.redis.RedisBackplane>}: a Redis Stream;
    - L{PostgresBackplane<wsgi_sse.postgres.PostgresBackplane>}: a table.

Positions are integers that order the events of a backplane; the hub keeps
them shifted by L{LOCAL_BITS} so that it can number the I{local-only}
events it publishes while a shared backplane is unreachable.

Everything a shared backplane reads back (stream entries, table rows) comes
from outside the process: L{check_entry} validates it the same way on every
path (live reads and replay fetches) before the hub sees it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Sequence

from twisted.internet.defer import Deferred, succeed

from ._names import CONTROL_CHARACTERS, MAX_CHANNEL, SHORT_CHANNEL, channel_too_long

if TYPE_CHECKING:
    from ._hub import HubStats

__all__ = [
    "BACKPLANE_URL_ENV",
    "LOCAL_BITS",
    "MAX_BODY",
    "MAX_CHANNEL",
    "Backplane",
    "BackplaneHub",
    "Entry",
    "Fetched",
    "LocalBackplane",
    "Published",
    "check_entry",
    "open_backplane",
    "resolve_backplane_url",
    "split_bodies",
]

BACKPLANE_URL_ENV = "WSGI_SSE_BACKPLANE_URL"
"""The environment variable naming the backplane (its URL scheme picks which)."""


LOCAL_BITS = 32
"""Low bits of a hub position that number local-only events."""

MAX_BODY = 1 << 20
"""The largest event body (in bytes) accepted from a shared backplane."""

# What encode_body() produces: an optional event line, an optional retry
# line, one or more data lines; no CR, no blank line, no id line.
_BODY = re.compile(rb"(?:event: [^\r\n\x00]+\n)?(?:retry: [0-9]+\n)?(?:data: [^\r\n]*\n)+\Z")
# close(channel), carried like an event (see wsgi_sse._hub.CLOSE_BODY).
_CLOSE_BODY = b":close\n"


class Entry(NamedTuple):
    """
    One event as a backplane hands it to the hub.

    @ivar position: its place in the backplane's order (grows with every event).
    @ivar id: the id sent on the wire, valid in every process.
    @ivar channel: the channel it was published on.
    @ivar body: the encoded event without its id line (see C{encode_body}).
    """

    position: int
    id: str
    channel: str
    body: bytes


class Published(NamedTuple):
    """
    The outcome of a publish: the id of the (last) event and how many of
    this process's subscribers it reached.
    """

    id: str
    delivered: int


@dataclass(slots=True)
class Fetched:
    """
    What a shared backplane found after a client's last id.

    @ivar found: whether that id is still known (nothing after it was lost).
    @ivar entries: the events after it, validated, in order.
    @ivar end: the position the answer reaches (the last entry, or the id's own).
    @ivar end_id: the wire id of C{end}.
    @ivar truncated: more events followed than one replay may send.
    """

    found: bool
    entries: list[Entry]
    end: int
    end_id: str
    truncated: bool


NOT_FOUND = Fetched(False, [], 0, "", False)


class BackplaneHub(Protocol):
    """
    What a backplane calls on the hub it feeds (all in the reactor thread).

    @ivar instance_id: names this hub (and process) in local-only ids.
    @ivar stats: the hub's counters.
    """

    instance_id: str
    stats: HubStats

    def start_at(self, position: int, event_id: str) -> None:
        """The backplane's head when this process started reading it."""

    def restart_at(self, position: int, event_id: str) -> None:
        """The backplane lost its history (moved backwards): start over from here."""

    def deliver_batch(self, entries: Sequence[Entry]) -> list[int]:
        """Record and fan out entries in order; return each one's delivery count."""

    def deliver_local(self, channel: str, bodies: Sequence[bytes]) -> Published:
        """Deliver to this process only (the backplane is unreachable)."""

    def deliver_control(self, body: bytes) -> None:
        """A presence or revocation message from another process (untrusted)."""

    def control_listening(self) -> None:
        """The backplane reads the other processes' control messages (again) from now on."""


class Backplane(Protocol):
    """
    Assigns event ids and carries events between processes.

    C{publish}, C{fetch_after}, C{attach}, C{start} and C{stop}: call in the
    reactor thread.  C{parse_id} and C{stats}: any thread.

    @ivar shared: whether other processes share this backplane's ids and
        history (then the hub asks it to replay what its own history lacks).
    """

    shared: bool

    def attach(self, hub: BackplaneHub) -> None:
        """Deliver to C{hub} from now on."""

    def parse_id(self, event_id: str) -> int | None:
        """The position of an id this backplane issued, or L{None}."""

    def publish(self, channel: str, bodies: Sequence[bytes]) -> Published | Deferred[Published]:
        """Give each body an id and deliver it to every process."""

    def fetch_after(self, position: int, event_id: str) -> Deferred[Fetched]:
        """Read the events after C{event_id} from the shared history."""

    def send_control(self, body: bytes) -> None:
        """
        Send a presence or revocation message (at most C{max_control_body}
        bytes) to every other process, in order, best effort: never into
        the event history, never replayed; lost while the server is down.
        """

    def stats(self) -> dict[str, Any]:
        """Counters for the stats endpoints."""

    def start(self) -> None:
        """Connect and start delivering."""

    def stop(self) -> Deferred[None]:
        """Deliver what is queued, then stop."""

    # Optional: ready() -> Deferred[bool], fired once the backplane reads the
    # shared history from its position (True) or its first attempt failed
    # (False); the server takes no connection before it, for at most
    # first_attempt_wait seconds (4 if the backplane has no such attribute).


def check_entry(channel: bytes | str, body: bytes) -> tuple[str, bytes] | None:
    """
    Validate an event read back from a shared backplane: a channel that
    C{broadcast()} accepts and a body that C{encode_body} could have made
    (no C{id:} line, no blank line, no CR, valid UTF-8, bounded sizes), or
    the close of a channel.

    @return: the channel as text and the body, or L{None} if malformed.
    """
    if isinstance(channel, bytes):
        if not channel or len(channel) > MAX_CHANNEL:
            return None
        try:
            name = channel.decode("utf-8")
        except UnicodeDecodeError:
            return None
    else:
        name = channel
        if not name or (len(name) > SHORT_CHANNEL and channel_too_long(name)):
            return None
    if CONTROL_CHARACTERS.search(name) is not None:
        return None
    if body == _CLOSE_BODY:
        return name, body
    if not isinstance(body, bytes) or len(body) > MAX_BODY or _BODY.match(body) is None:
        return None
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return name, body


def split_bodies(joined: bytes) -> list[bytes]:
    """
    Split several bodies stored together (joined by one blank line, as a
    backplane batches them) back into bodies; each still has to pass
    L{check_entry}.
    """
    parts = joined.split(b"\n\n")
    if len(parts) == 1:
        return parts
    return [p + b"\n" for p in parts[:-1]] + [parts[-1]]


def join_bodies(bodies: Sequence[bytes]) -> bytes:
    """Store several well-formed bodies as one value (see L{split_bodies})."""
    return b"\n".join(bodies)


class LocalBackplane:
    """
    The in-process backplane: ids C{"<instance>-<n>"} counted by this
    process; nothing is shared.  A new C{instance} every run means an id
    from a previous run is never mistaken for a current one.

    All methods: call in the reactor thread (L{parse_id}: any thread).
    """

    shared = False

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._prefix = instance_id + "-"
        self._position = 0
        self._hub: BackplaneHub | None = None

    def attach(self, hub: BackplaneHub) -> None:
        """Deliver to C{hub}."""
        self._hub = hub
        hub.start_at(0, self._prefix + "0")

    def parse_id(self, event_id: str) -> int | None:
        """The number of an id of this instance, or L{None}."""
        if not event_id.startswith(self._prefix):
            return None
        digits = event_id[len(self._prefix) :]
        if not digits.isdigit() or not digits.isascii() or len(digits) > 20:
            return None
        return int(digits)

    def publish(self, channel: str, bodies: Sequence[bytes]) -> Published:
        """Number the events and deliver them at once."""
        hub = self._hub
        assert hub is not None, "attach() first"
        prefix = self._prefix
        position = self._position
        if len(bodies) == 1:
            position = self._position = position + 1
            event_id = prefix + str(position)
            return Published(
                event_id, hub.deliver_batch((Entry(position, event_id, channel, bodies[0]),))[0]
            )
        entries = []
        for body in bodies:
            position += 1
            entries.append(Entry(position, prefix + str(position), channel, body))
        self._position = position
        counts = hub.deliver_batch(entries)
        return Published(prefix + str(position), counts[-1] if counts else 0)

    def fetch_after(self, position: int, event_id: str) -> Deferred[Fetched]:
        """Nothing is shared: nothing to fetch."""
        return succeed(NOT_FOUND)

    max_control_body = MAX_BODY

    def send_control(self, body: bytes) -> None:
        """No other process to tell."""

    def stats(self) -> dict[str, Any]:
        """No counters of its own."""
        return {}

    def start(self) -> None:
        """Nothing to start."""

    def stop(self) -> Deferred[None]:
        """Nothing to stop."""
        return succeed(None)


def resolve_backplane_url(
    backplane_url: str | None = None, redis_url: str | None = None
) -> str | None:
    """
    The backplane URL to use: C{backplane_url}, else C{redis_url}, else
    C{$WSGI_SSE_BACKPLANE_URL}, else C{$WSGI_SSE_REDIS_URL}; an empty
    string means none (the in-process backplane).  May be called in any thread.
    """
    from ._config import environment_value

    for value in (backplane_url, redis_url):
        if value is not None:
            return value or None
    for name in ("backplane_url", "redis_url"):
        value = environment_value(name)
        if value is not None:
            return value or None
    return None


def backplane_kind(url: str) -> str:
    """
    C{"Redis"} or C{"PostgreSQL"}, from the scheme of C{url}.

    @raise ValueError: for a scheme no backplane serves.
    @raise RuntimeError: if the client library of that backplane is not
        installed (the message says what to install).
    """
    from ._checks import check_backplane_url

    return check_backplane_url(url).name


def open_backplane(url: str, *, reactor: Any = None) -> Backplane:
    """
    Build the backplane C{url} names (see L{backplane_kind}).  Call in the
    reactor thread or before the reactor runs.

    @raise ValueError: for a scheme no backplane serves.
    @raise RuntimeError: if the backplane's client library is missing.
    """
    kind = backplane_kind(url)
    if kind == "Redis":
        from ._redis import RedisBackplane

        return RedisBackplane(url, reactor=reactor)
    from ._postgres import PostgresBackplane

    return PostgresBackplane(url, reactor=reactor)
