"""
What the shared backplanes (Redis, PostgreSQL) have in common: a publisher
thread fed by a queue, a reader thread, a replay thread, local-only
delivery while the server is unreachable, and their counters.

The blocking client libraries are only ever used from these threads, never
from the reactor thread or a WSGI thread.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from typing import Any, Callable, Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ._backplane import MAX_BODY, NOT_FOUND, BackplaneHub, Entry, Fetched, Published
from ._checks import safe_url

__all__ = ["AppendRefusedError", "ThreadedBackplane", "safe_url"]

_COUNTERS = (
    "published",
    "delivered",
    "errors",
    "refused",
    "reconnects",
    "local_only",
    "queue_full",
    "duplicates_suppressed",
    "foreign_origins",
    "replay_fetches",
    "replay_misses",
    "malformed",
    "restarts",
    "control_sent",
    "control_received",
    "control_dropped",
)

Batch = list[tuple[int, str, Sequence[bytes]]]


class AppendRefusedError(Exception):
    """
    The server answered an append and refused some of its runs (an error
    reply: out of memory, a key of another type, a stream at its maximal
    id): raised by C{_append} once the runs it took are appended.

    @ivar error: the server's error text.
    @ivar runs: the runs refused, in order.
    @ivar appended: the events of the other runs, which the server took.
    """

    def __init__(self, error: str, runs: Batch, appended: int) -> None:
        super().__init__(error)
        self.error = error
        self.runs = runs
        self.appended = appended


def split_runs(bodies: Sequence[bytes], count: int, size: int) -> list[Sequence[bytes]]:
    """
    C{bodies} in runs, in order, of at most C{count} bodies and C{size}
    bytes (a body larger than C{size} is a run of its own).
    """
    runs: list[Sequence[bytes]] = []
    start = total = 0
    for end, body in enumerate(bodies):
        if end > start and (end - start >= count or total + len(body) > size):
            runs.append(bodies[start:end])
            start, total = end, 0
        total += len(body)
    runs.append(bodies[start:])
    return runs


class ThreadedBackplane:
    """
    The machinery of a backplane shared through a server, in threads.

    A subclass provides L{parse_id}, C{_initial_id}, C{_append} (publisher
    thread: append a batch; raise L{AppendRefusedError} for runs the server
    refused, anything else on failure), C{_read_until_stopped} (reader
    thread), C{_fetch_many} (replay thread) and C{_close} (any thread:
    close every connection, waking the reader).

    L{attach}, L{start}, L{stop}, L{publish}, L{fetch_after}: call in the
    reactor thread.  L{stats}: may be called in any thread.
    """

    log = Logger()
    shared = True
    kind = "backplane"
    max_per_publish = 1000
    max_publish_bytes = 16 << 20
    """
    The most bytes of event bodies one run of events (one Redis entry) or
    one append (a batch of runs) carries: a larger run is split, a batch
    ends before the run that would take it past this (it always holds
    one).  Far below what the servers refuse (Redis's C{proto-max-bulk-len}
    and C{client-query-buffer-limit}, PostgreSQL's 1 GB per value), so
    events broadcast in a burst are never refused, nor shared only here,
    for their number.
    """
    max_control_body = 256 * 1024
    """The largest presence/revocation message this backplane carries."""

    def __init__(
        self,
        url: str,
        *,
        reactor: Any = None,
        queue_size: int = 10_000,
        timeout: float = 2.0,
        block: float = 1.0,
        max_replay: int = 10_000,
        max_replay_bytes: int = 64 << 20,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if queue_size < 1 or max_replay < 1 or max_replay_bytes < 1:
            raise ValueError("queue_size, max_replay and max_replay_bytes must be positive")
        if timeout <= 0 or block <= 0:
            raise ValueError("timeout and block must be positive")
        self.url = url
        self._reactor = reactor
        self.timeout = timeout
        self.block = block
        self.max_replay = max_replay
        self.max_replay_bytes = max_replay_bytes
        self.backoff = backoff
        self.connected = False
        self.running = False
        self._hub: BackplaneHub | None = None
        self._queue: queue.Queue[tuple[int, str, Sequence[bytes]] | None] = queue.Queue(queue_size)
        self._stopping = threading.Event()
        # Set once the reader's first attempt to connect has ended: until
        # then, events wait for it rather than going local-only.
        self._first_attempt = threading.Event()
        # Reactor thread: who waits for the reader's first attempt (ready()).
        self._ready = self._positioned = False
        self._ready_waiters: list[Deferred[bool]] = []
        self._ready_reported = False
        self._threads: list[threading.Thread] = []
        self._pool: ThreadPool | None = None
        for name in self._connections:
            setattr(self, name, None)
        self._down_logged = False
        # Set while the server refuses appends (logged once until one succeeds).
        self._refusing = False
        self._token = 0
        self._origin_prefix = b""
        # Reactor-thread state: who waits for which of our batches, and the
        # batches delivered locally after a failed append (which may still
        # have reached the server: then they must not be delivered twice).
        self._waiting: dict[int, Deferred[Published]] = {}
        self._fetching: dict[str, list[Deferred[Fetched]]] = {}
        # Fetches waiting for the replay thread, answered in batches.
        self._fetch_queue: list[tuple[str, int]] = []
        self._fetch_busy = False
        self._fallen_back: deque[int] = deque()
        self._fallen_back_set: set[int] = set()
        # The last token the publisher thread has reported on (appended,
        # refused or failed, its fall-backs done), and the last token read
        # back from the server with its id: a waiter for an earlier token
        # that was not read back is answered only once both are past it.
        self._reported = 0
        self._seen: tuple[int, str] = (0, "")
        self._lock = threading.Lock()
        self._counters = dict.fromkeys(_COUNTERS, 0)
        self._control_queue: queue.Queue[bytes | None] = queue.Queue(1000)

    # -- to provide ------------------------------------------------------------

    def parse_id(self, event_id: str) -> int | None:  # pragma: no cover - abstract
        """The position of a wire id of this backplane, or L{None}."""
        raise NotImplementedError

    def _initial_id(self) -> tuple[int, str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _append(self, batch: Batch) -> int:  # pragma: no cover - abstract
        """Append a batch (publisher thread); return the events appended."""
        raise NotImplementedError

    def _read_until_stopped(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fetch_many(self, requests: list[tuple[str, int]]) -> list[Fetched]:  # pragma: no cover
        """
        Answer fetches (replay thread): one lookup round trip for all their
        ids, then L{_answer_known}.
        """
        raise NotImplementedError

    def _answer_known(
        self, known: Sequence[bool], fetch: Callable[[int], Fetched]
    ) -> list[Fetched]:
        """
        The answers to a batch of fetches, in order (replay thread):
        C{fetch(n)} for the C{n}th when its id is C{known}, L{NOT_FOUND} (a
        replay miss) when it is not.  The answers may be for the first
        fetches only (at least one): once their bodies hold
        C{max_replay_bytes} together, the others are asked again in the next
        batch, so that clients with many different last ids reconnecting at
        once hold one replay's budget (and one replay more) in memory, not
        one budget each.
        """
        out: list[Fetched] = []
        gathered = 0
        for n, is_known in enumerate(known):
            if not is_known:
                self._count("replay_misses")
                out.append(NOT_FOUND)
                continue
            answer = fetch(n)
            out.append(answer)
            gathered += sum(len(entry.body) for entry in answer.entries)
            if gathered >= self.max_replay_bytes:
                break  # the rest in the next batch
        return out

    _reader_conn: Any
    _publisher_conn: Any
    _replay_conn: Any
    _control_conn: Any
    _control_reader_conn: Any
    _connections: tuple[str, ...] = (
        "_reader_conn",
        "_publisher_conn",
        "_replay_conn",
        "_control_conn",
        "_control_reader_conn",
    )
    """
    The attributes holding a subclass's connections (L{None} until
    connected; closed by L{_close}).
    """

    def _close_connection(self, conn: Any) -> None:
        """Close one connection, whatever state it is in.  Any thread."""
        with contextlib.suppress(Exception):
            conn.close()

    def _close(self) -> None:
        """Close every connection, waking the threads blocked on them.  Any thread."""
        for name in self._connections:
            self._drop_connection(name)

    def _drop_connection(self, name: str) -> None:
        """
        Close the connection held in attribute C{name} (one of
        L{_connections}) and forget it, so that its next use reconnects.
        Any thread.
        """
        conn = getattr(self, name)
        setattr(self, name, None)
        if conn is not None:
            self._close_connection(conn)

    def _send_control(self, body: bytes) -> None:  # pragma: no cover - optional
        """Send one control message (control thread); raise on failure."""

    def _read_control_until_stopped(self) -> None:  # pragma: no cover - optional
        """Hand every control message read to L{_control_received} (its own thread)."""

    # -- common ----------------------------------------------------------------

    @property
    def reactor(self) -> Any:
        """The reactor events are delivered in."""
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    @property
    def hub(self) -> BackplaneHub:
        """The hub this backplane delivers to."""
        assert self._hub is not None, "not attached to a hub"
        return self._hub

    def attach(self, hub: BackplaneHub) -> None:
        """Deliver to C{hub}.  Call in the reactor thread."""
        self._hub = hub
        self._origin_prefix = hub.instance_id.encode("ascii") + b":"
        hub.start_at(*self._initial_id())

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def stats(self) -> dict[str, Any]:
        """
        Counters since start: C{published} (events appended by this
        process), C{delivered} (read back and delivered here), C{errors},
        C{refused} (events the server answered with an error, or larger
        than L{MAX_BODY<wsgi_sse._backplane.MAX_BODY>}: delivered here
        only), C{reconnects}, C{local_only} (delivered to this process
        only, because the server was unreachable or refused them, or the
        queue was full),
        C{queue_full}, C{duplicates_suppressed}, C{foreign_origins}
        (entries naming this process as their origin with a batch it never
        published: delivered, but answering no publish), C{replays_fetched},
        C{replay_resets}, C{replay_fetches} (clients sharing a last id
        share one), C{replay_misses} (ids the server does not hold,
        answered by one lookup), C{malformed} (events not written by
        wsgi-sse, dropped), C{restarts} (the shared history moved
        backwards); and C{connected}, C{queued}.  May be called in any thread.
        """
        with self._lock:
            out: dict[str, Any] = dict(self._counters)
        if self._hub is not None:
            out["replays_fetched"] = self._hub.stats.replays_fetched
            out["replay_resets"] = self._hub.stats.replay_resets
        out["connected"] = self.connected
        out["queued"] = self._queue.qsize()
        return out

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the reader, the publisher and the replay threads."""
        self.running = True
        self._stopping.clear()
        self._first_attempt.clear()
        self._ready = self._ready_reported = False
        self._pool = ThreadPool(0, 1, f"wsgi-sse-{self.kind}-replay")
        self._pool.start()
        self._threads = [
            threading.Thread(
                target=self._read_loop, name=f"wsgi-sse-{self.kind}-reader", daemon=True
            ),
            threading.Thread(
                target=self._publish_loop, name=f"wsgi-sse-{self.kind}-publisher", daemon=True
            ),
            threading.Thread(
                target=self._control_send_loop, name=f"wsgi-sse-{self.kind}-control", daemon=True
            ),
            threading.Thread(
                target=self._read_control_until_stopped,
                name=f"wsgi-sse-{self.kind}-control-reader",
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> Deferred[None]:
        """Publish what is queued (within C{timeout}), then stop the threads."""
        self.running = False
        self._stopping.set()
        self._first_attempt.set()
        self._reader_ready(False)
        threads, self._threads = self._threads, []
        pool, self._pool = self._pool, None
        done: Deferred[None] = Deferred()
        reactor = self.reactor

        def stop() -> None:
            try:
                self._queue.put(None, timeout=self.timeout)
            except queue.Full:
                pass
            if threads:
                threads[1].join(self.timeout * 2 + 1)
            # The last control message (this process's goodbye) goes out too.
            with contextlib.suppress(queue.Full):
                self._control_queue.put(None, timeout=self.timeout)
            if len(threads) > 2:
                threads[2].join(self.timeout + 1)
            self._close()
            for thread in threads:
                thread.join(self.timeout + self.block + 1)
            if pool is not None:
                pool.stop()
            self._close()
            reactor.callFromThread(done.callback, None)

        threading.Thread(target=stop, name=f"wsgi-sse-{self.kind}-stop", daemon=True).start()
        return done

    @property
    def first_attempt_wait(self) -> float:
        """
        How long, at most, events, control messages and new connections
        wait for the reader's first attempt (twice C{timeout}).
        """
        return self.timeout * 2

    def ready(self) -> Deferred[bool]:
        """
        Wait for the reader's first attempt: fires with C{True} once it has
        taken its starting position in the shared history (every event
        appended from then on reaches this process), with C{False} if the
        attempt failed (the server is unreachable: this process delivers
        its own events only until it connects) or the backplane stopped.
        Call in the reactor thread, before or after L{start}.
        """
        if self._ready:
            return succeed(self._positioned)
        waiting: Deferred[bool] = Deferred()
        self._ready_waiters.append(waiting)
        return waiting

    def _first_attempt_made(self) -> None:
        """
        Reader thread: its first attempt has ended (it reads the shared
        history from its position, or it failed).  Publishing may go on,
        and L{ready} fires after the position, already on its way to the
        reactor thread, has reached the hub.
        """
        self._first_attempt.set()
        if not self._ready_reported:
            self._ready_reported = True
            self.reactor.callFromThread(self._reader_ready, self.connected)

    def _reader_ready(self, positioned: bool) -> None:
        if self._ready:
            return
        self._ready = True
        self._positioned = positioned
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiting in waiters:
            waiting.callback(positioned)

    # -- publishing (reactor thread) ----------------------------------------

    def publish(self, channel: str, bodies: Sequence[bytes]) -> Published | Deferred[Published]:
        """
        Send a run of encoded events of one channel to every process: queue
        them for the server, or deliver them locally only if the server
        is unreachable or the queue is full.  Call in the reactor thread.

        @return: the last event's id and how many of this process's clients
            it reached (a Deferred of it when it goes through the server).
        """
        if len(bodies) > 1 and (
            len(bodies) > self.max_per_publish or sum(map(len, bodies)) > self.max_publish_bytes
        ):
            result: Published | Deferred[Published] = Published("", 0)
            for run in split_runs(bodies, self.max_per_publish, self.max_publish_bytes):
                result = self.publish(channel, run)
            return result
        if not self.running or (not self.connected and self._first_attempt.is_set()):
            return self._local_only(channel, bodies)
        self._token += 1
        token = self._token
        try:
            self._queue.put_nowait((token, channel, bodies))
        except queue.Full:
            self._count("queue_full")
            return self._local_only(channel, bodies)
        waiting: Deferred[Published] = Deferred()
        self._waiting[token] = waiting
        return waiting

    def _local_only(self, channel: str, bodies: Sequence[bytes]) -> Published:
        self._count("local_only", len(bodies))
        return self.hub.deliver_local(channel, bodies)

    def _fall_back(self, batch: list[tuple[int, str, Sequence[bytes]]]) -> None:
        """Deliver locally the events that could not be appended to the server."""
        for token, channel, bodies in batch:
            waiting = self._waiting.pop(token, None)
            if waiting is None:
                # Already read back: the append failed (a timeout) after the
                # server had taken it, and the reader was quicker than the
                # publisher.  Delivered once, with the server's id.
                self._count("duplicates_suppressed", len(bodies))
                continue
            self._fallen_back.append(token)
            self._fallen_back_set.add(token)
            waiting.callback(self._local_only(channel, bodies))
        while len(self._fallen_back) > 100_000:
            self._fallen_back_set.discard(self._fallen_back.popleft())

    def _publish_loop(self) -> None:
        try:
            self._publish_until_stopped()
        finally:
            self._drop_connection("_publisher_conn")

    def _publish_until_stopped(self) -> None:
        get = self._queue.get
        carried: tuple[int, str, Sequence[bytes]] | None = None
        while True:
            item = get() if carried is None else carried
            carried = None
            if item is None:
                return
            batch = [item]
            size = sum(map(len, item[2]))
            stop = False
            while len(batch) < 500:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                size += sum(map(len, more[2]))
                if size > self.max_publish_bytes:
                    # It starts the next batch, in its place in the queue.
                    carried = more
                    break
                batch.append(more)
            if not self._first_attempt.is_set():
                self._first_attempt.wait(self.first_attempt_wait)
            if not self.connected:
                self.reactor.callFromThread(self._fall_back, batch)
            else:
                # An event larger than every process accepts back from the
                # server (MAX_BODY) would be dropped by all, this one too.
                appending: Batch = []
                too_large: Batch = []
                for run in batch:
                    large = any(len(body) > MAX_BODY for body in run[2])
                    (too_large if large else appending).append(run)
                if (not appending or self._append_or_fall_back(appending)) and too_large:
                    self._refuse_too_large(too_large)
            # After the batch's fall-backs, in the same order.
            self.reactor.callFromThread(self._batch_reported, batch[-1][0])
            if stop:
                return

    def _append_or_fall_back(self, batch: Batch) -> bool:
        """
        Append a batch; deliver here what the server refused, or the whole
        batch if it failed (then return C{False}).  Publisher thread.
        """
        try:
            appended = self._append(batch)
        except AppendRefusedError as refusal:
            # The server is there and said no: what it took stays (read
            # back like any entry), the rest is delivered here only, never
            # retried.
            self._count("published", refusal.appended)
            self._refused(refusal)
        except Exception as e:  # noqa: BLE001 - any trouble: deliver locally
            self._count("errors")
            self._went_down("publish", e)
            self._drop_connection("_publisher_conn")
            self.reactor.callFromThread(self._fall_back, batch)
            return False
        else:
            self._count("published", appended)
            if self._refusing:
                self._refusing = False
                self.reactor.callFromThread(
                    self.log.info,
                    "{kind} accepts events again",
                    kind=self.kind,
                )
        return True

    def _refuse_too_large(self, runs: Batch) -> None:
        """Deliver here only the runs holding an event too large to share.  Publisher thread."""
        events = sum(len(bodies) for _, _, bodies in runs)
        self._count("refused", events)
        self.reactor.callFromThread(
            self.log.warn,
            "{events} event(s) larger than {limit} bytes encoded (the most a shared "
            "backplane carries) delivered locally only, on channel {channel!r}",
            events=events,
            limit=MAX_BODY,
            channel=runs[0][1],
        )
        self.reactor.callFromThread(self._fall_back, runs)

    def _refused(self, refusal: AppendRefusedError) -> None:
        """Deliver the runs the server refused locally; log the first refusal in a row."""
        events = sum(len(bodies) for _, _, bodies in refusal.runs)
        self._count("errors")
        self._count("refused", events)
        if not self._refusing:
            self._refusing = True
            self.reactor.callFromThread(
                self.log.warn,
                "{kind} refused {events} event(s): {error}; delivering them locally only "
                "(logged once until it accepts events again)",
                kind=self.kind,
                events=events,
                error=refusal.error,
            )
        self.reactor.callFromThread(self._fall_back, refusal.runs)

    # -- presence and revocation messages ------------------------------------

    def send_control(self, body: bytes) -> None:
        """
        Queue a control message for the other processes; dropped (and
        counted) when the queue is full or the server unreachable.  Call in
        the reactor thread.
        """
        if not self.running or len(body) > self.max_control_body:
            self._count("control_dropped")
            return
        try:
            self._control_queue.put_nowait(body)
        except queue.Full:
            self._count("control_dropped")

    def _control_send_loop(self) -> None:
        while True:
            body = self._control_queue.get()
            if body is None:
                return
            if not self._first_attempt.is_set():
                self._first_attempt.wait(self.first_attempt_wait)
            if not self.connected:
                self._count("control_dropped")
                continue
            try:
                self._send_control(body)
                self._count("control_sent")
            except Exception:  # noqa: BLE001 - best effort: the next report repairs it
                self._count("control_dropped")

    def _reconnected(self) -> None:
        """
        The server is reachable again (reader thread): what this process
        sent while it was not (presence, revocations) is sent again, and
        the others asked for theirs, as when the control reader subscribes
        again; whichever of the two comes last finds both ways open.
        """
        self.reactor.callFromThread(self.hub.control_listening)

    def _control_listening(self) -> None:
        """
        The control reader is subscribed (again): what the others sent
        before was missed, so the hub asks them to report again.  Control
        reader thread.
        """
        self.reactor.callFromThread(self.hub.control_listening)

    def _control_received(self, body: bytes) -> None:
        """A control message read from the server (any size, any bytes).  Control reader."""
        if not isinstance(body, bytes) or len(body) > self.max_control_body:
            self._count("malformed")
            return
        self._count("control_received")
        self.reactor.callFromThread(self.hub.deliver_control, body)

    # -- reading (reader thread) ---------------------------------------------

    def _went_down(self, where: str, error: BaseException) -> None:
        self.connected = False
        if not self._down_logged:
            self._down_logged = True
            if not self._stopping.is_set():
                self.reactor.callFromThread(
                    self.log.warn,
                    "{kind} unreachable ({where}: {error}); delivering locally only",
                    kind=self.kind,
                    where=where,
                    error=str(error) or type(error).__name__,
                )

    def _read_loop(self) -> None:
        try:
            self._read_until_stopped()
        finally:
            with contextlib.suppress(Exception):
                self._close()

    def _restart(self, position: int, event_id: str) -> None:
        self.log.warn(
            "the {kind} history moved backwards (deleted or recreated): reading it from {start}",
            kind=self.kind,
            start=event_id,
        )
        self.hub.restart_at(position, event_id)

    def _deliver_batch(self, batch: list[tuple[list[Entry], int]]) -> None:
        """Hand checked entries to the hub.  Reactor thread."""
        events: list[Entry] = []
        tokens: list[tuple[int, int]] = []
        issued = self._token
        for entries, token in batch:
            if token > issued:
                # A batch this process never published (a forged origin, or
                # one left by an earlier process with the same instance id):
                # its events are delivered, but it answers no publish here.
                self._count("foreign_origins")
                token = 0
            if token:
                if token in self._fallen_back_set:
                    # Appended after all, although the append reported an error:
                    # it was already delivered here as local-only.  (Kept in
                    # the set until a later token is seen: a batch may come
                    # back in several pieces.)
                    self._count("duplicates_suppressed", len(entries))
                    continue
                tokens.append((token, len(events) + len(entries) - 1 if entries else -1))
            events.extend(entries)
        counts = self.hub.deliver_batch(events) if events else []
        for token, last in tokens:
            if last >= 0:
                self._resolve(token, Published(events[last].id, counts[last]))
            else:
                self._resolve(token, Published("", 0))

    def _resolve(self, token: int, published: Published) -> None:
        found = self._waiting.pop(token, None)
        if found is not None:
            found.callback(published)
        if token > self._seen[0]:
            self._seen = (token, published.id)
        self._answer_lost()
        fallen = self._fallen_back
        while fallen and fallen[0] < token:
            self._fallen_back_set.discard(fallen.popleft())

    def _batch_reported(self, token: int) -> None:
        """
        The publisher thread is done with the batch up to C{token}: appended,
        or refused or failed and delivered here.  Reactor thread.
        """
        if token > self._reported:
            self._reported = token
            self._answer_lost()

    def _answer_lost(self) -> None:
        """
        Answer the waiters of our batches that were appended but will not be
        read back (lost with a server restart): those before the last token
        read back, once the publisher has reported on them.  A batch the
        server refused is reported after its local delivery has answered
        its waiter, so a later batch read back first cannot answer it.
        """
        waiting = self._waiting
        seen, last_id = self._seen
        reported = self._reported
        # The dict is in token order.
        while waiting:
            first = next(iter(waiting))
            if first >= seen or first > reported:
                break
            waiting.pop(first).callback(Published(last_id, 0))

    # -- replay (replay thread) --------------------------------------------------

    def fetch_after(self, position: int, event_id: str) -> Deferred[Fetched]:
        """
        Read from the server the events after C{event_id} (a wire id of any
        process), in a thread.  Call in the reactor thread; the result
        arrives in it.
        """
        if self.parse_id(event_id) is None or self._pool is None:
            # Answered in a later turn, like every fetch: the caller has
            # finished writing what comes before the replay by then.
            return deferLater(self.reactor, 0, lambda: NOT_FOUND)
        # Clients reconnecting together (after a restart) mostly share their
        # last id: one lookup answers them all.  Different ids queue up while
        # a batch runs and are looked up together in the next one, so many
        # made-up ids cost one round trip, not one each before a real client.
        waiters = self._fetching.get(event_id)
        if waiters is None:
            waiters = self._fetching[event_id] = []
            self._count("replay_fetches")
            self._fetch_queue.append((event_id, position))
            if not self._fetch_busy:
                self._run_fetches()
        answer: Deferred[Fetched] = Deferred()
        waiters.append(answer)
        return answer

    def _run_fetches(self) -> None:
        pool = self._pool
        if pool is None or not self._fetch_queue:
            for event_id, _ in self._fetch_queue:
                self._share_fetched(NOT_FOUND, event_id)
            self._fetch_queue = []
            return
        batch, self._fetch_queue = self._fetch_queue[:1000], self._fetch_queue[1000:]
        self._fetch_busy = True
        fetching = deferToThreadPool(self.reactor, pool, self._fetch_many, batch)
        fetching.addBoth(self._fetched_many, batch)

    def _fetched_many(self, result: list[Fetched] | Failure, batch: list[tuple[str, int]]) -> None:
        self._fetch_busy = False
        if not isinstance(result, Failure) and len(result) < len(batch):
            # The batch's answers filled its budget: the rest go first next.
            self._fetch_queue = batch[len(result) :] + self._fetch_queue
            batch = batch[: len(result)]
        for n, (event_id, _) in enumerate(batch):
            self._share_fetched(result if isinstance(result, Failure) else result[n], event_id)
        if self._fetch_queue:
            self._run_fetches()

    def _share_fetched(self, result: Fetched | Failure, event_id: str) -> None:
        for answer in self._fetching.pop(event_id, []):
            if isinstance(result, Failure):
                answer.errback(result)
            else:
                answer.callback(result)
