"""
The life of an event stream, whoever opened it: the C{/sse} resource or a
WSGI view that answered with a GRIP hold instruction.

L{Streams} starts a stream on a twisted.web request (headers, C{retry:},
replay, subscription, in one reactor turn), keeps it alive with heartbeats,
counts it toward the limits and the stats, and ends it: on disconnect, on
C{close(channel)}, when its reader falls behind, or at shutdown.

All methods: call in the reactor thread.
"""

from __future__ import annotations

import random
import socket
from collections import Counter
from itertools import chain
from typing import TYPE_CHECKING, Any, Iterable

from twisted.internet import tcp
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.http import Request as HTTPRequest

from ._browser import position, tagged_replay, tagged_route, wants_channel_ids
from ._client import StreamClient, close_after_response, send_to_each
from ._encoding import encode_body, encode_comment, encode_opening, encode_retry, frame
from ._hub import Event, Hub, Replay, revocation_covers
from ._lean import start_response
from ._options import StreamOptions
from ._request import Refused, cors_for_stream
from ._streamlog import StreamLog

if TYPE_CHECKING:
    from twisted.web.server import Request

__all__ = ["RESET", "STATS_CHANNELS", "StreamStats", "Streams", "peer_of"]

STATS_CHANNELS = 1000
"""Channels a stats snapshot lists by name, the ones with the most streams."""

_HEARTBEAT = encode_comment()
# The opening lines by retry value (the jitter spreads a few thousand).
_OPENINGS: dict[int, bytes] = {}
RESET = frame(None, encode_body("", event="reset"))
"""The C{reset} event: the stream cannot replay what the page missed."""

STREAM_HEADERS = (
    (b"Content-Type", b"text/event-stream; charset=utf-8"),
    (b"Cache-Control", b"no-cache"),
    (b"X-Accel-Buffering", b"no"),
)


class StreamStats:
    """
    Counters of the streams of one server, since it was created.

    @ivar connects: streams opened.
    @ivar disconnects: streams closed, for any reason.
    @ivar dropped_slow: streams aborted because their reader fell behind.
    @ivar dropped_by_reason: the same, by reason (C{"buffer"}, C{"stalled"}).
    @ivar refused: requests answered with an error instead of a stream, by
        HTTP status.
    @ivar replays: streams that resumed from a Last-Event-ID exactly.
    @ivar resets: streams sent a C{reset} event instead.
    @ivar held: streams opened by a WSGI view's hold instruction (also
        counted in C{connects}).
    @ivar ended: streams ended by C{close(channel)}.
    @ivar bytes_written: bytes written besides published events (the opening
        comment, replays, C{init} events and views' first bodies,
        heartbeats).
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
        "ended",
        "held",
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
        self.held = 0
        self.ended = 0
        self.bytes_written = 0
        self.bytes_discarded = 0


class Streams:
    """
    Every open stream of one server, and how one starts, lives and ends.

    @param hub: where events come from.
    @param reactor: the reactor (default: the global one, looked up late).
    @param options: the L{StreamOptions} (limits, heartbeat, retry, ...).

    @ivar clients: the open streams.
    @ivar stats: a L{StreamStats}.
    """

    log = Logger()

    def __init__(self, hub: Hub, *, reactor: Any = None, options: StreamOptions) -> None:
        self.hub = hub
        self.options = options
        self._reactor = reactor
        self.clients: set[StreamClient] = set()
        self._per_address: Counter[str] = Counter()
        self._pending = 0
        self._heartbeat: LoopingCall | None = None
        self.closing = False
        self.stopped_for_good = False
        self.stats = StreamStats()
        self._random = random.Random()  # noqa: S311 - jitter, not secrets
        # One bound method for every stream, not one each (kept per stream).
        self._on_drop = self._dropped
        hub.revocation_hooks.append(self._revoke_ending)
        self._stream_log = StreamLog(
            self.log,
            per_stream=options.log_streams,
            clock=lambda: self.reactor,
            open_count=lambda: len(self.clients),
        )

    @property
    def reactor(self) -> Any:
        """The reactor streams are timed with."""
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    # -- limits ------------------------------------------------------------------

    def check_limits(self, peer: str) -> None:
        """
        Refuse a new stream from C{peer} if the server is full or closing.

        @raise Refused: a transient 503 (come back later), or 204 after
            C{close(reconnect=False)}.
        """
        options = self.options
        if self.closing:
            if self.stopped_for_good:
                raise Refused(204, "the stream has stopped for good")
            raise Refused(503, "server is shutting down", self._retry_after(), transient=True)
        if len(self.clients) + self._pending >= options.max_connections:
            raise Refused(503, "too many connections", self._retry_after(), transient=True)
        per_address = options.max_connections_per_address
        if per_address is not None and self._per_address.get(peer, 0) >= per_address:
            raise Refused(
                503, "too many connections from your address", self._retry_after(), transient=True
            )

    def _retry_after(self) -> tuple[tuple[bytes, bytes]]:
        return ((b"Retry-After", b"%d" % (self.options.busy_retry_after,)),)

    def reserve(self, peer: str) -> None:
        """Count a stream that is being authorized toward the limits."""
        self._pending += 1
        self._per_address[peer] += 1

    def unreserve(self, peer: str) -> None:
        """Undo L{reserve} (the stream opened, or was refused, or left)."""
        self._pending -= 1
        self._release(peer)

    def _release(self, peer: str) -> None:
        count = self._per_address[peer] - 1
        if count > 0:
            self._per_address[peer] = count
        else:
            del self._per_address[peer]

    # -- answers -------------------------------------------------------------------

    def refuse(self, request: Request, refused: Refused) -> bytes:
        """
        Set a refusal's status and headers on C{request}; return its body
        (for a C{render} method to return).

        A transient refusal of a stream (C{GET}; C{HEAD} gets the same
        headers) is answered C{200} with a short event stream: a comment
        naming the reason and a C{retry:} of C{busy_retry_after} seconds (at
        least C{retry}), with jitter; then the stream and its connection
        end.  A browser's C{EventSource} then reconnects by itself, with its
        C{Last-Event-ID}; any other status would end it for good.
        C{Retry-After} marks the answer as a refusal.  A C{204} ends it for
        good, deliberately.
        """
        self.stats.refused[refused.code] += 1
        self.log.info(
            "refused stream from {peer}: {code} {why}",
            peer=peer_of(request),
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

    def _retry_later(self, request: Request, refused: Refused) -> bytes:
        options = self.options
        base = max(options.retry, options.busy_retry_after * 1000)
        retry = base + int(base * options.retry_jitter * self._random.random())
        request.setResponseCode(200)
        for name, value in STREAM_HEADERS:
            request.setHeader(name, value)
        origin, host = request.getHeader(b"origin"), request.getHeader(b"host")
        cors = cors_for_stream(
            origin.decode("latin-1") if isinstance(origin, bytes) else origin,
            host.decode("latin-1") if isinstance(host, bytes) else host,
            options,
        )
        if cors.allowed:
            for name, value in cors.headers:
                request.setHeader(name, value)
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

    def finish_refused(self, request: Request, refused: Refused) -> None:
        """Answer C{request} with a refusal and end it."""
        body = self.refuse(request, refused)
        if body:
            request.setHeader(b"Content-Length", b"%d" % (len(body),))
            request.write(body)
        request.finish()

    # -- opening a stream ------------------------------------------------------------

    def open(
        self,
        request: Request,
        channels: tuple[str, ...],
        peer: str,
        last_event_id: str | None,
        resume: str | None,
        *,
        reset: bool = False,
        first: bytes | None = None,
        identity: str | None = None,
    ) -> StreamClient:
        """
        Start the stream on C{request}, whose status and own headers are set:
        the stream headers, C{retry:}, then (a C{reset} event or) C{first}
        (an C{init} event, a view's first body), then every event after
        C{resume}, then live events.  If one of the channels was closed
        after C{resume}, the stream ends after the events up to the close.

        C{resume} equal to C{last_event_id} is the client's own position (a
        replay it asked for); another value is where the server fixed the
        stream's start (before hooks or a view ran): events published since
        are sent, and if they no longer fit in the history, C{reset} is sent
        instead of C{first}.

        C{identity} is who the stream belongs to (presence and revocation),
        set before it is subscribed; L{None} for a guest.
        """
        options = self.options
        stats = self.stats
        _set_stream_headers(request)
        client = StreamClient(
            request,
            channels=channels,
            peer=peer,
            clock=self.reactor,
            max_buffer=options.max_buffer,
            max_pause=options.max_pause,
            on_drop=self._on_drop,
            identity=identity,
        )
        channel = request.channel
        transport = getattr(channel, "transport", None)
        if transport is None:  # an HTTP/2 stream: its connection's transport
            transport = getattr(getattr(channel, "_conn", None), "transport", None)
        if type(transport) is not tcp.Server or not isinstance(channel, HTTPChannel):
            # (twisted.web's HTTP/1.1 channel sets it on TCP connections.)
            set_no_delay = getattr(transport, "setTcpNoDelay", None)
            if set_no_delay is not None:
                # Events are small and latency matters more than packet count.
                set_no_delay(True)
        _limit_unacknowledged_time(transport, options.heartbeat)
        request.registerProducer(client, True)
        self.clients.add(client)
        self._per_address[peer] += 1
        stats.connects += 1
        _when_finished(request, self, client)

        # Everything below happens in this one reactor turn: no event can be
        # published between the replay and the subscription.
        retry = options.retry + int(options.retry * options.retry_jitter * self._random.random())
        opening = _OPENINGS.get(retry)
        if opening is None:
            opening = encode_opening(retry)
            if len(_OPENINGS) < 4096:
                _OPENINGS[retry] = opening
        tagged = wants_channel_ids(request)
        if resume is None and not reset and not tagged:
            # Nothing to replay (a first connect): subscribed, then started.
            self.hub.subscribe(client, channels)
            self._start(request, client, opening + first if first else opening)
            self._stream_log.opened(peer, channels, last_event_id, 0, reset)
            self._ensure_heartbeat()
            return client
        parts = [opening]
        exact = resume is not None and resume == last_event_id and not reset
        answers: list[list[Event] | None] = []
        late = False

        def replay(events: list[Event] | None) -> None:
            if late:
                self._replay_fetched(client, events, tagged, last_event_id)
            else:
                answers.append(events)

        self._join(client, channels, resume, replay, exact=exact, tagged=tagged)
        if not answers:
            # A shared backplane holds the client while it fetches what it
            # missed: the stream starts now, the replay follows (in the
            # reactor turn that subscribes it).
            late = True
            self._start(request, client, b"".join([*parts, first or b""]))
            stats.replays += 1
            self._stream_log.opened(peer, channels, last_event_id, 0, reset)
            self._ensure_heartbeat()
            return client
        missed = answers[0]
        if tagged and not exact:
            # Where the stream starts (the browser client resumes from it
            # until an event comes): where the hooks' replay begins, or now.
            start = self.hub.last_id if missed is None or resume is None else resume
        elif tagged and missed is None:
            start = self.hub.last_id  # after the reset: from now on
        else:
            start = None
        if missed is None:
            # Exact: the client's id is unknown or too old.  Otherwise: more
            # was published since the start was fixed than the history
            # keeps, and C{first} would be stale.
            reset = True
            if not exact:
                first = None
            missed = []
        elif exact:
            stats.replays += 1
        if reset:
            stats.resets += 1
            parts.append(RESET)
            self.log.info(
                "stream reset for {peer}: cannot replay {channels} from {last_event_id!r}",
                peer=peer,
                channels=list(channels),
                last_event_id=last_event_id if last_event_id is not None else resume,
            )
        if start is not None:
            parts.append(position(start))
        if first:
            parts.append(first)
        ends = False
        for n, event in enumerate(missed):
            if event.closes:
                # The channel was closed since: up to there, then the end.
                ends = True
                missed = missed[: n + 1]
                break
        if ends:
            # All of it, then the end (bounded by the history).
            parts.extend(_replay_wires(missed, tagged))
        self._start(request, client, b"".join(parts))
        if missed and not ends:
            # As fast as the reader takes it, like live events (which the
            # subscription above now queues behind it).
            self._replay(client, missed, tagged)
        self._stream_log.opened(peer, channels, last_event_id, len(missed), reset)
        self._ensure_heartbeat()
        if ends:
            self._leave(client)
            client.end()
        return client

    def _join(
        self,
        client: StreamClient,
        channels: tuple[str, ...],
        after: str | None,
        replay: Replay,
        *,
        exact: bool,
        tagged: bool = False,
    ) -> None:
        """
        Subscribe C{client} to C{channels}, first handing C{replay} the
        events it missed after C{after} (none if L{None}), or L{None} if
        they cannot all be replayed (the client is subscribed all the same),
        in the reactor turn that subscribes it: at once, or later if a
        shared backplane holds the client while it fetches them (only for
        C{exact}: the client's own id).  Otherwise only this process's
        history counts.

        The stream lifecycle's only use of the hub's subscriptions (with
        L{_leave}).  C{tagged}: the stream asked for channel-tagged ids; its
        live events go through a receiver per channel that tags them (see
        L{wsgi_sse._browser}), its replay is tagged by the caller.
        """
        hub = self.hub
        route = tagged_route(client) if tagged else None
        if not exact:
            replay(hub.replay(channels, after) if after is not None else [])
            hub.join(client, channels, route=route)
            return
        hub.join(client, channels, after, replay=replay, route=route)

    def _replay_fetched(
        self,
        client: StreamClient,
        missed: list[Event] | None,
        tagged: bool,
        last_event_id: str | None,
    ) -> None:
        """
        Write the replay a shared backplane answered for a stream already
        started (or a reset), before its first live event.
        """
        stats = self.stats
        if missed is None:
            # Counted by the hub (replay_resets), as a backplane's answer.
            # The browser client is told where the stream goes on from.
            wire = RESET + position(self.hub.last_id) if tagged else RESET
            stats.bytes_written += len(wire)
            client.send(wire)
            self.log.info(
                "stream reset for {peer}: cannot replay {channels} from {last_event_id!r}",
                peer=client.peer,
                channels=list(client.channels),
                last_event_id=last_event_id,
            )
            return
        if not missed:
            return
        if missed[-1].closes:
            # The channel was closed since: up to there, then the end.
            wire = b"".join(_replay_wires(missed, tagged))
            stats.bytes_written += len(wire)
            client.send(wire)
            self._leave(client)
            client.end()
            return
        self._replay(client, missed, tagged)

    def _start(self, request: Request, client: StreamClient, head: bytes) -> None:
        """Send the response head with the stream's first bytes; C{client} writes from now on."""
        self.stats.bytes_written += len(head)
        start_response(request, head)
        client.started()

    def _replay(self, client: StreamClient, missed: list[Event], tagged: bool) -> None:
        """Write C{missed} to the started C{client} as its reader takes it."""
        size = sum(len(e.wire) for e in missed)
        self.stats.bytes_written += size
        client.replay(_replay_wires(missed, tagged), size)

    def _leave(self, client: StreamClient) -> None:
        """Stop delivering to C{client}."""
        self.hub.unsubscribe(client)

    def _gone(self, reason: object, client: StreamClient) -> None:
        self._leave(client)
        client.stopProducing()
        self.stats.bytes_discarded += client.discarded
        if client in self.clients:
            self.clients.discard(client)
            self._release(client.peer)
            self.stats.disconnects += 1
            if client.ended:
                self.stats.ended += 1
            why = reason.getErrorMessage() if isinstance(reason, Failure) else "finished"
            self._stream_log.closed(
                client.peer, client.channels, "channel closed" if client.ended else why
            )
        if not self.clients:
            self._stop_heartbeat()

    def _revoke_ending(self, identity: str | None, channel: str | None) -> int:
        """
        Revoke the streams of C{identity} and/or C{channel} that were ended
        while their reader was behind, no longer subscribed: they are cut,
        not left to hand what they are still owed to whoever no longer may
        read it.  Return how many.
        """
        ending = [
            client
            for client in self.clients
            if client.ending
            and revocation_covers(identity, channel, client.identity, client.channels)
        ]
        for client in ending:
            client.revoke()
        return len(ending)

    def _dropped(self, client: StreamClient, reason: str) -> None:
        # Unsubscribe now: later events are not even queued for it.
        self._leave(client)
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
        """
        Send a keep-alive comment to every client now (and prune history).

        The comment goes out as the hub's fan-out sends an event (see
        L{send_to_each}): straight to the socket for a stream on the fast
        path, C{send()} for every other (HTTP/1.0, TLS, HTTP/2, a paused
        reader, whose comment is held with its events).  Over a copy of
        the set: a send may end a stream (an HTTP/2 stream reset).
        """
        # Not to streams already ended that wait for their reader to catch up.
        clients = [client for client in self.clients if not client.closed]
        send_to_each(clients, _HEARTBEAT)
        self.stats.bytes_written += len(_HEARTBEAT) * len(clients)
        self.hub.prune()

    # -- shutting down ---------------------------------------------------------

    def close(self, *, reconnect: bool = True) -> None:
        """
        End every stream cleanly, with its connection, and refuse new ones
        (server shutdown).

        With C{reconnect} (the default), clients see the end of the response
        and reconnect, to this server when it comes back or to another one
        behind the same address; a stream request that still arrives is
        told to come back later (a transient refusal), never answered with
        an error that would end a browser's C{EventSource}.  Without it,
        every later stream request is answered C{204 No Content}, which
        tells a browser to stop reconnecting for good.

        Each stream's connection is closed rather than kept alive, so that
        a browser reconnects on a new connection (to whatever listens then)
        instead of over the old one.  A stream whose reader is behind ends
        once the reader has caught up, within C{max_pause} (see
        L{StreamClient.finish}).
        """
        self.closing = True
        self.stopped_for_good = not reconnect
        self._stop_heartbeat()
        for client in tuple(self.clients):
            self._leave(client)
            client.finish(close_connection=True)
        self._stream_log.flush()

    # -- stats -------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """
        Return the streams' counters as a JSON-ready dict.

        C{bytes_sent} counts every byte handed to the clients' connections:
        published events, replays, C{init} events, heartbeats and the
        opening lines, less what was held for readers that were dropped.

        C{channels} gives the streams of each channel that has any, for at
        most L{STATS_CHANNELS} channels (the ones with the most streams):
        with per-user channels there may be a hundred thousand, too many to
        list at every scrape.  C{channels_total} counts them all.
        """
        hub_stats = self.hub.stats
        stats = self.stats
        channels, channels_total = self.hub.busiest_channels(STATS_CHANNELS)
        return {
            "clients": len(self.clients),
            "pending": self._pending,
            "channels": channels,
            "channels_total": channels_total,
            "events_published": hub_stats.events_published,
            "deliveries": hub_stats.deliveries,
            "bytes_sent": hub_stats.bytes_queued + stats.bytes_written - stats.bytes_discarded,
            "connects": stats.connects,
            "disconnects": stats.disconnects,
            "dropped_slow": stats.dropped_slow,
            "dropped_by_reason": dict(sorted(stats.dropped_by_reason.items())),
            "replays": stats.replays,
            "resets": stats.resets,
            "held": stats.held,
            "ended": stats.ended,
            "refused": {str(code): n for code, n in sorted(stats.refused.items())},
        }


class _WhenGone:
    """
    What C{request.notifyFinish().addBoth(streams._gone, client)} would do,
    in one small object in the request's notifications (twisted.web calls
    C{callback(None)} on each when the response ends, C{errback(reason)}
    when the connection is lost).

    A stream lives for hours: a Deferred each, with its list of callbacks
    and their tuples, would be six more objects per open stream for every
    full collection of the garbage collector to go through.
    """

    __slots__ = ("_client", "_streams")

    log = Logger()

    def __init__(self, streams: Streams, client: StreamClient) -> None:
        self._streams = streams
        self._client = client

    def callback(self, result: object) -> None:
        """The response ended."""
        self._gone(result)

    def errback(self, reason: object) -> None:
        """The connection was lost."""
        self._gone(reason)

    def _gone(self, reason: object) -> None:
        try:
            self._streams._gone(reason, self._client)
        except Exception:  # noqa: BLE001 - as a Deferred would keep it: logged
            self.log.failure("ending stream of {peer} failed", peer=self._client.peer)


_NOTIFY_FINISH = HTTPRequest.notifyFinish


def _when_finished(request: Request, streams: Streams, client: StreamClient) -> None:
    """Call C{streams._gone(reason, client)} when C{request}'s response ends, however."""
    notifications = getattr(request, "notifications", None)
    if type(notifications) is list and type(request).notifyFinish is _NOTIFY_FINISH:
        notifications.append(_WhenGone(streams, client))
    else:  # another request class (a test double): its own notifyFinish
        request.notifyFinish().addBoth(streams._gone, client)


def _set_stream_headers(request: Request) -> None:
    """Set the stream's response headers (a C{Cache-Control} already set stays)."""
    raw = getattr(request.responseHeaders, "_rawHeaders", None)
    if raw is None:  # pragma: no cover - another Headers implementation
        for name, value in STREAM_HEADERS:
            if name != b"Cache-Control" or not request.responseHeaders.hasHeader(name):
                request.setHeader(name, value)
        return
    # As setHeader stores them (the names are canonical), without its checks.
    for name, value in STREAM_HEADERS:
        if name != b"Cache-Control" or name not in raw:
            raw[name] = [value]


_TCP_USER_TIMEOUT: int | None = getattr(socket, "TCP_USER_TIMEOUT", None)
_MAX_USER_TIMEOUT = 2**31 - 1  # milliseconds: the option is a C int


def _limit_unacknowledged_time(transport: Any, heartbeat: float) -> None:
    """
    Have the kernel close a stream whose peer stopped acknowledging data.

    A client that vanishes without a FIN or RST (a laptop closed, a network
    gone) would otherwise stay connected until TCP gives up retransmitting,
    some fifteen minutes later.  With C{TCP_USER_TIMEOUT} (Linux) set to
    twice the heartbeat (at least 30 s, at most the C int milliseconds the
    option holds: some 24 days), the heartbeat itself finds it: its bytes
    stay unacknowledged and the connection is closed, and the client is
    removed like any other.
    """
    option = _TCP_USER_TIMEOUT
    sock = getattr(transport, "socket", None)
    if option is None or sock is None or not heartbeat:
        return
    milliseconds = min(max(2 * heartbeat, 30.0) * 1000, _MAX_USER_TIMEOUT)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, int(milliseconds))
    except (OSError, AttributeError):  # not a TCP socket (a UNIX socket, a test double)
        pass


def _replay_wires(missed: list[Event], tagged: bool) -> Iterable[bytes]:
    """
    The wire bytes of replayed events, taken from the history one event at
    a time (for a channel-tagged stream, copies with tagged ids).
    """
    if tagged:
        return chain.from_iterable(tagged_replay((e,)) for e in missed)
    return (e.wire for e in missed)


def peer_of(request: Request) -> str:
    """The client's address for logs and per-address limits (C{"unix"} for UNIX sockets)."""
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else "unix"


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
