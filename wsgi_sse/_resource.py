"""
The twisted.web resource that serves the event stream at its own path.

It reads the request (L{wsgi_sse._request}, pure), runs the C{authorize}
and C{initial} hooks in the thread pool, and hands the request to
L{Streams<wsgi_sse._streams.Streams>}, which serves every stream of the
server, the ones WSGI views hold too.

All methods: call in the reactor thread (twisted.web does).
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ._client import StreamClient
from ._encoding import encode_event
from ._hub import Hub
from ._options import Allowed, AuthorizeResult, StreamOptions, StreamRequest
from ._request import (
    Refused,
    cors_for_preflight,
    cors_for_stream,
    parse_channels,
    parse_last_event_id,
)
from ._streams import RESET, STREAM_HEADERS, Streams, StreamStats, peer_of
from ._tokens import (
    InvalidStreamToken,
    StreamGrant,
    granted_channels,
    resolve_token_secret,
    verify_stream_token,
)

if TYPE_CHECKING:
    from twisted.python.threadpool import ThreadPool
    from twisted.web.server import Request

__all__ = ["SSEResource", "StreamStats"]

# Kept for the modules that import it from here.
_RESET = RESET


class SSEResource(Resource):
    """
    Serve a Server-Sent Events stream of a L{Hub}'s channels.

    C{GET ?channel=a&channel=b} subscribes the connection to channels C{a}
    and C{b} (no C{channel}: the default channel); a C{Last-Event-ID} header
    or C{lastEventId} query parameter replays what was missed.  C{HEAD}
    answers the stream's headers without subscribing; C{OPTIONS} answers
    CORS preflights; other methods get 405.

    @param hub: where events come from.
    @param reactor: the reactor (default: the global one, looked up late).
    @param threadpool: where the C{authorize} and C{initial} hooks run (the
        WSGI app's pool, so that hooks may use the app's database).
    @param options: a L{StreamOptions}; or pass its fields as keywords.
    @param streams: the server's L{Streams} (default: new ones), shared with
        the streams WSGI views hold.
    """

    isLeaf = True
    log = Logger()

    def __init__(
        self,
        hub: Hub,
        *,
        reactor: Any = None,
        threadpool: ThreadPool | None = None,
        options: StreamOptions | None = None,
        streams: Streams | None = None,
        **option_fields: Any,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if options is None:
            options = StreamOptions(**option_fields)
        elif option_fields:
            raise TypeError("pass either options or option keywords, not both")
        self.hub = hub
        self.options = options
        self._threadpool = threadpool
        if streams is None:
            streams = Streams(hub, reactor=reactor, options=options)
        self.streams = streams
        self.token_secret = resolve_token_secret(options.token_secret)
        if options.on_presence is not None:
            hub.presence.listen(self._presence_changed)

    # -- the streams' state, as seen from here ---------------------------------

    @property
    def reactor(self) -> Any:
        """The reactor this resource schedules on."""
        return self.streams.reactor

    @property
    def clients(self) -> set[StreamClient]:
        """Every open stream of the server."""
        return self.streams.clients

    @property
    def stats(self) -> StreamStats:
        """The streams' counters."""
        return self.streams.stats

    @property
    def _per_address(self) -> Counter[str]:
        return self.streams._per_address

    @property
    def _pending(self) -> int:
        return self.streams._pending

    def snapshot(self) -> dict[str, Any]:
        """Return the streams' counters as a JSON-ready dict (see L{Streams.snapshot})."""
        return self.streams.snapshot()

    def beat(self) -> None:
        """Send a keep-alive comment to every client now (and prune history)."""
        self.streams.beat()

    def close(self, *, reconnect: bool = True) -> None:
        """
        End every stream cleanly, with its connection, and refuse new ones
        (server shutdown).  With C{reconnect} (the default) later stream
        requests are told to come back later; without it they are answered
        C{204 No Content}, which stops a browser for good (see
        L{Streams.close}).
        """
        self.streams.close(reconnect=reconnect)

    def _run_in_pool(self, fn: Any, *args: Any) -> Deferred[Any]:
        pool = self._threadpool
        if pool is None:
            pool = self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, fn, *args)

    def _presence_changed(self, change: Any) -> None:
        hook = self.options.on_presence
        if hook is not None:
            self._run_in_pool(hook, change).addErrback(
                lambda f: self.log.failure("on_presence hook failed", f)
            )

    # -- HTTP methods ----------------------------------------------------------

    _ALLOWED = {b"GET": "render_GET", b"HEAD": "render_HEAD", b"OPTIONS": "render_OPTIONS"}

    def render(self, request: Request) -> bytes | int:
        """Dispatch on the method; anything but GET, HEAD and OPTIONS gets 405."""
        name = self._ALLOWED.get(request.method)
        if name is None:
            request.setHeader(b"Allow", b"GET, HEAD, OPTIONS")
            return self.streams.refuse(
                request,
                Refused(405, "the event stream only answers GET, HEAD and OPTIONS"),
            )
        return getattr(self, name)(request)  # type: ignore[no-any-return]

    def render_HEAD(self, request: Request) -> bytes | int:
        """
        Answer the stream's headers, or the refusal a C{GET} would get;
        nothing is subscribed.
        """
        streams = self.streams
        authorize = self.options.authorize
        peer = peer_of(request)
        try:
            channels, last_event_id = self._parse(request)
            grant = self._check_token(request, channels)
            cors_headers = self._cors(request)
            streams.check_limits(peer)
        except Refused as refused:
            return streams.refuse(request, refused)
        if grant is not None:
            # As for GET: a valid token opens its channels without the hook.
            channels, authorize = grant.channels, None

        def answer() -> None:
            # The headers GET's stream would get, CORS grant included.
            for name, value in cors_headers:
                request.setHeader(name, value)
            _set_stream_headers(request)

        if authorize is None:
            answer()
            return b""
        # The same hook as GET, in the pool and counted as pending like GET's:
        # a HEAD must not tell apart what a GET would refuse.
        info = _stream_request(request, channels, last_event_id, peer)
        streams.reserve(peer)
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))

        def release(result: object) -> object:
            streams.unreserve(peer)
            return result

        def done(result: tuple[frozenset[str] | bool, str | None]) -> None:
            if gone:
                return
            allowed = result[0]
            if allowed is not True:
                denied = [c for c in channels if allowed is False or c not in allowed]
                streams.finish_refused(
                    request, Refused(403, f"not allowed to join: {', '.join(denied)}")
                )
                return
            answer()
            request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("stream hook failed for HEAD", failure)
            if not gone:
                streams.finish_refused(request, Refused(500, "stream hook failed", transient=True))

        hook = self._run_in_pool(_authorized, authorize, info, channels)
        hook.addBoth(release).addCallbacks(done, failed)
        return NOT_DONE_YET

    def render_OPTIONS(self, request: Request) -> bytes:
        """Answer a CORS preflight."""
        request.setHeader(b"Allow", b"GET, HEAD, OPTIONS")
        request.setHeader(b"Vary", b"Origin")
        cors = cors_for_preflight(_header(request, b"origin"), self.options)
        if not cors.allowed:
            request.setResponseCode(403)
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"origin not allowed\n"
        for name, value in cors.headers:
            request.setHeader(name, value)
        request.setResponseCode(204)
        return b""

    def render_GET(self, request: Request) -> bytes | int:
        """Open a stream, or refuse it (a 4xx, or "come back later")."""
        streams = self.streams
        try:
            channels, last_event_id = self._parse(request)
            grant = self._check_token(request, channels)
            cors_headers = self._cors(request)
            peer = peer_of(request)
            streams.check_limits(peer)
        except Refused as refused:
            return streams.refuse(request, refused)

        options = self.options
        identity = None
        authorize = options.authorize
        if grant is not None:
            # A valid token opens its channels, whatever the hook would say.
            channels, identity, authorize = grant.channels, grant.identity, None
        if authorize is None and options.initial is None:
            self._open(
                request,
                cors_headers,
                channels,
                peer,
                last_event_id,
                last_event_id,
                identity=identity,
            )
            return NOT_DONE_YET

        # Hooks run in the thread pool; the connection counts toward the limits
        # meanwhile, and may vanish before they return.  Where the stream will
        # resume from is fixed now, so that events published while the hooks
        # run are replayed once they are done.
        hub = self.hub
        info = _stream_request(request, channels, last_event_id, peer, identity)
        reset = last_event_id is not None and not hub.can_replay(channels, last_event_id)
        want_initial = options.initial is not None and (last_event_id is None or reset)
        mark = hub.last_id
        resume = last_event_id if last_event_id is not None and not reset else mark
        streams.reserve(peer)
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))
        # disconnect() called while the hooks run must reach this stream too.
        watch = hub.watch_revocations()
        reruns = 0
        # The owner the authorize hook named, once it need not run again.
        authorized: list[str | None] = []

        def hooks() -> tuple[frozenset[str] | bool, bytes | None, str | None]:
            owner = info.identity
            if authorized:
                owner = authorized[0]
            elif authorize is not None:
                allowed, owner = _authorized(authorize, info, channels)
                if allowed is not True:
                    return allowed, None, owner
            if want_initial and options.initial is not None:
                value = options.initial(info)
                if value is not None:
                    # Encoded here: a value that cannot be sent fails the hook.
                    return True, encode_event(value, event="init", id=mark), owner
            return True, None, owner

        def run_hooks() -> None:
            self._run_in_pool(hooks).addCallbacks(done, failed)

        def settled() -> None:
            streams.unreserve(peer)

        def done(result: tuple[frozenset[str] | bool, bytes | None, str | None]) -> None:
            nonlocal watch, reruns, reset, want_initial, mark, resume
            if gone:
                settled()
                return
            allowed, init, owner = result
            if allowed is not True:
                settled()
                denied = [c for c in channels if allowed is False or c not in allowed]
                streams.finish_refused(
                    request, Refused(403, f"not allowed to join: {', '.join(denied)}")
                )
                return
            if (
                grant is not None
                and watch.any()
                and hub.token_revoked(owner, channels, grant.issued)
            ):
                # disconnect() was called for its token while the initial
                # hook ran: refused as on a reconnect with that token.
                settled()
                streams.finish_refused(request, Refused(403, "stream token revoked"))
                return
            if watch.revoked(owner, channels):
                # disconnect() was called for this stream while its hooks
                # ran: they decide again, as for a browser that reconnects
                # after its stream was ended (a revoked session is refused).
                if reruns >= _MAX_RERUNS:
                    streams.unreserve(peer)
                    streams.finish_refused(
                        request, Refused(503, "stream revoked while opening", transient=True)
                    )
                    return
                reruns += 1
                authorized.clear()
                watch = hub.watch_revocations()
                run_hooks()
                return
            if (
                options.initial is not None
                and not want_initial
                and last_event_id is not None
                and not hub.can_replay(channels, last_event_id)
            ):
                # The page's id could be replayed when it connected, but what
                # it missed has left the history while the hooks ran: as for
                # an id already too old then, reset, and the initial hook
                # runs (from now: the events published meanwhile follow it).
                reset = want_initial = True
                mark = hub.last_id
                resume = mark
                authorized[:] = [owner]
                run_hooks()
                return
            settled()
            try:
                streams.check_limits(peer)
            except Refused as refused:
                streams.finish_refused(request, refused)
                return
            self._open(
                request,
                cors_headers,
                channels,
                peer,
                last_event_id,
                resume,
                reset=reset,
                init=init,
                identity=owner,
            )

        def failed(failure: Failure) -> None:
            settled()
            self.log.failure(
                "stream hook failed for {peer} ({channels})",
                failure,
                peer=peer,
                channels=list(channels),
            )
            if not gone:
                streams.finish_refused(request, Refused(500, "stream hook failed", transient=True))

        run_hooks()
        return NOT_DONE_YET

    def _open(
        self,
        request: Request,
        cors_headers: tuple[tuple[bytes, bytes], ...],
        channels: tuple[str, ...],
        peer: str,
        last_event_id: str | None,
        resume: str | None,
        *,
        reset: bool = False,
        init: bytes | None = None,
        identity: str | None = None,
    ) -> None:
        request.setResponseCode(200)
        for name, value in cors_headers:
            request.setHeader(name, value)
        self.streams.open(
            request,
            channels,
            peer,
            last_event_id,
            resume,
            reset=reset,
            first=init,
            identity=identity,
        )

    # -- reading the request -------------------------------------------------------

    def _check_token(self, request: Request, channels: tuple[str, ...]) -> StreamGrant | None:
        """
        Verify the C{token} query parameter, if any; return its grant with
        the channels to open (those asked for, else all of the token's).
        """
        tokens = (request.args or {}).get(b"token")
        if not tokens or self.token_secret is None:
            # Without a secret the parameter is the authorize hook's to read.
            return None
        if len(tokens) > 1:
            raise Refused(400, "token given more than once")
        named = channels if (request.args or {}).get(b"channel") else None
        try:
            grant = verify_stream_token(
                tokens[0].decode("ascii", "replace"),
                secret=self.token_secret,
                now=self.reactor.seconds(),
            )
            channels = granted_channels(grant, named)
        except InvalidStreamToken as e:
            raise Refused(403, str(e)) from None
        if self.hub.token_revoked(grant.identity, channels, grant.issued):
            # disconnect() since it was made: refused as if expired, so the
            # page asks its view for a new one, which decides anew.
            raise Refused(403, "stream token revoked")
        # A token opens no more, nor other names, than a URL could ask for.
        options = self.options
        if len(channels) > options.max_channels:
            raise Refused(400, f"too many channels (at most {options.max_channels})")
        try:
            for name in channels:
                options.check_channel(name)
        except ValueError as e:
            raise Refused(400, str(e)) from None
        return StreamGrant(channels, grant.identity, grant.expires, grant.issued)

    def _parse(self, request: Request) -> tuple[tuple[str, ...], str | None]:
        args = request.args or {}
        channels = parse_channels(args.get(b"channel", []), self.options)
        last_event_id = parse_last_event_id(
            request.getHeader(b"last-event-id"), args.get(b"lastEventId", [])
        )
        return channels, last_event_id

    def _cors(self, request: Request) -> tuple[tuple[bytes, bytes], ...]:
        """The CORS headers a stream answer gets; refuse a foreign origin."""
        origin = _header(request, b"origin")
        # (The Host only matters with an Origin.)
        host = _header(request, b"host") if origin is not None else None
        cors = cors_for_stream(origin, host, self.options)
        if not cors.allowed:
            raise Refused(403, "origin not allowed")
        return cors.headers


def _set_stream_headers(request: Request) -> None:
    for name, value in STREAM_HEADERS:
        request.setHeader(name, value)


# Times a stream's hooks run again because their answer went stale while
# they ran (its identity or channel was revoked); past it, the stream is
# told to come back later.
_MAX_RERUNS = 3


def _authorized(
    authorize: Callable[[StreamRequest], AuthorizeResult],
    info: StreamRequest,
    channels: tuple[str, ...],
) -> tuple[frozenset[str] | bool, str | None]:
    """
    Run the C{authorize} hook: C{True} if every channel is allowed, else
    C{False} or the channels that are; and the stream's identity (an
    L{Allowed}'s, else the request's).  Called in a pool thread.
    """
    allowed = authorize(info)
    identity = info.identity
    if isinstance(allowed, Allowed):
        if allowed.identity is not None:
            identity = allowed.identity
        allowed = allowed.channels
    if isinstance(allowed, (str, bytes)) or allowed is None:
        raise TypeError(
            "authorize must return a bool, a collection of channel names or an Allowed, "
            f"not {type(allowed).__name__}"
        )
    if isinstance(allowed, bool):
        return allowed, identity
    allowed = frozenset(allowed)
    return (True if allowed.issuperset(channels) else allowed), identity


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value if isinstance(value, str) else value.decode("latin-1")


def _stream_request(
    request: Request,
    channels: tuple[str, ...],
    last_event_id: str | None,
    peer: str,
    identity: str | None = None,
) -> StreamRequest:
    headers = {
        name.decode("latin-1").lower(): values[-1].decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
    }
    cookies = {
        k.decode("latin-1"): v.decode("latin-1") for k, v in request.received_cookies.items()
    }
    query = {
        k.decode("utf-8", "replace"): tuple(v.decode("utf-8", "replace") for v in vs)
        for k, vs in (request.args or {}).items()
    }
    path = request.path.decode("utf-8", "replace")
    return StreamRequest(channels, last_event_id, headers, cookies, query, peer, path, identity)
