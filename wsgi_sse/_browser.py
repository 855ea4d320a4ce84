"""
Support for the browser client shipped with the package
(C{wsgi_sse/static/wsgi-sse.js}): the resource that serves it, and the
channel-tagged event ids it asks for.

A page's C{EventSource} sees an event's type, data and id, never the
channel it was published on.  The client shares one connection between all
tabs of an origin, subscribed to the union of their channels, and must hand
each tab only the events of its own channels; so it asks for
C{?channelInId=1}, and each event's id then carries its channel after a
space: C{id: mi4d0q2k-17 news}.  The id stays opaque and valid: the browser
sends it back as C{Last-Event-ID} and the server reads the event id before
the space.  Events that belong to no channel (C{init}) keep their plain id.

Such a stream also tells the client where it starts, whenever that is not
the client's own id (a first connection, or after a C{reset}): a
C{wsgi-sse:position} event whose id is the stream's position (C{id:
mi4d0q2k-16}, empty data), which the client keeps but does not show.  A
connection that is closed before its first event then resumes from there
(the event's id tells an C{EventSource} nothing until an event carries it).

All functions: call in the reactor thread.
"""

from __future__ import annotations

import gzip
import hashlib
import re
from importlib import resources
from typing import TYPE_CHECKING, Iterable, Sequence

from twisted.web.resource import Resource

from ._encoding import encode_body, frame

if TYPE_CHECKING:
    from twisted.web.server import Request

    from ._client import StreamClient
    from ._hub import Event, Route, Subscriber

__all__ = [
    "CHANNEL_IN_ID_PARAM",
    "POSITION_EVENT",
    "ClientScriptResource",
    "client_script",
    "position",
    "tagged_route",
]

CHANNEL_IN_ID_PARAM = b"channelInId"
"""The query parameter asking for channel-tagged ids."""

POSITION_EVENT = "wsgi-sse:position"
"""The type of the event telling the browser client where its stream starts."""

_POSITION_BODY = b"\n" + frame(None, encode_body("", event=POSITION_EVENT))

_ID_LINE = re.compile(rb"^(id: [^\n]*)", re.MULTILINE)
_UNTAGGABLE = re.compile(r"[\r\n\x00]")

# One-entry cache: the hub hands the same wire object to every subscriber of a
# channel, so every tagged stream of that channel reuses one tagged copy.
_last: tuple[bytes, str, bytes] = (b"", "", b"")


def wants_channel_ids(request: Request) -> bool:
    """Whether the stream asked for channel-tagged ids."""
    values: list[bytes] = (request.args or {}).get(CHANNEL_IN_ID_PARAM) or []
    return bool(values) and values[-1] in (b"1", b"true")


def position(event_id: str) -> bytes:
    """
    The event telling a stream with channel-tagged ids that it starts after
    C{event_id} (an id of the hub's).

    >>> position("mi4d0q2k-16")
    b'id: mi4d0q2k-16\\nevent: wsgi-sse:position\\ndata: \\n\\n'
    """
    return b"id: " + event_id.encode("ascii") + _POSITION_BODY


def tag(wire: bytes, channel: str) -> bytes:
    """Append C{" <channel>"} to every C{id:} line of C{wire} (one or more events)."""
    global _last
    last_wire, last_channel, tagged = _last
    if wire is last_wire and channel == last_channel:
        return tagged
    suffix = b" " + channel.encode("utf-8")
    tagged = _ID_LINE.sub(lambda m: m.group(1) + suffix, wire)
    _last = (wire, channel, tagged)
    return tagged


class _ChannelTagger:
    """Deliver one channel's events to a stream, their ids tagged with the channel."""

    __slots__ = ("channel", "client")

    def __init__(self, client: StreamClient, channel: str) -> None:
        self.client = client
        self.channel = channel

    def send(self, wire: bytes) -> None:
        # The hot path: every tagged stream of the channel after the first
        # finds this event's tagged copy in the cache.
        last_wire, last_channel, tagged = _last
        if wire is not last_wire or self.channel != last_channel:
            tagged = tag(wire, self.channel)
        self.client.send(tagged)

    def end(self) -> None:
        """The channel was closed: end the stream (see C{close(channel)})."""
        self.client.end()


def tagged_route(client: StreamClient) -> Route:
    """
    Where each channel's live events go for a stream that asked for
    channel-tagged ids: a receiver per channel that tags them (the C{route}
    of L{Hub.join<wsgi_sse._hub.Hub.join>}, which joins, replays and
    unsubscribes the stream as one).
    """

    def route(channel: str) -> Subscriber:
        if _UNTAGGABLE.search(channel):
            # A custom channel_pattern let a line break in: the id line
            # cannot carry it, so these events go out untagged.
            return client
        return _ChannelTagger(client, channel)

    return route


def tagged_replay(events: Iterable[Event]) -> list[bytes]:
    """The wire bytes of replayed events, their ids tagged with their channels."""
    return [e.wire if _UNTAGGABLE.search(e.channel) else tag(e.wire, e.channel) for e in events]


def client_script() -> bytes:
    """The browser client's source, as shipped in the package."""
    return resources.files("wsgi_sse").joinpath("static/wsgi-sse.js").read_bytes()


class ClientScriptResource(Resource):
    """
    Serve the browser client (an ES module), gzipped for browsers that take
    it (20 KB of commented source, 6 KB gzipped), with a validator so
    that browsers revalidate it cheaply and pick up a new version at once.

    Call in the reactor thread (twisted.web does).
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.body = client_script()
        self.gzipped = gzip.compress(self.body, mtime=0)
        digest = hashlib.sha256(self.body).hexdigest()[:20]
        self.etag = b'"%s"' % digest.encode("ascii")
        self.gzip_etag = b'"%s-gz"' % digest.encode("ascii")

    def render_GET(self, request: Request) -> bytes:
        """Answer the script, or 304 when the browser's copy is current."""
        headers = request.requestHeaders
        use_gzip = accepts_gzip(headers.getRawHeaders(b"accept-encoding") or [])
        body, etag = (self.gzipped, self.gzip_etag) if use_gzip else (self.body, self.etag)
        request.setHeader(b"Content-Type", b"text/javascript; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"Vary", b"Accept-Encoding")
        request.setHeader(b"ETag", etag)
        request.setHeader(b"X-Content-Type-Options", b"nosniff")
        if none_match(headers.getRawHeaders(b"if-none-match") or [], etag):
            request.setResponseCode(304)
            return b""
        if use_gzip:
            request.setHeader(b"Content-Encoding", b"gzip")
        return body


def _weight(params: list[bytes]) -> float:
    """The C{q} of a list element's parameters (1 without one, 0 if malformed)."""
    for param in params:
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"q":
            try:
                q = float(value.strip()[:5])
            except ValueError:
                return 0.0
            return q if 0.0 <= q <= 1.0 else 0.0
    return 1.0


def accepts_gzip(values: Sequence[bytes]) -> bool:
    """
    Whether C{Accept-Encoding} C{values} accept C{gzip} (RFC 9110, 12.5.3):
    listed (or C{x-gzip}) with a C{q} above 0, or not listed and C{*} is.
    """
    gzip_q = star_q = None
    for value in values:
        for element in value.split(b","):
            coding, *params = element.split(b";")
            coding = coding.strip().lower()
            if coding in (b"gzip", b"x-gzip"):
                gzip_q = max(gzip_q or 0.0, _weight(params))
            elif coding == b"*":
                star_q = _weight(params)
    if gzip_q is not None:
        return gzip_q > 0
    return star_q is not None and star_q > 0


def etag_listed(values: Sequence[bytes], etag: bytes, *, weak: bool) -> bool:
    """
    Whether the entity-tag lists C{values} (of C{If-Match} or
    C{If-None-Match}) hold C{*} or C{etag}, compared weakly (C{W/} ignored)
    or strongly (a C{W/} tag never matches): RFC 9110, 8.8.3.2.
    """
    for value in values:
        for tag in value.split(b","):
            tag = tag.strip()
            if tag == b"*" or (tag.removeprefix(b"W/") if weak else tag) == etag:
                return True
    return False


def none_match(values: Sequence[bytes], etag: bytes) -> bool:
    """
    Whether C{If-None-Match} C{values} match C{etag} (RFC 9110, 13.1.2):
    C{*}, or a list holding it, compared weakly (C{W/} ignored).
    """
    return etag_listed(values, etag, weak=True)
