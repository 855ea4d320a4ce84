"""
The twisted.web resource that serves the event stream.

All methods: call in the reactor thread (twisted.web does).
"""

from __future__ import annotations

import random
import socket
from collections import Counter
from itertools import chain
from typing import TYPE_CHECKING, Any, Callable, Iterable
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ._browser import subscribe_tagged, tagged_replay, wants_channel_ids
from ._client import StreamClient, close_after_response
from ._encoding import (
    encode_body,
    encode_comment,
    encode_event,
    encode_opening,
    encode_retry,
    frame,
)
from ._hub import DEFAULT_CHANNEL, Event, Hub
from ._options import AuthorizeResult, StreamOptions, StreamRequest
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

_HEARTBEAT = encode_comment()
_RESET = frame(None, encode_body("", event="reset"))
_MAX_LAST_EVENT_ID = 128
_STREAM_HEADERS = (
    (b"Content-Type", b"text/event-stream; charset=utf-8"),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
)


class _Refused(Exception):  # noqa: N818 - not an error: an answer
    """
    A stream request answered with an HTTP error instead of a stream.

    A I{transient} refusal ("try later": capacity, shutdown, a failed hook)
    is answered as a short event stream that tells the client when to
    reconnect (see L{SSEResource._refuse}): a browser's C{EventSource}
    closes for good on any answer but C{200}.  C{code} is then the status
    the refusal stands for, as counted in the stats.
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


class StreamStats:
    """
    Counters of one L{SSEResource}, since it was created.

    @ivar connects: streams opened.
    @ivar disconnects: streams closed, for any reason.
    @ivar dropped_slow: streams aborted because their reader fell behind.
    @ivar dropped_by_reason: the same, by reason (C{"buffer"}, C{"stalled"}).
    @ivar refused: requests answered with an error instead of a stream, by
        HTTP status; a transient refusal (answered as a stream that tells
        the client to reconnect later) counts under the status it stands
        for (C{503}, or C{500} for a failed hook), a deliberate "stop for
        good" under C{204}.
    @ivar replays: streams that resumed from a Last-Event-ID exactly.
    @ivar resets: streams sent a C{reset} event instead.
    @ivar bytes_written: bytes written besides published events (the opening
        comment, replays, C{init} events, heartbeats).
    @ivar bytes_discarded: bytes of published events held for readers that
        left or were dropped before they could be written.
    """

    __slots__ = (
        "bytes_discarded",
        "bytes_written",
        "connects",
        "disconnects",
        "dropped_by_reason",
        "dropped_slow",
        "refused",
        "replays",
        "resets",
    )

    def __init__(self) -> None:
        self.connects = 0
        self.disconnects = 0
        self.dropped_slow = 0
        self.dropped_by_reason: Counter[str] = Counter()
        self.refused: Counter[int] = Counter()
        self.replays = 0
        self.resets = 0
        self.bytes_written = 0
        self.bytes_discarded = 0


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
        **option_fields: Any,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if options is None:
            options = StreamOptions(**option_fields)
        elif option_fields:
            raise TypeError("pass either options or option keywords, not both")
        self.hub = hub
        self.options = options
        self._reactor = reactor
        self._threadpool = threadpool
        self.clients: set[StreamClient] = set()
        self._per_address: Counter[str] = Counter()
        self._pending = 0
        self._heartbeat: LoopingCall | None = None
        self._closing = False
        self._stopped_for_good = False
        self.stats = StreamStats()
        self._random = random.Random()  # noqa: S311 - jitter, not secrets
        self.token_secret = resolve_token_secret(options.token_secret)

    # -- plumbing ------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        """The reactor this resource schedules on."""
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _run_in_pool(self, fn: Any, *args: Any) -> Deferred[Any]:
        pool = self._threadpool
        if pool is None:
            pool = self.reactor.getThreadPool()
        return deferToThreadPool(self.reactor, pool, fn, *args)

    # -- HTTP methods ----------------------------------------------------------

    _ALLOWED = {b"GET": "render_GET", b"HEAD": "render_HEAD", b"OPTIONS": "render_OPTIONS"}

    def render(self, request: Request) -> bytes | int:
        """Dispatch on the method; anything but GET, HEAD and OPTIONS gets 405."""
        name = self._ALLOWED.get(request.method)
        if name is None:
            request.setHeader(b"Allow", b"GET, HEAD, OPTIONS")
            return self._refuse(
                request,
                _Refused(405, "the event stream only answers GET, HEAD and OPTIONS"),
            )
        return getattr(self, name)(request)  # type: ignore[no-any-return]

    def render_HEAD(self, request: Request) -> bytes | int:
        """
        Answer the stream's headers, or the refusal a C{GET} would get;
        nothing is subscribed.
        """
        authorize = self.options.authorize
        peer = _peer(request)
        try:
            channels, last_event_id = self._parse(request)
            grant = self._check_token(request, channels)
            self._check_origin(request)
            self._check_limits(peer)
        except _Refused as refused:
            return self._refuse(request, refused)
        if grant is not None:
            # As for GET: a valid token opens its channels without the hook.
            channels, authorize = grant.channels, None
        if authorize is None:
            self._set_stream_headers(request)
            return b""
        # The same hook as GET, in the pool and counted as pending like GET's:
        # a HEAD must not tell apart what a GET would refuse.
        info = _stream_request(request, channels, last_event_id, peer)
        self._pending += 1
        self._per_address[peer] += 1
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))

        def release(result: object) -> object:
            self._pending -= 1
            self._release(peer)
            return result

        def done(allowed: frozenset[str] | bool) -> None:
            if gone:
                return
            if allowed is not True:
                denied = [c for c in channels if allowed is False or c not in allowed]
                self._finish_refused(
                    request, _Refused(403, f"not allowed to join: {', '.join(denied)}")
                )
                return
            self._set_stream_headers(request)
            request.finish()

        def failed(failure: Failure) -> None:
            self.log.failure("stream hook failed for HEAD", failure)
            if not gone:
                self._finish_refused(request, _Refused(500, "stream hook failed", transient=True))

        hook = self._run_in_pool(_authorized, authorize, info, channels)
        hook.addBoth(release).addCallbacks(done, failed)
        return NOT_DONE_YET

    def render_OPTIONS(self, request: Request) -> bytes:
        """Answer a CORS preflight."""
        origin = _header(request, b"origin")
        request.setHeader(b"Allow", b"GET, HEAD, OPTIONS")
        request.setHeader(b"Vary", b"Origin")
        if origin is not None:
            if not self._origin_allowed(origin):
                request.setResponseCode(403)
                request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
                return b"origin not allowed\n"
            self._grant_cors(request, origin)
            request.setHeader(b"Access-Control-Allow-Methods", b"GET, HEAD, OPTIONS")
            request.setHeader(
                b"Access-Control-Allow-Headers",
                b"Last-Event-ID, Cache-Control, Accept, X-Requested-With",
            )
            request.setHeader(b"Access-Control-Max-Age", b"600")
        request.setResponseCode(204)
        return b""

    def render_GET(self, request: Request) -> bytes | int:
        """Open a stream, or refuse it (a 4xx, or "come back later")."""
        try:
            channels, last_event_id = self._parse(request)
            grant = self._check_token(request, channels)
            self._check_origin(request)
            peer = _peer(request)
            self._check_limits(peer)
        except _Refused as refused:
            return self._refuse(request, refused)

        options = self.options
        identity = None
        authorize = options.authorize
        if grant is not None:
            # A valid token opens its channels, whatever the hook would say.
            channels, identity, authorize = grant.channels, grant.identity, None
        if authorize is None and options.initial is None:
            self._start(
                request, channels, peer, last_event_id, resume=last_event_id, identity=identity
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
        self._pending += 1
        self._per_address[peer] += 1
        gone: list[bool] = []
        request.notifyFinish().addBoth(lambda _: gone.append(True))

        def hooks() -> tuple[frozenset[str] | bool, bytes | None]:
            if authorize is not None:
                allowed = _authorized(authorize, info, channels)
                if allowed is not True:
                    return allowed, None
            if want_initial and options.initial is not None:
                value = options.initial(info)
                if value is not None:
                    # Encoded here: a value that cannot be sent fails the hook.
                    return True, encode_event(value, event="init", id=mark)
            return True, None

        def done(result: tuple[frozenset[str] | bool, bytes | None]) -> None:
            self._pending -= 1
            self._release(peer)
            if gone:
                return
            allowed, init = result
            if allowed is not True:
                denied = [c for c in channels if allowed is False or c not in allowed]
                self._finish_refused(
                    request, _Refused(403, f"not allowed to join: {', '.join(denied)}")
                )
                return
            try:
                self._check_limits(peer)
            except _Refused as refused:
                self._finish_refused(request, refused)
                return
            self._start(
                request,
                channels,
                peer,
                last_event_id,
                resume,
                reset=reset,
                init=init,
                identity=identity,
            )

        def failed(failure: Failure) -> None:
            self._pending -= 1
            self._release(peer)
            self.log.failure(
                "stream hook failed for {peer} ({channels})",
                failure,
                peer=peer,
                channels=list(channels),
            )
            if not gone:
                self._finish_refused(request, _Refused(500, "stream hook failed", transient=True))

        self._run_in_pool(hooks).addCallbacks(done, failed)
        return NOT_DONE_YET

    # -- opening a stream --------------------------------------------------------

    def _start(
        self,
        request: Request,
        channels: tuple[str, ...],
        peer: str,
        last_event_id: str | None,
        resume: str | None,
        *,
        reset: bool = False,
        init: bytes | None = None,
        identity: str | None = None,
    ) -> None:
        """
        Open the stream: headers, C{retry:}, then (a C{reset} event or) the
        C{init} event, then every event after C{resume}, then live events.
        """
        options = self.options
        hub = self.hub
        stats = self.stats
        request.setResponseCode(200)
        self._set_stream_headers(request)
        self._grant_cors_if_cross_origin(request)
        client = StreamClient(
            request,
            channels=channels,
            peer=peer,
            clock=self.reactor,
            max_buffer=options.max_buffer,
            max_pause=options.max_pause,
            on_drop=self._dropped,
        )
        client.identity = identity
        transport = getattr(request.channel, "transport", None)
        if transport is None:  # an HTTP/2 stream: its connection's transport
            transport = getattr(getattr(request.channel, "_conn", None), "transport", None)
        set_no_delay = getattr(transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            # Events are small and latency matters more than packet count.
            set_no_delay(True)
        _limit_unacknowledged_time(transport, options.heartbeat)
        request.registerProducer(client, True)
        self.clients.add(client)
        self._per_address[peer] += 1
        stats.connects += 1
        request.notifyFinish().addBoth(self._gone, client)

        # Everything below happens in this one reactor turn: no event can be
        # published between the replay and the subscription.
        retry = options.retry + int(options.retry * options.retry_jitter * self._random.random())
        parts = [encode_opening(retry)]
        missed: list[Event] = []
        if resume is not None and resume == last_event_id and not reset:
            # The client's own id (a subclass may hold the client until it
            # has fetched the events from elsewhere: subscribe follows).
            found = hub.replay(channels, resume)
            if found is None:
                reset = True
            else:
                missed = found
                stats.replays += 1
        elif resume is not None:
            # From where the hooks started: not a replay the client asked for.
            found = hub._missed(channels, resume)
            if found is None:
                # More events were published while the hooks ran than the
                # history keeps: the C{init} snapshot would be stale.
                reset, init = True, None
            else:
                missed = found
        if reset:
            stats.resets += 1
            parts.append(_RESET)
            self.log.info(
                "stream reset for {peer}: cannot replay {channels} from {last_event_id!r}",
                peer=peer,
                channels=list(channels),
                last_event_id=last_event_id if last_event_id is not None else resume,
            )
        tagged = wants_channel_ids(request)
        if tagged:
            subscribe_tagged(hub, client, channels)
        else:
            hub.subscribe(client, channels)
        head = b"".join(parts)
        request.write(head)
        client.started()
        stats.bytes_written += len(head)
        if init is not None or missed:
            # As fast as the reader takes it, like live events (which the
            # subscription above now queues behind it); taken from the
            # history one event at a time (tagged copies too).
            wires: Iterable[bytes] = (
                chain.from_iterable(tagged_replay((e,)) for e in missed)
                if tagged
                else (e.wire for e in missed)
            )
            if init is not None:
                wires = chain((init,), wires)
            size = len(init or b"") + sum(len(e.wire) for e in missed)
            stats.bytes_written += size
            client.replay(wires, size)
        self.log.info(
            "stream opened for {peer}: {channels}, resuming from {last_event_id!r}, "
            "{replayed} events replayed",
            peer=peer,
            channels=list(channels),
            last_event_id=last_event_id,
            replayed=len(missed),
            reset=reset,
        )
        self._ensure_heartbeat()

    def _gone(self, reason: object, client: StreamClient) -> None:
        self.hub.unsubscribe(client)
        client.stopProducing()
        self.stats.bytes_discarded += client.discarded
        if client in self.clients:
            self.clients.discard(client)
            self._release(client.peer)
            self.stats.disconnects += 1
            why = reason.getErrorMessage() if isinstance(reason, Failure) else "finished"
            self.log.info(
                "stream closed for {peer}: {reason}",
                peer=client.peer,
                channels=list(client.channels),
                reason=why,
            )
        if not self.clients:
            self._stop_heartbeat()

    def _dropped(self, client: StreamClient, reason: str) -> None:
        # Unsubscribe now: later events are not even queued for it.
        self.hub.unsubscribe(client)
        stats = self.stats
        stats.dropped_slow += 1
        stats.dropped_by_reason[reason] += 1

    # -- heartbeat -------------------------------------------------------------

    def _ensure_heartbeat(self) -> None:
        interval = self.options.heartbeat
        if interval and (self._heartbeat is None or not self._heartbeat.running):
            self._heartbeat = LoopingCall(self.beat)
            self._heartbeat.clock = self.reactor
            self._heartbeat.start(interval, now=False)

    def _stop_heartbeat(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None and heartbeat.running:
            heartbeat.stop()

    def beat(self) -> None:
        """Send a keep-alive comment to every client now (and prune history)."""
        clients = tuple(self.clients)
        for client in clients:
            client.send(_HEARTBEAT)
        self.stats.bytes_written += len(_HEARTBEAT) * len(clients)
        self.hub.prune()

    # -- shutting down ---------------------------------------------------------

    def close(self, *, reconnect: bool = True) -> None:
        """
        End every stream cleanly, with its connection, and refuse new ones
        (server shutdown).

        With C{reconnect} (the default), clients see the end of the response
        and reconnect, to this server when it comes back or to another one
        behind the same address; a stream request that still reaches this
        resource is told to come back later (a transient refusal), never
        answered with an error that would end a browser's C{EventSource}.
        Without it, every later stream request is answered
        C{204 No Content}, which tells a browser to stop reconnecting for
        good.

        Each stream's connection is closed rather than kept alive, so that
        a browser reconnects on a new connection (to whatever listens then)
        instead of over the old one.
        """
        self._closing = True
        self._stopped_for_good = not reconnect
        self._stop_heartbeat()
        for client in tuple(self.clients):
            self.hub.unsubscribe(client)
            client.finish(close_connection=True)

    # -- stats -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """
        Return the stream's counters as a JSON-ready dict.

        C{bytes_sent} counts every byte handed to the clients' connections:
        published events, replays, C{init} events, heartbeats and the
        opening lines, less what was held for readers that were dropped.
        Call in the reactor thread.
        """
        hub_stats = self.hub.stats
        stats = self.stats
        return {
            "clients": len(self.clients),
            "pending": self._pending,
            "channels": dict(sorted(self.hub.channel_counts().items())),
            "events_published": hub_stats.events_published,
            "deliveries": hub_stats.deliveries,
            "bytes_sent": hub_stats.bytes_queued + stats.bytes_written - stats.bytes_discarded,
            "connects": stats.connects,
            "disconnects": stats.disconnects,
            "dropped_slow": stats.dropped_slow,
            "dropped_by_reason": dict(sorted(stats.dropped_by_reason.items())),
            "replays": stats.replays,
            "resets": stats.resets,
            "refused": {str(code): n for code, n in sorted(stats.refused.items())},
        }

    # -- checks ------------------------------------------------------------------

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
            raise _Refused(400, "token given more than once")
        named = channels if (request.args or {}).get(b"channel") else None
        try:
            grant = verify_stream_token(
                tokens[0].decode("ascii", "replace"),
                secret=self.token_secret,
                now=self.reactor.seconds(),
            )
            channels = granted_channels(grant, named)
        except InvalidStreamToken as e:
            raise _Refused(403, str(e)) from None
        # A token opens no more, nor other names, than a URL could ask for.
        options = self.options
        if len(channels) > options.max_channels:
            raise _Refused(400, f"too many channels (at most {options.max_channels})")
        try:
            for name in channels:
                options.check_channel(name)
        except ValueError as e:
            raise _Refused(400, str(e)) from None
        return StreamGrant(channels, grant.identity, grant.expires)

    def _parse(self, request: Request) -> tuple[tuple[str, ...], str | None]:
        options = self.options
        args = request.args or {}
        raw_channels = args.get(b"channel", [])
        if len(raw_channels) > options.max_channels:
            raise _Refused(400, f"too many channels (at most {options.max_channels})")
        names = []
        for raw in raw_channels:
            try:
                name = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise _Refused(400, "channel names must be UTF-8") from None
            try:
                names.append(options.check_channel(name))
            except ValueError as e:
                raise _Refused(400, str(e)) from None
        channels = tuple(dict.fromkeys(names)) or (DEFAULT_CHANNEL,)

        raw_id = request.getHeader(b"last-event-id")
        if raw_id is None:
            query_ids = args.get(b"lastEventId")
            if query_ids:
                if len(query_ids) > 1:
                    raise _Refused(400, "lastEventId given more than once")
                raw_id = query_ids[0]
        last_event_id = None
        if raw_id is not None:
            if isinstance(raw_id, str):
                raw_id = raw_id.encode("latin-1")
            if len(raw_id) > _MAX_LAST_EVENT_ID:
                raise _Refused(400, f"Last-Event-ID longer than {_MAX_LAST_EVENT_ID} bytes")
            try:
                text = raw_id.decode("ascii")
            except UnicodeDecodeError:
                raise _Refused(400, "Last-Event-ID must be ASCII") from None
            if not text.isprintable():
                raise _Refused(400, "Last-Event-ID has control characters")
            # An empty header means "no id yet" (a browser that never got one).
            # Event ids never contain a space: what follows one is the channel
            # of a channel-tagged id (see wsgi_sse._browser).
            last_event_id = text.strip().split(" ", 1)[0] or None
        return channels, last_event_id

    def _origin_allowed(self, origin: str) -> bool:
        allowed = self.options.cors_origins
        return "*" in allowed or origin.rstrip("/").lower() in allowed

    def _check_origin(self, request: Request) -> None:
        origin = _header(request, b"origin")
        if origin is None or self._origin_allowed(origin) or _same_origin(request, origin):
            return
        raise _Refused(403, "origin not allowed")

    def _grant_cors(self, request: Request, origin: str) -> None:
        options = self.options
        if "*" in options.cors_origins and not options.cors_credentials:
            request.setHeader(b"Access-Control-Allow-Origin", b"*")
        else:
            request.setHeader(b"Access-Control-Allow-Origin", origin.encode("latin-1"))
        request.setHeader(b"Vary", b"Origin")
        if options.cors_credentials:
            request.setHeader(b"Access-Control-Allow-Credentials", b"true")

    def _grant_cors_if_cross_origin(self, request: Request) -> None:
        origin = _header(request, b"origin")
        if origin is not None and self._origin_allowed(origin):
            self._grant_cors(request, origin)

    def _check_limits(self, peer: str) -> None:
        options = self.options
        if self._closing:
            if self._stopped_for_good:
                raise _Refused(204, "the stream has stopped for good")
            raise _Refused(503, "server is shutting down", self._retry_after(), transient=True)
        if len(self.clients) + self._pending >= options.max_connections:
            raise _Refused(503, "too many connections", self._retry_after(), transient=True)
        per_address = options.max_connections_per_address
        if per_address is not None and self._per_address[peer] >= per_address:
            raise _Refused(
                503, "too many connections from your address", self._retry_after(), transient=True
            )

    def _retry_after(self) -> tuple[tuple[bytes, bytes]]:
        return ((b"Retry-After", b"%d" % (self.options.busy_retry_after,)),)

    def _release(self, peer: str) -> None:
        count = self._per_address[peer] - 1
        if count > 0:
            self._per_address[peer] = count
        else:
            del self._per_address[peer]

    # -- answers -----------------------------------------------------------------

    def _set_stream_headers(self, request: Request) -> None:
        for name, value in _STREAM_HEADERS:
            request.setHeader(name, value)

    def _refuse(self, request: Request, refused: _Refused) -> bytes:
        """
        Answer C{request} with C{refused}, returning the body to send.

        A transient refusal of a stream (C{GET}) is answered C{200} with a
        short event stream: a comment naming the reason and a C{retry:} of
        C{busy_retry_after} seconds (at least C{retry}), with jitter; then
        the stream and its connection end.  C{Retry-After} marks the answer
        as a refusal (a C{HEAD} gets the same headers).  A browser's C{EventSource} then
        reconnects by itself, with its C{Last-Event-ID}; any other status
        would end it for good.  A C{204} ends it for good, deliberately.
        """
        self.stats.refused[refused.code] += 1
        self.log.info(
            "refused stream from {peer}: {code} {why}",
            peer=_peer(request),
            code=refused.code,
            why=refused.message,
        )
        if refused.transient and request.method in (b"GET", b"HEAD"):
            return self._retry_later(request, refused)
        if refused.code == 204:
            request.setResponseCode(204)
            request.setHeader(b"Cache-Control", b"no-store")
            return b""
        request.setResponseCode(refused.code)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-store")
        for name, value in refused.headers:
            request.setHeader(name, value)
        return refused.message.encode("utf-8") + b"\n"

    def _retry_later(self, request: Request, refused: _Refused) -> bytes:
        options = self.options
        base = max(options.retry, options.busy_retry_after * 1000)
        retry = base + int(base * options.retry_jitter * self._random.random())
        request.setResponseCode(200)
        self._set_stream_headers(request)
        self._grant_cors_if_cross_origin(request)
        request.setHeader(b"Retry-After", b"%d" % (options.busy_retry_after,))
        for name, value in refused.headers:
            request.setHeader(name, value)
        close_after_response(request)
        body = refusal_stream(refused.message, retry)
        if request.method == b"HEAD":
            # The headers GET would get (Retry-After tells it is a refusal).
            request.setHeader(b"Content-Length", b"%d" % (len(body),))
            return b""
        return body

    def _finish_refused(self, request: Request, refused: _Refused) -> None:
        body = self._refuse(request, refused)
        if body:
            request.setHeader(b"Content-Length", b"%d" % (len(body),))
            request.write(body)
        request.finish()


def refusal_stream(reason: str, retry: int) -> bytes:
    """
    The body of a transient refusal: comment lines naming C{reason}, then
    the C{retry} (milliseconds) the client waits before it reconnects.

    Clients apply C{retry:} as soon as they read the line; the stream then
    ends, with no event (and no blank line that some clients would report
    as an empty message).  No id is sent, so the client's C{Last-Event-ID}
    stays where it was.
    """
    return encode_comment(reason).rstrip(b"\n") + b"\n" + encode_retry(retry)


def _authorized(
    authorize: Callable[[StreamRequest], AuthorizeResult],
    info: StreamRequest,
    channels: tuple[str, ...],
) -> frozenset[str] | bool:
    """
    Run the C{authorize} hook: C{True} if every channel is allowed, else
    C{False} or the channels that are.  Called in a pool thread.
    """
    allowed = authorize(info)
    if isinstance(allowed, (str, bytes)) or allowed is None:
        raise TypeError(
            "authorize must return a bool or a collection of channel names, "
            f"not {type(allowed).__name__}"
        )
    if isinstance(allowed, bool):
        return allowed
    allowed = frozenset(allowed)
    return True if allowed.issuperset(channels) else allowed


def _limit_unacknowledged_time(transport: Any, heartbeat: float) -> None:
    """
    Have the kernel close a stream whose peer stopped acknowledging data.

    A client that vanishes without a FIN or RST (a laptop closed, a network
    gone) would otherwise stay connected until TCP gives up retransmitting,
    some fifteen minutes later.  With C{TCP_USER_TIMEOUT} (Linux) set to
    twice the heartbeat (at least 30 s), the heartbeat itself finds it: its
    bytes stay unacknowledged and the connection is closed, and the client
    is removed like any other.
    """
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    sock = getattr(transport, "socket", None)
    if option is None or sock is None or not heartbeat:
        return
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, int(max(2 * heartbeat, 30.0) * 1000))
    except (OSError, AttributeError):  # not a TCP socket (a UNIX socket, a test double)
        pass


def _header(request: Request, name: bytes) -> str | None:
    value = request.getHeader(name)
    if value is None:
        return None
    return value if isinstance(value, str) else value.decode("latin-1")


def _same_origin(request: Request, origin: str) -> bool:
    host = _header(request, b"host")
    if host is None:
        return False
    try:
        return urlsplit(origin).netloc.lower() == host.lower()
    except ValueError:
        return False


def _peer(request: Request) -> str:
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else "unix"


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
