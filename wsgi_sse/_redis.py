"""
The Redis backplane: one Redis Stream shared by every process of a site.

Every broadcast is appended (C{XADD}) to one stream, C{wsgi-sse:<namespace>:
events}; every process reads that stream (C{XREAD BLOCK}) and hands what it
reads to its L{RedisHub}.  So all processes see the same events, in the same
order, with the same ids (the Redis stream ids), and a browser may reconnect
to any of them with its C{Last-Event-ID}.

redis-py is blocking: it is only ever used from threads owned by the
backplane (one reader, one publisher, a small pool for replays), never from
the reactor thread or a WSGI thread, and every socket has a timeout.

redis-py is imported lazily: C{import wsgi_sse} works without it.
"""

from __future__ import annotations

import contextlib
import queue
import re
import secrets
import threading
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ._broadcast import prepare_event, validate_channel
from ._encoding import frame
from ._hub import CLOSE_BODY, DEFAULT_HISTORY_CHANNELS, Event, Hub, Subscriber, _base36
from ._resource import _RESET

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

__all__ = [
    "REDIS_URL_ENV",
    "RedisBackplane",
    "RedisHub",
    "RedisPublisher",
    "resolve_redis_url",
    "stream_key",
]

REDIS_URL_ENV = "WSGI_SSE_REDIS_URL"
"""The environment variable that turns the Redis backplane on."""

_ID = re.compile(r"(\d{1,20})-(\d{1,20})(?:\.([0-9a-z]{1,16})\.(\d{1,10}))?\Z")
# A Redis id "ms-n" becomes the integer ((ms << 64) | n) << _LOCAL_BITS; the
# low bits number the local-only events published after it during an outage.
_LOCAL_BITS = 32
_LOCAL_MASK = (1 << _LOCAL_BITS) - 1
_FIELD_CHANNEL = b"c"
_FIELD_BODY = b"b"
_FIELD_ORIGIN = b"o"


def stream_key(namespace: str = "default") -> str:
    """The Redis key of the stream shared by the processes of C{namespace}."""
    return f"wsgi-sse:{namespace}:events"


def resolve_redis_url(redis_url: str | None) -> str | None:
    """
    The Redis URL to use: C{redis_url}, else C{$WSGI_SSE_REDIS_URL}; an
    empty string (given or in the environment) means no Redis.
    """
    if redis_url is None:
        from ._config import environment_value

        redis_url = environment_value("redis_url")
    return redis_url or None


def _redis_seq(ms: int, n: int) -> int:
    return ((ms << 64) | n) << _LOCAL_BITS


def _parse(event_id: str) -> tuple[int, str, str | None, int] | None:
    """
    Split a wire id into (seq of its Redis part, its Redis part, the instance
    of a local-only id or None, the local number), or None if malformed.
    """
    match = _ID.match(event_id)
    if match is None:
        return None
    ms, n = int(match.group(1)), int(match.group(2))
    instance, local = match.group(3), int(match.group(4) or 0)
    if ms >= 1 << 64 or n >= 1 << 64 or local >= 1 << _LOCAL_BITS:
        return None
    return _redis_seq(ms, n), f"{ms}-{n}", instance, local


@dataclass(slots=True)
class _Fetched:
    """What the replay pool found in Redis after a client's last id."""

    found: bool
    entries: list[tuple[int, str, str, bytes]]
    end_seq: int
    end_id: str
    truncated: bool


class _Held:
    """A subscriber waiting for its replay to come back from Redis."""

    __slots__ = ("channels", "fetched", "subscriber", "timer")

    def __init__(self, subscriber: Subscriber, channels: tuple[str, ...]) -> None:
        self.subscriber = subscriber
        self.channels = channels
        self.fetched: _Fetched | None = None
        self.timer: Any = None  # an IDelayedCall


class RedisHub(Hub):
    """
    A L{Hub} whose event ids are Redis stream ids (C{"1700000000000-0"}),
    valid in every process that shares the stream.

    Events from Redis arrive through L{deliver}.  L{publish} is only used
    for I{local-only} events, published while Redis is unreachable: they get
    the id of the last Redis event followed by this hub's instance and a
    counter (C{"1700000000000-0.k3x9ab.1"}), are sent to the clients of this
    process only, and replay only here.  Another process given such an id
    replays from the Redis event before it.

    When a client's C{Last-Event-ID} is not covered by this process's own
    history (it connected to another process before, or this process
    started since), its missed events are read from Redis with C{XRANGE}
    and sent before it joins the live stream, without gaps or duplicates.

    All methods: call in the reactor thread.

    @param replay_wait: seconds a reconnecting client may wait for this
        process to catch up with the stream before it is sent C{reset}.
    """

    def __init__(
        self,
        *,
        history_size: int = 1000,
        history_age: float = 600.0,
        history_channels: int = DEFAULT_HISTORY_CHANNELS,
        clock: IReactorTime | None = None,
        instance_id: str | None = None,
        replay_wait: float = 5.0,
    ) -> None:
        if instance_id is None:
            instance_id = _base36(secrets.randbits(40))
        if not re.fullmatch(r"[0-9a-z]{1,16}", instance_id):
            raise ValueError("instance_id must be 1-16 characters of [0-9a-z]")
        super().__init__(
            history_size=history_size,
            history_age=history_age,
            history_channels=history_channels,
            clock=clock,
            instance_id=instance_id,
        )
        self.replay_wait = replay_wait
        self.backplane: RedisBackplane | None = None
        # Every event with a seq above this one reached this hub.
        self._base_seq = 0
        self._last_redis_seq = 0
        self._last_redis_id = "0-0"
        self._last_id = "0-0"
        self._local_count = 0
        self._pending: tuple[tuple[str, ...], str] | None = None
        self._held: dict[Subscriber, _Held] = {}
        self._waiting: list[_Held] = []

    # -- ids -------------------------------------------------------------

    @property
    def last_id(self) -> str:
        """The id of the newest event (the stream's position before any)."""
        return self._last_id

    def start_at(self, redis_id: str) -> None:
        """
        Declare that this hub receives every event after C{redis_id} (the
        stream's last id when the backplane started reading it).
        """
        parsed = _parse(redis_id)
        if parsed is None:
            raise ValueError(f"not a Redis stream id: {redis_id!r}")
        seq = parsed[0]
        if seq > self._seq:
            self._base_seq = self._seq = self._last_redis_seq = seq
            self._last_redis_id = self._last_id = parsed[1]
            self._local_count = 0
            if self._waiting:
                self._check_waiting()

    def parse_id(self, event_id: str) -> int | None:
        """
        Return the seq of C{event_id} if this hub's own history can answer
        for it, else L{None}.
        """
        parsed = _parse(event_id)
        if parsed is None:
            return None
        seq, _, instance, local = parsed
        if instance is not None and instance == self.instance_id:
            seq |= local
        if seq < self._base_seq or seq > self._seq:
            return None
        return seq

    # -- events ------------------------------------------------------------

    def publish(self, channel: str, body: bytes) -> int:
        """
        Deliver a I{local-only} event (Redis is unreachable): to this
        process's clients, with an id that only this process replays.
        """
        self._local_count += 1
        if self._local_count >= 1 << _LOCAL_BITS:  # pragma: no cover - 4e9 events
            raise OverflowError("too many local-only events in a row")
        seq = self._last_redis_seq | self._local_count
        event_id = f"{self._last_redis_id}.{self.instance_id}.{self._local_count}"
        return self.deliver(seq, event_id, channel, body)

    def deliver(self, seq: int, event_id: str, channel: str, body: bytes) -> int:
        """Record and fan out an event; C{seq} must grow with every call."""
        if seq <= self._seq:
            raise ValueError("event ids must grow")
        self._seq = seq
        self._last_id = event_id
        if not seq & ((1 << _LOCAL_BITS) - 1):
            self._last_redis_seq = seq
            self._last_redis_id = event_id
            self._local_count = 0
        return super().deliver(seq, event_id, channel, body)

    def deliver_redis(self, redis_id: str, channel: str, body: bytes) -> int:
        """Deliver an event read from the stream (ignored if already seen)."""
        parsed = _parse(redis_id)
        if parsed is None or parsed[2] is not None:
            raise ValueError(f"not a Redis stream id: {redis_id!r}")
        return self.deliver_redis_many([(parsed[0], parsed[1], channel, body)])[0]

    def deliver_redis_many(self, events: Sequence[tuple[int, str, str, bytes]]) -> list[int]:
        """
        Deliver a batch read from the stream: C{(seq, redis id, channel,
        body)} in stream order.  Consecutive events of one channel reach
        each subscriber in one write.  Events already seen are skipped.

        @return: for each event, the number of subscribers it reached.
        """
        counts = [0] * len(events)
        now = self._now()
        i, end = 0, len(events)
        while i < end:
            channel = events[i][2]
            ch = self._channel(channel)
            if events[i][3] == CLOSE_BODY:
                # close(channel): ends the channel's streams after what came
                # before it.
                seq, redis_id = events[i][0], events[i][1]
                if seq > self._seq:
                    if seq & _LOCAL_MASK:
                        raise ValueError(f"not a Redis stream id: {redis_id!r}")
                    wire = self._record(seq, redis_id, ch, CLOSE_BODY, now)
                    self._last_redis_seq = seq
                    self._last_redis_id = redis_id
                    self._local_count = 0
                    counts[i] = self._end(ch, wire)
                else:
                    self._forget_if_idle(ch)
                i += 1
                continue
            wires = []
            delivered = []
            j = i
            while j < end and events[j][2] == channel and events[j][3] != CLOSE_BODY:
                seq, redis_id, _, body = events[j]
                if seq > self._seq:
                    if seq & _LOCAL_MASK:
                        raise ValueError(f"not a Redis stream id: {redis_id!r}")
                    wires.append(self._record(seq, redis_id, ch, body, now))
                    self._last_redis_seq = seq
                    self._last_redis_id = redis_id
                    self._local_count = 0
                    delivered.append(j)
                j += 1
            if wires:
                count = self._fan_out(ch, b"".join(wires), len(wires))
                for k in delivered:
                    counts[k] = count
            else:
                self._forget_if_idle(ch)
            i = j
        if self._waiting:
            self._check_waiting()
        return counts

    # -- replay across processes -------------------------------------------

    def replay(self, channels: Iterable[str], last_event_id: str) -> list[Event] | None:
        """
        Return the missed events from this process's history; if it does
        not cover C{last_event_id} but Redis may, return C{[]} and let the
        L{subscribe} that follows in the same reactor turn hold the client
        until its missed events have been read from Redis.
        """
        names = tuple(dict.fromkeys(channels))
        self._pending = None
        events = self._missed(names, last_event_id)
        if events is not None:
            return events
        if self.backplane is None or _parse(last_event_id) is None:
            return None
        self._pending = (names, last_event_id)
        self._now_clock().callLater(0, self._forget_pending, self._pending)
        return []

    def can_replay(self, channels: Iterable[str], last_event_id: str) -> bool:
        """Whether this hub or Redis may replay after C{last_event_id}."""
        if super().can_replay(channels, last_event_id):
            return True
        return self.backplane is not None and _parse(last_event_id) is not None

    def _forget_pending(self, pending: tuple[tuple[str, ...], str]) -> None:
        if self._pending is pending:
            self._pending = None

    def _now_clock(self) -> Any:
        self._now()
        return self._clock

    def subscribe(self, subscriber: Subscriber, channels: Iterable[str]) -> None:
        """Start delivering to C{subscriber} (after its replay from Redis, if any)."""
        names = tuple(dict.fromkeys(channels))
        pending, self._pending = self._pending, None
        if subscriber in self._held:
            raise ValueError("already subscribed")
        if pending is None or pending[0] != names or self.backplane is None:
            super().subscribe(subscriber, names)
            return
        if subscriber in self._subscriptions:
            raise ValueError("already subscribed")
        held = self._held[subscriber] = _Held(subscriber, names)
        self.backplane.fetch_after(pending[1]).addBoth(self._fetched, held)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        """Stop delivering to C{subscriber}; unknown subscribers are ignored."""
        held = self._held.pop(subscriber, None)
        if held is None:
            super().unsubscribe(subscriber)
            return
        self._cancel(held)

    def _cancel(self, held: _Held) -> None:
        if held.timer is not None and held.timer.active():
            held.timer.cancel()
        if held in self._waiting:
            self._waiting.remove(held)

    def _fetched(self, result: _Fetched | Failure, held: _Held) -> None:
        if self._held.get(held.subscriber) is not held:
            return
        if isinstance(result, Failure):
            self.log.warn("cannot replay from Redis: {error}", error=result.getErrorMessage())
            self._release(held, None)
            return
        if not result.found or result.truncated:
            self._release(held, None)
            return
        held.fetched = result
        if result.end_seq > self._seq:
            # The stream is ahead of this process: wait until the reader
            # has delivered up to the end of what Redis returned.
            self._waiting.append(held)
            held.timer = self._now_clock().callLater(self.replay_wait, self._give_up, held)
            return
        self._complete(held)

    def _check_waiting(self) -> None:
        for held in [h for h in self._waiting if h.fetched and h.fetched.end_seq <= self._seq]:
            self._waiting.remove(held)
            self._complete(held)

    def _give_up(self, held: _Held) -> None:
        held.timer = None
        if self._held.get(held.subscriber) is held:
            self._release(held, None)

    def _complete(self, held: _Held) -> None:
        fetched = held.fetched
        assert fetched is not None
        wanted = set(held.channels)
        after = self._missed(held.channels, fetched.end_id)
        if after is None:
            self._release(held, None)
            return
        wires = []
        ends = False
        for seq, event_id, channel, body in fetched.entries:
            if channel in wanted and seq <= fetched.end_seq:
                ends = body == CLOSE_BODY
                wires.append(frame(event_id, b"" if ends else body))
                if ends:
                    break
        if not ends:
            for e in after:
                wires.append(e.wire)
                if e.closes:
                    ends = True
                    break
        self._release(held, wires, ends=ends)

    def _release(self, held: _Held, wires: list[bytes] | None, *, ends: bool = False) -> None:
        """
        Send the replay (or a reset) and join the live stream, in one turn;
        or end the stream after the replay if its channel was closed in it.
        """
        del self._held[held.subscriber]
        self._cancel(held)
        if wires is None:
            if self.backplane is not None:
                self.backplane._count("replay_resets")
            held.subscriber.send(_RESET)
        else:
            if self.backplane is not None:
                self.backplane._count("replays_from_redis")
            for wire in wires:
                held.subscriber.send(wire)
            end = getattr(held.subscriber, "end", None)
            if ends and end is not None:
                end()
                return
        super().subscribe(held.subscriber, held.channels)

    def held_count(self) -> int:
        """Connections waiting for a replay from Redis."""
        return len(self._held)


def _connect(url: str, timeout: float, read_timeout: float | None = None) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=read_timeout if read_timeout is not None else timeout,
        socket_connect_timeout=timeout,
        decode_responses=False,
        # Never resend by itself: a pipeline of XADDs resent after a broken
        # connection would append events twice.  The backplane decides.
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


class RedisBackplane(Service):
    """
    Share the broadcasts of every process of a site through one Redis
    Stream.  A L{Publisher<wsgi_sse._broadcast.Publisher>} for a
    L{Broadcaster<wsgi_sse.Broadcaster>}, and a Twisted service: start it
    with the server (L{make_application<wsgi_sse.make_application>} does,
    given C{redis_url}).

    L{publish} (reactor thread) queues the event for a publisher thread,
    which appends it to the stream; a reader thread reads the stream and
    delivers every event -- this process's own too -- to the L{RedisHub}.
    While Redis is unreachable, events are delivered to this process's
    clients only (I{local-only}), the reader reconnects with exponential
    backoff, and cross-process delivery resumes when it succeeds.

    Lifecycle methods and L{publish}: call in the reactor thread.
    L{stats}: may be called in any thread.

    @param url: a redis-py URL (C{redis://host:6379/0}, C{rediss://...},
        C{unix:///run/redis.sock}).
    @param hub: the hub to deliver to (default: a new L{RedisHub}).
    @param namespace: sites sharing one Redis use different namespaces.
    @param maxlen: about how many events the stream keeps (C{MAXLEN ~}).
    @param queue_size: events waiting for the publisher thread; past it,
        events are delivered locally only.
    @param timeout: seconds for connecting and for every command.
    @param block: seconds one C{XREAD BLOCK} waits.
    @param max_replay: the most events one reconnecting client may be sent
        from Redis; a client that missed more gets C{reset}.
    @param backoff: the first and the longest delay between reconnections.
    """

    log = Logger()
    name = "wsgi-sse-redis"

    def __init__(
        self,
        url: str,
        *,
        hub: RedisHub | None = None,
        reactor: Any = None,
        namespace: str = "default",
        maxlen: int = 100_000,
        queue_size: int = 10_000,
        timeout: float = 2.0,
        block: float = 1.0,
        max_replay: int = 10_000,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if maxlen < 1 or queue_size < 1 or max_replay < 1:
            raise ValueError("maxlen, queue_size and max_replay must be positive")
        if timeout <= 0 or block <= 0:
            raise ValueError("timeout and block must be positive")
        self.url = url
        self._reactor = reactor
        self.hub = hub if hub is not None else RedisHub(clock=reactor)
        self.hub.backplane = self
        self.namespace = namespace
        self.key = stream_key(namespace)
        self.maxlen = maxlen
        self.timeout = timeout
        self.block = block
        self.max_replay = max_replay
        self.backoff = backoff
        self.connected = False
        self._queue: queue.Queue[tuple[int, str, bytes] | None] = queue.Queue(queue_size)
        self._stopping = threading.Event()
        # Set once the reader's first attempt to connect has ended: until
        # then, events wait for it rather than going local-only.
        self._first_attempt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPool | None = None
        self._reader_conn: Any = None
        self._publisher_conn: Any = None
        self._down_logged = False
        self._replay_conn: Any = None
        self._token = 0
        self._origin_prefix = self.hub.instance_id.encode("ascii") + b":"
        # Reactor-thread state: who waits for which of our events, and the
        # events delivered locally after a failed XADD (which may still
        # have reached Redis: then they must not be delivered twice).
        self._waiting: dict[int, Deferred[int]] = {}
        self._fetching: dict[str, list[Deferred[_Fetched]]] = {}
        self._fallen_back: deque[int] = deque()
        self._fallen_back_set: set[int] = set()
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(
            (
                "published",
                "delivered",
                "errors",
                "reconnects",
                "local_only",
                "queue_full",
                "duplicates_suppressed",
                "replays_from_redis",
                "replay_resets",
                "replay_fetches",
                "malformed",
            ),
            0,
        )

    @property
    def reactor(self) -> Any:
        """The reactor events are delivered in."""
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def stats(self) -> dict[str, Any]:
        """
        Counters since start: C{published} (appended to Redis by this
        process), C{delivered} (read from Redis and delivered here),
        C{errors}, C{reconnects}, C{local_only} (delivered to this process
        only, because Redis was unreachable or the queue full),
        C{queue_full}, C{duplicates_suppressed}, C{replays_from_redis},
        C{replay_resets}, C{replay_fetches} (C{XRANGE}s made for them; clients
        sharing a last id share one), C{malformed} (stream entries not written by
        wsgi-sse, dropped); and C{connected}, C{queued}, C{stream}.
        May be called in any thread.
        """
        with self._lock:
            out: dict[str, Any] = dict(self._counters)
        out["connected"] = self.connected
        out["queued"] = self._queue.qsize()
        out["stream"] = self.key
        return out

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        """Start the reader, the publisher and the replay threads."""
        super().startService()  # type: ignore[no-untyped-call]
        self._stopping.clear()
        self._first_attempt.clear()
        self._pool = ThreadPool(0, 2, "wsgi-sse-redis-replay")
        self._pool.start()
        self._threads = [
            threading.Thread(target=self._read_loop, name="wsgi-sse-redis-reader", daemon=True),
            threading.Thread(
                target=self._publish_loop, name="wsgi-sse-redis-publisher", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stopService(self) -> Deferred[None]:
        """Publish what is queued (within C{timeout}), then stop the threads."""
        super().stopService()  # type: ignore[no-untyped-call]
        self._stopping.set()
        self._first_attempt.set()
        threads, self._threads = self._threads, []
        pool, self._pool = self._pool, None
        done: Deferred[None] = Deferred()
        reactor = self.reactor

        def stop() -> None:
            try:
                self._queue.put(None, timeout=self.timeout)
            except queue.Full:
                pass
            conn = self._reader_conn
            if conn is not None:
                # Wake the reader out of XREAD BLOCK.
                with contextlib.suppress(Exception):
                    conn.connection_pool.disconnect()
            for thread in threads:
                thread.join(self.timeout + self.block + 1)
            if pool is not None:
                pool.stop()
            replay_conn, self._replay_conn = self._replay_conn, None
            if replay_conn is not None:
                replay_conn.close()
            reactor.callFromThread(done.callback, None)

        threading.Thread(target=stop, name="wsgi-sse-redis-stop", daemon=True).start()
        return done

    # -- publishing (reactor thread) ----------------------------------------

    def publish(self, channel: str, body: bytes) -> int | Deferred[int]:
        """
        Send an encoded event to every process: queue it for Redis, or
        deliver it locally only if Redis is unreachable or the queue is
        full.  Call in the reactor thread.

        @return: the number of this process's clients it reached (a
            Deferred of it when it goes through Redis).
        """
        if not self.running or (not self.connected and self._first_attempt.is_set()):
            return self._local_only(channel, body)
        self._token += 1
        token = self._token
        try:
            self._queue.put_nowait((token, channel, body))
        except queue.Full:
            self._count("queue_full")
            return self._local_only(channel, body)
        waiting: Deferred[int] = Deferred()
        self._waiting[token] = waiting
        return waiting

    def _local_only(self, channel: str, body: bytes) -> int:
        self._count("local_only")
        return self.hub.publish(channel, body)

    def _fall_back(self, batch: list[tuple[int, str, bytes]]) -> None:
        """Deliver locally the events that could not be appended to Redis."""
        for token, channel, body in batch:
            self._fallen_back.append(token)
            self._fallen_back_set.add(token)
            count = self._local_only(channel, body)
            waiting = self._waiting.pop(token, None)
            if waiting is not None:
                waiting.callback(count)
        while len(self._fallen_back) > 100_000:
            self._fallen_back_set.discard(self._fallen_back.popleft())

    def _publish_loop(self) -> None:
        conn: Any = None
        try:
            self._publish_until_stopped(conn)
        finally:
            conn = self._publisher_conn
            self._publisher_conn = None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _publish_until_stopped(self, conn: Any) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < 500:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            if not self._first_attempt.is_set():
                self._first_attempt.wait(self.timeout * 2)
            if not self.connected:
                self.reactor.callFromThread(self._fall_back, batch)
            else:
                try:
                    if conn is None:
                        conn = self._publisher_conn = _connect(self.url, self.timeout)
                    pipe = conn.pipeline(transaction=False)
                    prefix = self._origin_prefix
                    for token, channel, body in batch:
                        pipe.xadd(
                            self.key,
                            {
                                _FIELD_CHANNEL: channel.encode("utf-8"),
                                _FIELD_BODY: body,
                                _FIELD_ORIGIN: prefix + b"%d" % (token,),
                            },
                            maxlen=self.maxlen,
                            approximate=True,
                        )
                    pipe.execute()
                    self._count("published", len(batch))
                except Exception as e:  # noqa: BLE001 - any Redis trouble: deliver locally
                    self._count("errors")
                    self._went_down("publish", e)
                    conn = self._publisher_conn = None
                    self.reactor.callFromThread(self._fall_back, batch)
            if stop:
                return

    # -- reading (reader thread) ---------------------------------------------

    def _went_down(self, where: str, error: BaseException) -> None:
        self.connected = False
        if not self._down_logged:
            self._down_logged = True
            if not self._stopping.is_set():
                self.reactor.callFromThread(
                    self.log.warn,
                    "Redis unreachable ({where}: {error}); delivering locally only",
                    where=where,
                    error=str(error) or type(error).__name__,
                )

    def _read_loop(self) -> None:
        try:
            self._read_until_stopped()
        finally:
            conn, self._reader_conn = self._reader_conn, None
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()

    def _read_until_stopped(self) -> None:
        delay = first_delay = self.backoff[0]
        last: bytes | None = None
        ever_connected = False
        stopping = self._stopping
        while not stopping.is_set():
            try:
                conn = self._reader_conn
                if conn is None:
                    conn = self._reader_conn = _connect(
                        self.url, self.timeout, self.timeout + self.block
                    )
                if last is None:
                    newest = conn.xrevrange(self.key, count=1)
                    last = newest[0][0] if newest else b"0-0"
                    self.reactor.callFromThread(self.hub.start_at, last.decode("ascii"))
                if not self.connected:
                    conn.ping()
                    if ever_connected:
                        self._count("reconnects")
                    self.connected = True
                    self._first_attempt.set()
                    self._down_logged = False
                    delay = first_delay
                    self.reactor.callFromThread(
                        self.log.info,
                        "{what} Redis at {url}, stream {key}",
                        what="reconnected to" if ever_connected else "connected to",
                        url=_safe_url(self.url),
                        key=self.key,
                    )
                    ever_connected = True
                answer = conn.xread(
                    {self.key: last}, count=1000, block=max(1, int(self.block * 1000))
                )
            except Exception as e:  # noqa: BLE001 - any Redis trouble: back off, retry
                if stopping.is_set():
                    return
                self._count("errors")
                self._went_down("read", e)
                self._first_attempt.set()
                conn, self._reader_conn = self._reader_conn, None
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                stopping.wait(delay * (0.5 + secrets.randbelow(1000) / 1000))
                delay = min(delay * 2, self.backoff[1])
                continue
            if not answer:
                continue
            entries = answer[0][1]
            if not entries:
                continue
            last = entries[-1][0]
            batch = []
            malformed = 0
            for raw_id, fields in entries:
                channel = fields.get(_FIELD_CHANNEL)
                body = fields.get(_FIELD_BODY)
                if channel is None or body is None:
                    continue
                try:
                    name = channel.decode("utf-8")
                except UnicodeDecodeError:
                    name = ""
                if not name or not _well_formed(body):
                    malformed += 1
                    continue
                parsed = _parse(raw_id.decode("ascii"))
                if parsed is None or parsed[2] is not None:
                    malformed += 1
                    continue
                batch.append((parsed[0], parsed[1], name, body, fields.get(_FIELD_ORIGIN)))
            if malformed:
                self._count("malformed", malformed)
            self._count("delivered", len(batch))
            self.reactor.callFromThread(self._deliver_batch, batch)

    def _deliver_batch(self, batch: list[tuple[int, str, str, bytes, bytes | None]]) -> None:
        """Hand a batch read from the stream to the hub.  Reactor thread."""
        prefix = self._origin_prefix
        events = []
        tokens = []
        for seq, redis_id, channel, body, origin in batch:
            token = 0
            if origin is not None and origin.startswith(prefix):
                token = int(origin[len(prefix) :] or 0)
                if token in self._fallen_back_set:
                    # Appended after all, although XADD reported an error:
                    # it was already delivered here as local-only.
                    self._fallen_back_set.discard(token)
                    self._count("duplicates_suppressed")
                    continue
            events.append((seq, redis_id, channel, body))
            tokens.append(token)
        counts = self.hub.deliver_redis_many(events)
        for token, count in zip(tokens, counts, strict=True):
            if token:
                self._resolve(token, count)

    def _resolve(self, token: int, count: int) -> None:
        waiting = self._waiting
        found = waiting.pop(token, None)
        if found is not None:
            found.callback(count)
        # Our publisher appends in order: earlier tokens not seen by now
        # never will be (lost with a Redis restart); answer their waiters.
        # The dict is in token order.
        while waiting:
            first = next(iter(waiting))
            if first > token:
                break
            waiting.pop(first).callback(0)
        fallen = self._fallen_back
        while fallen and fallen[0] < token:
            self._fallen_back_set.discard(fallen.popleft())

    # -- replay (replay pool) --------------------------------------------------

    def fetch_after(self, last_event_id: str) -> Deferred[_Fetched]:
        """
        Read from Redis the events after C{last_event_id} (a wire id of any
        process), in a thread.  Call in the reactor thread; the result
        arrives in it.
        """
        parsed = _parse(last_event_id)
        if parsed is None or self._pool is None:
            return succeed(_Fetched(False, [], 0, "", False))
        redis_id = parsed[1]
        # Clients reconnecting together (after a restart) mostly share their
        # last id: one XRANGE answers them all.
        waiters = self._fetching.get(redis_id)
        if waiters is None:
            waiters = self._fetching[redis_id] = []
            self._count("replay_fetches")
            fetching = deferToThreadPool(self.reactor, self._pool, self._fetch, redis_id)
            fetching.addBoth(self._share_fetched, redis_id)
        answer: Deferred[_Fetched] = Deferred()
        waiters.append(answer)
        return answer

    def _share_fetched(self, result: _Fetched | Failure, redis_id: str) -> None:
        for answer in self._fetching.pop(redis_id, []):
            if isinstance(result, Failure):
                answer.errback(result)
            else:
                answer.callback(result)

    def _fetch(self, redis_id: str) -> _Fetched:
        with self._lock:
            conn = self._replay_conn
            if conn is None:
                conn = self._replay_conn = _connect(self.url, self.timeout)
        pipe = conn.pipeline(transaction=False)
        # The client's own event still in the stream proves that nothing
        # after it was trimmed.
        pipe.xrange(self.key, redis_id, redis_id, count=1)
        pipe.xrange(self.key, "(" + redis_id, "+", count=self.max_replay + 1)
        exact, entries = pipe.execute()
        start = _parse(redis_id)
        assert start is not None
        found = bool(exact)
        truncated = len(entries) > self.max_replay
        out = []
        for raw_id, fields in entries:
            event_id = raw_id.decode("ascii")
            parsed = _parse(event_id)
            channel = fields.get(_FIELD_CHANNEL)
            body = fields.get(_FIELD_BODY)
            if parsed is None or channel is None or body is None:
                continue
            out.append((parsed[0], event_id, channel.decode("utf-8", "replace"), body))
        if out:
            end_seq, end_id = out[-1][0], out[-1][1]
        else:
            end_seq, end_id = start[0], redis_id
        return _Fetched(found, out, end_seq, end_id, truncated)


def _well_formed(body: bytes) -> bool:
    """
    Whether a body read from Redis is one that L{encode_body} could have
    made: complete lines, no blank line (it would end the event early), no
    C{id:} line (ids are assigned by the stream), no CR.
    """
    return (
        body.endswith(b"\n")
        and b"\n\n" not in body
        and b"\r" not in body
        and not body.startswith(b"id")
        and b"\nid" not in body
    )


def _safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


class RedisPublisher:
    """
    Broadcast to every process of a site from a program that is not a web
    server (a cron job, a task worker): no reactor, no threads, one
    C{XADD} per event.

    >>> from wsgi_sse.redis import RedisPublisher        # doctest: +SKIP
    >>> RedisPublisher("redis://localhost:6379/0").broadcast("done", channel="jobs")

    Instances may be shared between threads (redis-py pools connections).

    @param url: the Redis URL the servers use.
    @param namespace: the servers' namespace.
    @param maxlen: about how many events the stream keeps; use the servers'.
    @param timeout: seconds for connecting and for every command.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str = "default",
        maxlen: int = 100_000,
        timeout: float = 2.0,
    ) -> None:
        resolved = resolve_redis_url(url)
        if resolved is None:
            raise ValueError(f"no Redis URL given and ${REDIS_URL_ENV} is not set")
        self.url = resolved
        self.key = stream_key(namespace)
        self.maxlen = maxlen
        self._conn = _connect(resolved, timeout)

    def broadcast(
        self,
        data: object,
        *,
        event: str | None = None,
        channel: str | None = None,
        retry: int | None = None,
    ) -> str:
        """
        Send an event to every client of C{channel} on every server.  May be
        called in any thread.

        Takes the arguments of L{broadcast<wsgi_sse.broadcast>} and
        validates them the same way.

        @return: the event's id.
        @raise TypeError: for values of the wrong type; nothing is sent.
        @raise ValueError: for values that would break the stream.
        @raise redis.exceptions.RedisError: if Redis cannot be reached in
            time (C{ConnectionError}, C{TimeoutError}); the event may or
            may not have been sent.
        """
        name, body = prepare_event(data, event=event, channel=channel, retry=retry)
        event_id = self._conn.xadd(
            self.key,
            {_FIELD_CHANNEL: name.encode("utf-8"), _FIELD_BODY: body},
            maxlen=self.maxlen,
            approximate=True,
        )
        return event_id.decode("ascii") if isinstance(event_id, bytes) else str(event_id)

    def broadcast_many(self, events: Sequence[tuple[object, dict[str, Any]]]) -> list[str]:
        """
        Send several events in one round trip, in order: a sequence of
        C{(data, {"event": ..., "channel": ..., "retry": ...})}.  Every
        event is validated before any is sent.  May be called in any thread.
        """
        prepared = []
        for data, options in events:
            prepared.append(
                prepare_event(
                    data,
                    event=options.get("event"),
                    channel=options.get("channel"),
                    retry=options.get("retry"),
                )
            )
        pipe = self._conn.pipeline(transaction=False)
        for name, body in prepared:
            pipe.xadd(
                self.key,
                {_FIELD_CHANNEL: name.encode("utf-8"), _FIELD_BODY: body},
                maxlen=self.maxlen,
                approximate=True,
            )
        return [i.decode("ascii") if isinstance(i, bytes) else str(i) for i in pipe.execute()]

    def close_channel(self, channel: str) -> str:
        """
        End every stream held on C{channel} on every server, after the
        events sent before (what L{close<wsgi_sse.close>} does in a
        server).  May be called in any thread.

        @return: the close's id.
        @raise TypeError: if C{channel} is not a str.
        @raise ValueError: if it is empty or contains control characters.
        @raise redis.exceptions.RedisError: if Redis cannot be reached in time.
        """
        name = validate_channel(channel)
        close_id = self._conn.xadd(
            self.key,
            {_FIELD_CHANNEL: name.encode("utf-8"), _FIELD_BODY: CLOSE_BODY},
            maxlen=self.maxlen,
            approximate=True,
        )
        return close_id.decode("ascii") if isinstance(close_id, bytes) else str(close_id)

    def close(self) -> None:
        """Close the connections.  May be called in any thread."""
        self._conn.close()

    def __enter__(self) -> RedisPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
