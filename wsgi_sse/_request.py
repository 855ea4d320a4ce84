"""
What a stream request asks for, decided on plain values.

Nothing here touches a Twisted request, a socket or the reactor: the
functions take the query, headers and options as values and return a value
or raise L{Refused}, so every decision about a stream request (its
channels, its Last-Event-ID, a view's GRIP hold instruction, the CORS
answer) is tested on values.  May be called in any thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence
from urllib.parse import unquote, urlsplit

from ._hub import DEFAULT_CHANNEL
from ._names import check_identity
from ._options import StreamOptions

__all__ = [
    "MAX_LAST_EVENT_ID",
    "Cors",
    "GripHold",
    "Refused",
    "cors_for_preflight",
    "cors_for_stream",
    "origin_allowed",
    "parse_channels",
    "parse_grip",
    "parse_last_event_id",
    "same_origin",
]

MAX_LAST_EVENT_ID = 128
"""Bytes a C{Last-Event-ID} may have; longer is refused with 400."""


class Refused(Exception):  # noqa: N818 - not an error: an answer
    """
    A stream request answered with an HTTP error instead of a stream.

    A I{transient} refusal ("try later": capacity, shutdown, a failed hook)
    is answered as a short event stream that tells the client when to
    reconnect: a browser's C{EventSource} closes for good on any answer but
    C{200}.  C{code} is then the status the refusal stands for, as counted
    in the stats.

    @ivar code: the HTTP status.
    @ivar message: the plain-text body (one line).
    @ivar headers: extra response headers (C{Retry-After}).
    @ivar transient: whether the client should come back later.
    """

    def __init__(
        self,
        code: int,
        message: str,
        headers: Iterable[tuple[bytes, bytes]] = (),
        *,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.headers = tuple(headers)
        self.transient = transient


# -- channels and Last-Event-ID -------------------------------------------------


def parse_channels(raw_channels: Sequence[bytes], options: StreamOptions) -> tuple[str, ...]:
    """
    Turn the C{channel} query values into channel names: checked, in order,
    without duplicates; none gives the default channel.

    @raise Refused: 400 for too many, non-UTF-8 or invalid names.
    """
    if len(raw_channels) > options.max_channels:
        raise Refused(400, f"too many channels (at most {options.max_channels})")
    names = []
    for raw in raw_channels:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refused(400, "channel names must be UTF-8") from None
        try:
            names.append(options.check_channel(name))
        except ValueError as e:
            raise Refused(400, str(e)) from None
    return tuple(dict.fromkeys(names)) or (DEFAULT_CHANNEL,)


def parse_last_event_id(header: bytes | None, query_values: Sequence[bytes] = ()) -> str | None:
    """
    Return the id a client resumes from: the C{Last-Event-ID} header, else
    the C{lastEventId} query parameter; L{None} when there is none (an empty
    header is a browser that never received an id).  A channel-tagged id
    (C{"<id> <channel>"}) gives its event id; the channel after the space
    is not checked (it may be longer than an id, or not ASCII with a
    custom C{channel_pattern}).

    @raise Refused: 400 for an id that is too long, not printable ASCII, or
        a query parameter given twice.
    """
    raw = header
    if raw is None and query_values:
        if len(query_values) > 1:
            raise Refused(400, "lastEventId given more than once")
        raw = query_values[0]
    if raw is None:
        return None
    # Event ids never contain a space: what follows one is the channel of a
    # channel-tagged id (see wsgi_sse._browser).
    raw = raw.strip(b" ").split(b" ", 1)[0]
    if len(raw) > MAX_LAST_EVENT_ID:
        raise Refused(400, f"Last-Event-ID longer than {MAX_LAST_EVENT_ID} bytes")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise Refused(400, "Last-Event-ID must be ASCII") from None
    if not text.isprintable():
        raise Refused(400, "Last-Event-ID has control characters")
    # An empty header means "no id yet" (a browser that never got one).
    return text or None


# -- GRIP hold instructions -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GripHold:
    """
    A view's instruction to hold its response open as an event stream.

    @ivar channels: the channels to subscribe to, in order, without
        duplicates.
    @ivar headers: the view's response headers without the C{Grip-*} ones,
        C{Wsgi-Sse-Identity} and C{Content-Length} (the body goes on).
    @ivar identity: who the stream belongs to (presence, revocation), from
        C{Wsgi-Sse-Identity}; L{None} for a guest.
    """

    channels: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    identity: str | None = None


_MAX_GRIP_CHANNEL_HEADER = 8192


def parse_grip(headers: Iterable[tuple[str, str]], options: StreamOptions) -> GripHold | None:
    """
    Read the GRIP instruction in a WSGI response's headers.

    C{Grip-Hold: stream} with C{Grip-Channel: a, b} (or several
    C{Grip-Channel} headers) holds the response open on channels C{a} and
    C{b}.  Channel parameters (C{; prev-id=...}) and the other C{Grip-*}
    headers (C{Grip-Keep-Alive}, C{Grip-Timeout}, ...) are ignored: the
    stream has its own heartbeats and no timeout.  C{Wsgi-Sse-Identity}
    (the percent-encoded UTF-8 of an identity, see
    L{hold_headers<wsgi_sse.hold_headers>}) names the stream's owner; it is
    removed from the response like the C{Grip-*} headers.

    @return: L{None} if the response has no C{Grip-Hold} header.
    @raise ValueError: for an instruction that cannot be followed (a hold
        other than C{stream}, no channel, too many channels, an invalid
        channel name, a compressed body, an unusable identity); the
        message says which.
    """
    hold = None
    channel_values = []
    identities = []
    kept = []
    encoding = None
    for name, value in headers:
        lower = name.lower()
        if lower == "grip-hold":
            hold = value.strip().lower()
        elif lower == "grip-channel":
            channel_values.append(value)
        elif lower == IDENTITY_HEADER:
            identities.append(value)
            continue
        elif lower == "content-encoding" and value.strip().lower() != "identity":
            encoding = value
        if lower.startswith("grip-") or lower == "content-length":
            continue
        kept.append((name, value))
    if hold is None:
        return None
    if hold != "stream":
        raise ValueError(f"Grip-Hold: {hold!r} is not supported (only 'stream')")
    if encoding is not None:
        raise ValueError(
            f"a held stream cannot be compressed (Content-Encoding: {encoding}); "
            "leave held responses out of compression middleware"
        )
    joined = ",".join(channel_values)
    if len(joined) > _MAX_GRIP_CHANNEL_HEADER:
        raise ValueError("Grip-Channel is too long")
    names = []
    for part in joined.split(","):
        name = part.split(";", 1)[0].strip()
        if name:
            names.append(options.check_channel(name))
    channels = tuple(dict.fromkeys(names))
    if not channels:
        raise ValueError("Grip-Hold: stream without a Grip-Channel")
    if len(channels) > options.max_channels:
        raise ValueError(f"too many channels (at most {options.max_channels})")
    return GripHold(channels, tuple(kept), _held_identity(identities))


IDENTITY_HEADER = "wsgi-sse-identity"
"""The response header carrying a held stream's identity (never sent on)."""


def _held_identity(values: list[str]) -> str | None:
    if not values:
        return None
    if len(values) > 1:
        raise ValueError("Wsgi-Sse-Identity given more than once")
    try:
        identity = unquote(values[0].strip(), errors="strict")
        return check_identity(identity)
    except ValueError as e:
        raise ValueError(f"Wsgi-Sse-Identity: {e}") from None


# -- CORS ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cors:
    """
    The CORS part of an answer.

    @ivar allowed: whether the request may be served (C{False}: 403).
    @ivar headers: the headers to add to the answer.
    """

    allowed: bool
    headers: tuple[tuple[bytes, bytes], ...] = ()


_PREFLIGHT_HEADERS = (
    (b"Access-Control-Allow-Methods", b"GET, HEAD, OPTIONS"),
    (b"Access-Control-Allow-Headers", b"Last-Event-ID, Cache-Control, Accept, X-Requested-With"),
    (b"Access-Control-Max-Age", b"600"),
)


def origin_allowed(origin: str, options: StreamOptions) -> bool:
    """Whether C{origin} is one of C{options.cors_origins} (or they allow any)."""
    allowed = options.cors_origins
    return "*" in allowed or origin.rstrip("/").lower() in allowed


def same_origin(origin: str, host: str | None) -> bool:
    """Whether C{origin} names the C{Host} the request was sent to."""
    if host is None:
        return False
    try:
        return urlsplit(origin).netloc.lower() == host.lower()
    except ValueError:
        return False


def _grant(origin: str, options: StreamOptions) -> tuple[tuple[bytes, bytes], ...]:
    if "*" in options.cors_origins and not options.cors_credentials:
        granted = [(b"Access-Control-Allow-Origin", b"*")]
    else:
        granted = [(b"Access-Control-Allow-Origin", origin.encode("latin-1"))]
    granted.append((b"Vary", b"Origin"))
    if options.cors_credentials:
        granted.append((b"Access-Control-Allow-Credentials", b"true"))
    return tuple(granted)


def cors_for_stream(origin: str | None, host: str | None, options: StreamOptions) -> Cors:
    """
    Decide a stream request's CORS answer: no C{Origin} or the same origin
    is served as it is; an allowed origin is served with the grant headers;
    any other origin is refused.
    """
    if origin is None:
        return Cors(True)
    if origin_allowed(origin, options):
        return Cors(True, _grant(origin, options))
    return Cors(same_origin(origin, host))


def cors_for_preflight(origin: str | None, options: StreamOptions) -> Cors:
    """Decide the answer to an C{OPTIONS} preflight (C{allowed=False}: 403)."""
    if origin is None:
        return Cors(True)
    if not origin_allowed(origin, options):
        return Cors(False)
    return Cors(True, _grant(origin, options) + _PREFLIGHT_HEADERS)
