"""
Every setting of the event stream, with its default, in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Union

from ._checks import check_seconds
from ._names import (
    CONTROL_CHANNEL,
    CONTROL_CHARACTERS,
    MAX_CHANNEL,
    SHORT_CHANNEL,
    channel_too_long,
    check_identity,
)
from ._tokens import check_token_secret

__all__ = ["Allowed", "AuthorizeResult", "StreamOptions", "StreamRequest"]


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """
    What the C{authorize} and C{initial} hooks know of a connecting stream.

    Browsers' C{EventSource} cannot send custom headers, so a hook normally
    identifies the user through C{cookies} (a session cookie) or C{query}
    (a signed token in the URL).

    @ivar channels: the channels asked for, in order, without duplicates.
    @ivar last_event_id: the id the client resumes from, or L{None}.
    @ivar headers: request headers, names lower-cased (last value wins).
    @ivar cookies: request cookies.
    @ivar query: the query string, every value of every name.
    @ivar client_address: the peer's IP address (or C{"unix"}).
    @ivar path: the request path (without the query string).
    @ivar identity: who the stream belongs to, when the request itself says
        so (who a valid stream token was issued to, its C{identity}; the
        identity a view holding the stream gave), or L{None}: the stream's
        identity unless the C{authorize} hook returns another one with
        L{Allowed}.  See L{wsgi_sse.presence}.

    Its C{repr} leaves out C{headers}, C{cookies} and C{query}, which carry
    session cookies and tokens.
    """

    channels: tuple[str, ...]
    last_event_id: str | None
    # Out of the repr: a hook that logs the request must not log session
    # cookies, credentials or tokens.
    headers: Mapping[str, str] = field(repr=False)
    cookies: Mapping[str, str] = field(repr=False)
    query: Mapping[str, tuple[str, ...]] = field(repr=False)
    client_address: str
    path: str
    identity: str | None = None

    def __post_init__(self) -> None:
        check_identity(self.identity)


@dataclass(frozen=True, slots=True)
class Allowed:
    """
    What an C{authorize} hook may return to name the stream's owner along
    with the channels it may join::

        def authorize(request):
            user = user_from_cookie(request.cookies)
            if user is None:
                return {"public"}
            return Allowed({"public", f"user-{user.id}"}, identity=user.name)

    The identity feeds L{wsgi_sse.presence} and L{wsgi_sse.disconnect}.

    @ivar channels: C{True}, C{False} or the channels the connection may
        join, as a plain return value would be (see L{AuthorizeResult}).
    @ivar identity: who the stream belongs to (1-256 characters, no
        control characters), or L{None} for a guest.
    """

    channels: bool | frozenset[str] = True
    identity: str | None = None

    def __init__(self, channels: bool | Iterable[str] = True, identity: str | None = None) -> None:
        if isinstance(channels, (str, bytes)) or channels is None:
            raise TypeError("channels must be a bool or a collection of channel names")
        if not isinstance(channels, bool):
            channels = frozenset(channels)
        object.__setattr__(self, "channels", channels)
        object.__setattr__(self, "identity", check_identity(identity))


AuthorizeResult = Union[bool, Iterable[str], Allowed]
"""
What an C{authorize} hook returns: C{True} (every requested channel),
C{False} (none: 403), or the channels the connection may join; asking for
any channel outside that set is refused with 403 and nothing is subscribed.
An L{Allowed} carries one of these with the stream's identity.
"""

_DEFAULT_CHANNEL_PATTERN = r"[A-Za-z0-9_.:@~-]+"


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """
    How the event stream behaves.  Every field can be passed by name to
    L{make_application<wsgi_sse.make_application>} and
    L{SSEResource<wsgi_sse.SSEResource>}.

    @ivar heartbeat: seconds between keep-alive comments (C{0} turns them off).
    @ivar retry: the reconnection delay in milliseconds sent to each client
        on connect; browsers wait this long before reconnecting.
    @ivar retry_jitter: the fraction of C{retry} added at random per client
        (0.5: between 1 and 1.5 times C{retry}), so that after a restart the clients do not
        all come back in the same instant.
    @ivar max_channels: channels one connection may ask for.
    @ivar max_channel_length: characters in a channel name.
    @ivar channel_pattern: a regular expression every channel name must
        match in full (control characters are refused whatever it says,
        as C{broadcast()} refuses them).
    @ivar max_connections: open streams in total; past it a new stream is
        told to come back later (a C{200} stream carrying only a C{retry:},
        which keeps a browser's C{EventSource} reconnecting; counted as
        C{503}).
    @ivar max_connections_per_address: open streams per client address
        (L{None}: no cap).  Behind a reverse proxy every client has the
        proxy's address: leave this off there.
    @ivar max_buffer: bytes held for a client that has stopped reading before
        it is disconnected.
    @ivar max_pause: seconds a client may stop reading before it is
        disconnected (also once its stream was ended, while its end waits
        for the reader to catch up).
    @ivar busy_retry_after: seconds a refused stream is told to wait before
        it reconnects (its C{retry:}, at least C{retry}, plus jitter; and its
        C{Retry-After} header).
    @ivar log_streams: log a line for every stream opened and closed, with
        its fields; by default a summary line counts them every ten seconds
        while streams come and go (the two lines add about a third to the
        CPU time of accepting a stream).
    @ivar cors_origins: origins (C{"https://app.example.com"}) allowed to open
        the stream from another site; the default allows the same origin only.
        C{"*"} allows any origin (never with credentials).
    @ivar cors_credentials: send C{Access-Control-Allow-Credentials: true}, so
        that cross-origin pages using C{withCredentials} send their cookies.
    @ivar authorize: C{(StreamRequest) -> bool | Iterable[str]}, run in the
        WSGI thread pool before anything is subscribed (see L{AuthorizeResult}).
    @ivar initial: C{(StreamRequest) -> object | None}, run in the WSGI thread
        pool for each new page (no Last-Event-ID) and after a reset; a value
        other than L{None} is sent first, as an C{init} event whose id is the
        last event's id when the hook started, followed by every event
        published while it ran (if those no longer fit in the history, a
        C{reset} event is sent instead of the stale snapshot).
    @ivar on_presence: C{(PresenceChange) -> None}, run in the WSGI thread
        pool when an identity joins a channel (its first stream anywhere)
        or leaves it (its last one), and when a guest stream opens or
        closes (see L{wsgi_sse.PresenceChange}).
    @ivar token_secret: the secret that signs stream tokens
        (L{stream_token<wsgi_sse.stream_token>}), at least 32 characters;
        default: C{$WSGI_SSE_TOKEN_SECRET}, else none (the C{token} query
        parameter is then left to the C{authorize} hook).
    """

    heartbeat: float = 15.0
    retry: int = 3000
    retry_jitter: float = 0.5
    max_channels: int = 16
    max_channel_length: int = 64
    channel_pattern: str = _DEFAULT_CHANNEL_PATTERN
    max_connections: int = 10_000
    max_connections_per_address: int | None = None
    max_buffer: int = 1 << 20
    max_pause: float = 60.0
    busy_retry_after: int = 5
    log_streams: bool = False
    cors_origins: tuple[str, ...] = ()
    cors_credentials: bool = False
    authorize: Callable[[StreamRequest], AuthorizeResult] | None = None
    initial: Callable[[StreamRequest], object] | None = None
    on_presence: Callable[[Any], object] | None = None
    token_secret: str | bytes | None = field(default=None, repr=False)
    _channel_re: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_seconds("heartbeat", self.heartbeat)
        if isinstance(self.retry, bool) or not isinstance(self.retry, int) or self.retry < 0:
            raise ValueError("retry must be a non-negative int (milliseconds)")
        if not 0 <= self.retry_jitter <= 10:
            raise ValueError("retry_jitter must be between 0 and 10")
        for name in ("max_channels", "max_channel_length", "max_connections", "max_buffer"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        if self.max_channel_length > MAX_CHANNEL:
            # broadcast() and the backplanes carry channels up to that size.
            raise ValueError(f"max_channel_length must be at most {MAX_CHANNEL}")
        if self.max_connections_per_address is not None and self.max_connections_per_address < 1:
            raise ValueError("max_connections_per_address must be at least 1 or None")
        check_seconds("max_pause", self.max_pause, positive=True)
        if self.busy_retry_after < 0:
            raise ValueError("busy_retry_after must not be negative")
        for hook in ("authorize", "initial", "on_presence"):
            if getattr(self, hook) is not None and not callable(getattr(self, hook)):
                raise TypeError(f"{hook} must be a callable taking a StreamRequest, or None")
        origins = self.cors_origins
        if isinstance(origins, str):
            origins = (origins,)
        # Browsers send origins in lower case.
        origins = tuple(o.rstrip("/").lower() for o in origins)
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+", origin):
                raise ValueError(
                    f"cors_origins entries must be origins like 'https://app.example.com' "
                    f"(scheme and host, no path) or '*', got {origin!r}"
                )
        object.__setattr__(self, "cors_origins", origins)
        if self.cors_credentials and "*" in self.cors_origins:
            raise ValueError("cors_credentials cannot be combined with the '*' origin")
        if self.token_secret is not None:
            check_token_secret(self.token_secret)
        object.__setattr__(self, "_channel_re", re.compile(self.channel_pattern))

    def check_channel(self, name: str) -> str:
        """
        Return C{name} if it is a valid channel name.

        @raise ValueError: with a message fit for an HTTP 400 answer.
        """
        if not name:
            raise ValueError("channel names must not be empty")
        if len(name) > self.max_channel_length:
            raise ValueError(f"channel name longer than {self.max_channel_length} characters")
        if len(name) > SHORT_CHANNEL and channel_too_long(name):
            # (Only names outside ASCII can be.)
            raise ValueError(f"channel name longer than {MAX_CHANNEL} bytes in UTF-8")
        if name == CONTROL_CHANNEL:
            raise ValueError(f"channel name {name!r} is reserved")
        if not self._channel_re.fullmatch(name):
            raise ValueError(f"channel name {name!r} has characters outside {self.channel_pattern}")
        if CONTROL_CHARACTERS.search(name):
            # As broadcast() refuses them, whatever channel_pattern lets in:
            # no event could reach the channel, and its name reaches logs.
            raise ValueError(f"channel name {name!r} holds control characters")
        return name
