"""The Redis backplane in-process: real redis-server, real servers on loopback ports."""

from __future__ import annotations

import re
import subprocess
import threading
from typing import Any

import pytest
from redis_support import RedisServer
from support import PYTHON, StreamClient, serve, subprocess_env, wait_until
from twisted.internet.task import Clock

from wsgi_sse import Hub, SSEServerService
from wsgi_sse._backplane import Entry, Fetched
from wsgi_sse.redis import RedisBackplane, RedisPublisher

REDIS_ID = re.compile(r"\d+-\d+(?:_\d+)?\Z")


def _pos(redis_id: str) -> int:
    """The backplane position of a Redis wire id."""
    position = RedisBackplane("redis://unused").parse_id(redis_id)
    assert position is not None
    return position


def redis_hub(instance_id: str, backplane: Any = None, **kwargs: Any) -> Hub:
    """A hub composed with a (not started) Redis backplane, on a Clock."""
    kwargs.setdefault("clock", Clock())
    return Hub(
        backplane=backplane if backplane is not None else RedisBackplane("redis://unused"),
        instance_id=instance_id,
        **kwargs,
    )


def start_at(hub: Hub, redis_id: str) -> None:
    """What the reader does when it starts: the stream's head."""
    hub.start_at(_pos(redis_id), redis_id)


def deliver(hub: Hub, redis_id: str, channel: str, body: bytes) -> int:
    """What the reader does with one entry read from the stream."""
    return hub.deliver_batch([Entry(_pos(redis_id), redis_id, channel, body)])[0]


def plain_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app with nothing to say."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def stats(server: Any) -> dict[str, Any]:
    """The backplane counters of an in-process server."""
    return dict(server.service.backplane.stats())


def connected(server: Any) -> bool:
    """Whether an in-process server's backplane is connected to Redis."""
    return bool(stats(server)["connected"])


def test_both_servers_get_the_same_events_with_redis_ids(redis_server: RedisServer) -> None:
    """A broadcast on one server reaches clients of both, once, with one shared Redis id."""
    with (
        serve(plain_app, redis_url=redis_server.url) as a,
        serve(plain_app, redis_url=redis_server.url) as b,
    ):
        wait_until(lambda: connected(a) and connected(b), what="connected")
        with a.stream() as ca, b.stream() as cb:
            a.wait_clients(1)
            b.wait_clients(1)
            for i in range(3):
                a.service.broadcaster.broadcast(f"a{i}")
                b.service.broadcaster.broadcast(f"b{i}")
            got_a = ca.wait_events(6)
            got_b = cb.wait_events(6)
            assert [(e.data, e.last_event_id) for e in got_a] == [
                (e.data, e.last_event_id) for e in got_b
            ]
            assert all(REDIS_ID.match(e.last_event_id) for e in got_a)
            assert [e.data for e in got_a if e.data[0] == "a"] == ["a0", "a1", "a2"]
            assert len({e.last_event_id for e in got_a}) == 6
        # Counted by the publisher thread once XADD has returned.
        wait_until(lambda: stats(a)["published"] == stats(b)["published"] == 3, what="counts")
        assert stats(a)["delivered"] == stats(b)["delivered"] == 6


def test_late_process_replays_from_redis_multi_channel(redis_server: RedisServer) -> None:
    """A process started after the events replays a client's missed ones from Redis, in order."""
    with serve(plain_app, redis_url=redis_server.url) as a:
        wait_until(lambda: connected(a), what="connected")
        with a.stream("/sse?channel=x&channel=y&channel=z") as ca:
            a.wait_clients(1)
            for i, channel in enumerate("xyzxyxy"):
                a.service.broadcaster.broadcast(f"{channel}{i}", channel=channel)
            seen = ca.wait_events(7)
        first = seen[0].last_event_id
        with serve(plain_app, redis_url=redis_server.url) as c:
            wait_until(lambda: connected(c), what="connected")
            # c's own history starts after the events: only Redis has them.
            assert c.call(lambda: c.service.hub.parse_id(first)) is None
            with c.stream("/sse?channel=x&channel=y", headers={"Last-Event-ID": first}) as cc:
                missed = ["y1", "x3", "y4", "x5", "y6"]
                replayed = cc.wait_events(5)
                assert [e.data for e in replayed] == missed
                assert [e.last_event_id for e in replayed] == [
                    e.last_event_id for e in seen if e.data in missed
                ]
                c.wait_clients(1)
                a.service.broadcaster.broadcast("x-live", channel="x")
                a.service.broadcaster.broadcast("z-live", channel="z")
                a.service.broadcaster.broadcast("y-live", channel="y")
                events = cc.wait_events(7)
                assert [e.data for e in events[5:]] == ["x-live", "y-live"]
                ids = [e.last_event_id for e in events]
                assert len(set(ids)) == len(ids)
            assert stats(c)["replays_from_redis"] == 1


def test_start_id_of_a_process_older_than_the_stream_replays_in_every_process(
    redis_server: RedisServer,
) -> None:
    """The id a process started before the stream existed hands out replays on any process."""
    with serve(plain_app, redis_url=redis_server.url) as a:
        wait_until(lambda: connected(a), what="connected")
        start = a.call(lambda: a.service.hub.last_id)  # what an init event would carry
        with serve(plain_app, redis_url=redis_server.url) as b:
            wait_until(lambda: connected(b), what="connected")
            with b.stream(headers={"Last-Event-ID": start}) as early:
                b.wait_clients(1)
                a.service.broadcaster.broadcast("e1")
                assert [e.data for e in early.wait_events(1)] == ["e1"]  # no reset first
            a.service.broadcaster.broadcast("e2")
            with b.stream(headers={"Last-Event-ID": start}) as cb:
                assert [e.data for e in cb.wait_events(2)] == ["e1", "e2"]
            with serve(plain_app, redis_url=redis_server.url) as c:
                # Started after the stream was created: only Redis has the events.
                wait_until(lambda: connected(c), what="connected")
                with c.stream(headers={"Last-Event-ID": start}) as cc:
                    assert [e.data for e in cc.wait_events(2)] == ["e1", "e2"]
                assert stats(c)["replays_from_redis"] == 1
        # Once the stream lost part of its history, the id no longer proves anything.
        redis_server.client().xtrim("wsgi-sse:default:events", maxlen=1, approximate=False)
        with serve(plain_app, redis_url=redis_server.url) as d:
            wait_until(lambda: connected(d), what="connected")
            with d.stream(headers={"Last-Event-ID": start}) as cd:
                assert [e.type for e in cd.wait_events(1)] == ["reset"]


def test_lost_id_gets_reset_then_live(redis_server: RedisServer) -> None:
    """An id Redis no longer holds (trimmed, or future) gets one reset, then live events."""
    publisher = RedisPublisher(redis_server.url)
    first = publisher.broadcast("old0")
    for i in range(1, 4):
        publisher.broadcast(f"old{i}")
    publisher.close()
    redis_server.client().xtrim("wsgi-sse:default:events", maxlen=2, approximate=False)
    # Started after the events: its own history cannot answer, Redis must.
    with serve(plain_app, redis_url=redis_server.url) as a:
        wait_until(lambda: connected(a), what="connected")
        for lost in (first, "99999999999999-0"):
            with a.stream(headers={"Last-Event-ID": lost}) as client:
                (reset,) = client.wait_events(1)
                assert reset.type == "reset" and reset.last_event_id == ""
                a.wait_clients(1)
                a.service.broadcaster.broadcast("new")
                events = client.wait_events(2)
                assert [e.data for e in events[1:]] == ["new"]
            a.wait_clients(0)
        assert stats(a)["replay_resets"] == 2


def test_too_many_missed_events_reset(redis_server: RedisServer) -> None:
    """A client that missed more than max_replay events is reset instead of flooded."""
    with RedisPublisher(redis_server.url) as publisher:
        first = publisher.broadcast("first")
        for i in range(5):
            publisher.broadcast(f"e{i}")
    with serve(plain_app, redis_url=redis_server.url) as a:
        wait_until(lambda: connected(a), what="connected")
        a.service.backplane.max_replay = 3
        with a.stream(headers={"Last-Event-ID": first}) as client:
            (reset,) = client.wait_events(1)
            assert reset.type == "reset"
        a.service.backplane.max_replay = 5
        with a.stream(headers={"Last-Event-ID": first}) as client:
            assert [e.data for e in client.wait_events(5)] == [f"e{i}" for i in range(5)]


def test_outage_delivers_locally_and_recovers(redis_server: RedisServer) -> None:
    """With Redis down, broadcasts reach local clients with local ids; after restart, Redis ids."""
    with serve(plain_app, redis_url=redis_server.url) as a:
        wait_until(lambda: connected(a), what="connected")
        with a.stream() as client:
            a.wait_clients(1)
            a.service.broadcaster.broadcast("before")
            (before,) = client.wait_events(1)
            redis_server.kill()
            wait_until(lambda: not connected(a), what="outage noticed")
            a.service.broadcaster.broadcast("during-1")
            a.service.broadcaster.broadcast("during-2")
            events = client.wait_events(3)
            local_id = events[1].last_event_id
            assert local_id.startswith(before.last_event_id + ".")
            assert [e.data for e in events] == ["before", "during-1", "during-2"]
            s = stats(a)
            assert s["local_only"] == 2 and s["errors"] >= 1 and not s["connected"]

            # The local id replays on this process.
            with a.stream(headers={"Last-Event-ID": local_id}) as again:
                assert [e.data for e in again.wait_events(1)] == ["during-2"]

            redis_server.start()
            wait_until(lambda: connected(a), what="reconnected")
            assert stats(a)["reconnects"] == 1
            a.service.broadcaster.broadcast("after")
            events = client.wait_events(4)
            assert events[3].data == "after" and REDIS_ID.match(events[3].last_event_id)
            assert redis_server.client().xlen("wsgi-sse:default:events") == 1


def test_broadcast_and_wait_counts_local_clients(redis_server: RedisServer) -> None:
    """broadcast_and_wait() through Redis returns how many local clients got the event."""
    with serve(plain_app, redis_url=redis_server.url) as a:
        wait_until(lambda: connected(a), what="connected")
        with a.stream() as c1, a.stream() as c2:
            a.wait_clients(2)
            result: list[int] = []
            thread = threading.Thread(
                target=lambda: result.append(a.service.broadcaster.broadcast_and_wait("hi"))
            )
            thread.start()
            thread.join(10)
            assert result == [2]
            assert c1.wait_events(1)[0].data == "hi" and c2.wait_events(1)[0].data == "hi"


def test_sync_publisher_validates_before_sending(redis_server: RedisServer) -> None:
    """RedisPublisher rejects what broadcast() rejects, sending nothing, and returns ids."""
    publisher = RedisPublisher(redis_server.url)
    try:
        with pytest.raises(ValueError):
            publisher.broadcast("x", event="a\nb")
        with pytest.raises(ValueError):
            publisher.broadcast("x", channel="")
        with pytest.raises(TypeError):
            publisher.broadcast(object())
        with pytest.raises(ValueError):
            publisher.broadcast_many([("ok", {}), ("bad", {"retry": -1})])
        # What every server would drop: a channel or an event too large.
        with pytest.raises(ValueError):
            publisher.broadcast("x", channel="c" * 1001)
        with pytest.raises(ValueError):
            publisher.broadcast("x" * (1 << 20))
        with pytest.raises(ValueError):
            publisher.broadcast_many([("ok", {}), ("x" * (1 << 20), {})])
        assert redis_server.client().xlen("wsgi-sse:default:events") == 0
        first = publisher.broadcast({"n": 1}, event="count", channel="c")
        ids = publisher.broadcast_many([("a", {}), ("b", {"channel": "c"})])
        assert REDIS_ID.match(first) and len(ids) == 2 and ids[0] > first
        (entry,) = redis_server.client().xrange("wsgi-sse:default:events", first, first)
        assert entry[1][b"b"] == b'event: count\ndata: {"n":1}\n'
        assert entry[1][b"c"] == b"c"
    finally:
        publisher.close()


def test_publisher_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """RedisPublisher() without a URL or either variable is a clear error naming both."""
    monkeypatch.delenv("WSGI_SSE_REDIS_URL", raising=False)
    monkeypatch.delenv("WSGI_SSE_BACKPLANE_URL", raising=False)
    with pytest.raises(ValueError, match=r"WSGI_SSE_BACKPLANE_URL and \$WSGI_SSE_REDIS_URL"):
        RedisPublisher()
    # An empty $WSGI_SSE_BACKPLANE_URL turns the server's backplane off, whatever
    # $WSGI_SSE_REDIS_URL says: the publisher reads them the same way.
    monkeypatch.setenv("WSGI_SSE_BACKPLANE_URL", "")
    monkeypatch.setenv("WSGI_SSE_REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(ValueError, match="unset or empty"):
        RedisPublisher()


def test_publisher_refuses_another_backplane(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PostgreSQL URL (given or in the environment) points to wsgi_sse.postgres.publish."""
    monkeypatch.setenv("WSGI_SSE_BACKPLANE_URL", "postgresql://u:secret@127.0.0.1:1/db")
    with pytest.raises(ValueError, match=r"\$WSGI_SSE_BACKPLANE_URL.*postgres\.publish") as e:
        RedisPublisher()
    assert "secret" not in str(e.value)
    with pytest.raises(ValueError, match="the URL given"):
        RedisPublisher("postgres://127.0.0.1/db")


def test_publisher_reads_the_servers_variable(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    A program given only $WSGI_SSE_BACKPLANE_URL (as README and the systemd
    unit set it) publishes to the server that reads it; it wins over
    $WSGI_SSE_REDIS_URL, as it does for the server.
    """
    monkeypatch.setenv("WSGI_SSE_BACKPLANE_URL", redis_server.url)
    monkeypatch.setenv("WSGI_SSE_REDIS_URL", "redis://127.0.0.1:1/0")
    with serve(plain_app) as server:
        assert server.service.backplane.url == redis_server.url
        wait_until(lambda: connected(server), what="backplane connected")
        with server.stream("/sse?channel=jobs") as client:
            server.wait_clients(1)
            code = (
                "from wsgi_sse.redis import RedisPublisher\n"
                "with RedisPublisher() as p:\n"
                "    print(p.broadcast('from a worker', channel='jobs'))\n"
            )
            env = subprocess_env(WSGI_SSE_BACKPLANE_URL=redis_server.url)
            env.pop("WSGI_SSE_REDIS_URL", None)
            done = subprocess.run(
                [PYTHON, "-c", code], env=env, capture_output=True, text=True, timeout=30
            )
            assert done.returncode == 0, done.stderr
            (event,) = client.wait_events(1)
            assert event.data == "from a worker"
            assert event.last_event_id == done.stdout.strip()


def test_env_var_turns_redis_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """WSGI_SSE_REDIS_URL gives a server a backplane; an empty redis_url turns it off."""
    monkeypatch.delenv("WSGI_SSE_BACKPLANE_URL", raising=False)
    monkeypatch.setenv("WSGI_SSE_REDIS_URL", "redis://127.0.0.1:1/0")
    service = SSEServerService(plain_app, listen="tcp:0", reactor=Clock())
    assert isinstance(service.backplane, RedisBackplane)
    assert service.broadcaster.publisher is service.hub
    assert service.hub.backplane is service.backplane
    assert service.backplane.url == "redis://127.0.0.1:1/0"
    off = SSEServerService(plain_app, listen="tcp:0", reactor=Clock(), redis_url="")
    assert off.backplane is None and not off.hub.backplane.shared


def test_import_does_not_need_redis() -> None:
    """import wsgi_sse (and building a server without Redis) does not import redis-py."""
    code = (
        "import sys, wsgi_sse\n"
        "from wsgi_sse import SSEServerService\n"
        "SSEServerService(lambda e, s: [], listen='tcp:0')\n"
        "assert 'redis' not in sys.modules, 'redis imported'\n"
    )
    env = subprocess_env()
    env.pop("WSGI_SSE_REDIS_URL", None)
    subprocess.run([PYTHON, "-c", code], env=env, check=True, timeout=30)


def test_local_only_ids_replay_semantics() -> None:
    """Local-only ids replay on their process; elsewhere from the Redis id before them."""
    hub = redis_hub("me")
    start_at(hub, "100-0")
    deliver(hub, "100-1", "c", b"data: r1\n")
    hub.deliver_local("c", [b"data: l1\n"])
    hub.deliver_local("c", [b"data: l2\n"])
    deliver(hub, "105-0", "c", b"data: r2\n")
    assert hub.last_id == "105-0"
    assert [e.id for e in hub.replay(["c"], "100-1.me.1") or []] == ["100-1.me.2", "105-0"]
    # Another process's local-only id after 100-1: everything after 100-1.
    assert [e.id for e in hub.replay(["c"], "100-1.other.7") or []] == [
        "100-1.me.1",
        "100-1.me.2",
        "105-0",
    ]
    # Older than this hub's start, or never seen: not answerable locally.
    assert hub.parse_id("99-0") is None
    assert hub.parse_id("106-0") is None
    assert hub.parse_id("garbage") is None
    assert hub.replay(["c"], "garbage") is None
    # A replayed duplicate from the stream is ignored.
    assert deliver(hub, "105-0", "c", b"data: r2\n") == 0


def test_stream_client_helper_reads_redis_ids(redis_server: RedisServer) -> None:
    """A lastEventId query parameter with a Redis id replays like the header does."""
    with serve(plain_app, redis_url=redis_server.url) as a:
        wait_until(lambda: connected(a), what="connected")
        with a.stream() as client:
            a.wait_clients(1)
            for i in range(3):
                a.service.broadcaster.broadcast(f"q{i}")
            first = client.wait_events(3)[0].last_event_id
        with StreamClient(a.port, f"/sse?lastEventId={first}") as again:
            assert [e.data for e in again.wait_events(2)] == ["q1", "q2"]


class Recorder:
    """A hub subscriber that keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, wire: bytes) -> None:
        self.sent.append(wire)

    def ids(self) -> list[str]:
        return [w.split(b"\n", 1)[0].decode() for w in self.sent]


class StubBackplane(RedisBackplane):
    """Stands in for Redis: records fetches, answers them when the test says."""

    def __init__(self) -> None:
        super().__init__("redis://unused")
        self.fetches: list[tuple[str, Any]] = []

    def fetch_after(self, position: int, event_id: str) -> Any:
        from twisted.internet.defer import Deferred

        d: Deferred[Any] = Deferred()
        self.fetches.append((event_id, d))
        return d


def _end(redis_id: str) -> int:
    """The position a fetch reaching the entry C{redis_id} ends at."""
    return _pos(redis_id)


def _entry(redis_id: str, channel: str, body: bytes) -> Entry:
    return Entry(_pos(redis_id), redis_id, channel, body)


def test_lagging_process_waits_for_the_stream_then_joins_without_duplicates() -> None:
    """A client ahead of this process is held until it catches up: no gap, no duplicate."""
    stub = StubBackplane()
    hub = redis_hub("b", stub)
    start_at(hub, "100-0")
    deliver(hub, "100-1", "c", b"data: 1\n")
    client = Recorder()
    # The client saw 102-0 on another process; this one has not read it yet.
    joined = hub.join(client, ["c"], "102-0")
    ((last, fetched),) = stub.fetches
    assert last == "102-0"
    fetched.callback(Fetched(True, [_entry("103-0", "c", b"data: 3\n")], _end("103-0"), "", False))
    deliver(hub, "102-0", "c", b"data: 2\n")
    assert client.sent == [] and hub.held_count() == 1 and not joined.called
    deliver(hub, "103-0", "c", b"data: 3\n")
    assert joined.called
    deliver(hub, "104-0", "c", b"data: 4\n")
    assert client.ids() == ["id: 103-0", "id: 104-0"]
    assert hub.held_count() == 0 and hub.subscriber_count("c") == 1


def test_held_client_is_reset_when_the_process_does_not_catch_up() -> None:
    """A held client whose events never arrive gets reset after replay_wait, then live events."""
    clock = Clock()
    stub = StubBackplane()
    hub = redis_hub("b", stub, clock=clock, replay_wait=5.0)
    start_at(hub, "100-0")
    client = Recorder()
    hub.join(client, ["c"], "200-0")
    stub.fetches[0][1].callback(Fetched(True, [], _end("200-0"), "", False))
    clock.advance(5)
    assert client.sent == [b"event: reset\ndata: \n\n"]
    deliver(hub, "100-5", "c", b"data: x\n")
    assert client.ids()[1:] == ["id: 100-5"]


def test_redis_down_at_startup_then_up(tmp_path: Any) -> None:
    """A server started while Redis is down serves local clients, then connects when it comes."""
    redis_server = RedisServer(tmp_path)  # not started yet
    with serve(plain_app, redis_url=redis_server.url) as a:
        with a.stream() as client:
            a.wait_clients(1)
            a.service.broadcaster.broadcast("alone")
            assert client.wait_events(1)[0].data == "alone"
            assert stats(a)["local_only"] == 1
            wait_until(lambda: stats(a)["errors"] >= 1, what="a failed attempt")
            redis_server.start()
            try:
                wait_until(lambda: connected(a), what="connected")
                a.service.broadcaster.broadcast("shared")
                event = client.wait_events(2)[1]
                assert event.data == "shared" and REDIS_ID.match(event.last_event_id)
            finally:
                redis_server.kill()


def test_stalled_redis_blocks_neither_reactor_nor_views(redis_server: RedisServer) -> None:
    """With Redis frozen (SIGSTOP), pages still load and local clients still get broadcasts."""
    import signal

    from support import http_request

    with serve(plain_app, redis_url=redis_server.url) as a:
        wait_until(lambda: connected(a), what="connected")
        with a.stream() as client:
            a.wait_clients(1)
            assert redis_server.proc is not None
            redis_server.proc.send_signal(signal.SIGSTOP)
            try:
                for i in range(3):
                    a.service.broadcaster.broadcast(f"frozen{i}")
                status, _, body = http_request(a.port, "GET", "/")
                assert (status, body) == (200, b"hello")
                events = client.wait_events(3, timeout=20)
                assert [e.data for e in events] == ["frozen0", "frozen1", "frozen2"]
                assert stats(a)["local_only"] == 3
            finally:
                redis_server.proc.send_signal(signal.SIGCONT)
            wait_until(lambda: connected(a), what="recovered")


def test_foreign_stream_entries_are_dropped(redis_server: RedisServer) -> None:
    """Stream entries wsgi-sse could not have written (injected ids, blank lines) are dropped."""
    with serve(plain_app, redis_url=redis_server.url) as a:
        wait_until(lambda: connected(a), what="connected")
        with a.stream() as client:
            a.wait_clients(1)
            raw = redis_server.client()
            key = "wsgi-sse:default:events"
            raw.xadd(key, {"c": "default", "b": b"data: x\n\nid: 1-0\ndata: y\n"})
            raw.xadd(key, {"c": "default", "b": b"id: 1-0\ndata: z\n"})
            raw.xadd(key, {"c": "default"})
            raw.xadd(key, {"c": "default", "b": b"data: fine\n"})
            (event,) = client.wait_events(1)
            assert event.data == "fine" and REDIS_ID.match(event.last_event_id)
            wait_until(lambda: stats(a)["malformed"] == 3, what="counted")


def test_hand_built_backplane_runs_with_the_server(redis_server: RedisServer) -> None:
    """A RedisBackplane in a hand-built Hub is started, stopped and exposed by the server."""
    from twisted.internet import reactor

    backplane = RedisBackplane(redis_server.url, namespace="site2", maxlen=50, reactor=reactor)
    with serve(plain_app, hub=Hub(backplane=backplane, clock=reactor)) as a:
        assert a.service.backplane is backplane
        wait_until(lambda: backplane.stats()["connected"], what="connected")
        with a.stream() as client:
            a.wait_clients(1)
            a.service.broadcaster.broadcast("namespaced")
            assert client.wait_events(1)[0].data == "namespaced"
        assert redis_server.client().xlen("wsgi-sse:site2:events") == 1
    wait_until(lambda: not backplane.running, what="stopped")


@pytest.mark.parametrize(
    "event_id",
    [
        "18446744073709551616-0",
        "1-18446744073709551616",
        "1-0.me.4294967296",
        "1-0.ME.1",
        "1-0.",
        "x",
    ],
)
def test_out_of_range_ids_are_not_replayed(event_id: str) -> None:
    """Ids outside Redis's 64-bit range (or malformed) are unknown, never misread."""
    hub = redis_hub("me")
    deliver(hub, "1-1", "c", b"data: a\n")
    assert hub.parse_id(event_id) is None
    assert not hub.can_replay(["c"], event_id)


def test_held_client_completes_when_the_reader_starts() -> None:
    """A client replayed before this process starts reading joins as soon as it does."""
    stub = StubBackplane()
    hub = redis_hub("b", stub)
    client = Recorder()
    hub.join(client, ["c"], "100-0")
    assert hub.held_count() == 1
    entries = [_entry("100-1", "c", b"data: 1\n")]
    stub.fetches[0][1].callback(Fetched(True, entries, _end("100-1"), "", False))
    assert client.sent == []
    start_at(hub, "100-1")
    assert client.ids() == ["id: 100-1"] and hub.subscriber_count("c") == 1


def test_broadcast_right_after_startup_goes_through_redis(redis_server: RedisServer) -> None:
    """Events broadcast before the first connection is made wait for it instead of going local."""
    with serve(plain_app, redis_url=redis_server.url) as a:
        a.service.broadcaster.broadcast("early")
        wait_until(lambda: stats(a)["published"] == 1, what="published")
        assert stats(a)["local_only"] == 0
        assert redis_server.client().xlen("wsgi-sse:default:events") == 1


def test_clients_sharing_a_last_id_share_one_fetch(redis_server: RedisServer) -> None:
    """Clients reconnecting with the same id at once are answered by one XRANGE."""
    from twisted.internet.defer import gatherResults

    with RedisPublisher(redis_server.url) as publisher:
        first = publisher.broadcast("one")
        publisher.broadcast("two")
    with serve(plain_app, redis_url=redis_server.url) as a:
        wait_until(lambda: connected(a), what="connected")
        backplane = a.service.backplane
        position = backplane.parse_id(first)
        results = a.call(
            lambda: gatherResults([backplane.fetch_after(position, first) for _ in range(3)])
        )
        assert [[e.id for e in r.entries] for r in results] == [[results[0].entries[0].id]] * 3
        assert all(r.found and not r.truncated for r in results)
        assert stats(a)["replay_fetches"] == 1
        a.call(lambda: backplane.fetch_after(position, first))
        assert stats(a)["replay_fetches"] == 2


def test_batch_from_the_stream_is_written_once_per_channel_run() -> None:
    """A batch read from Redis reaches a subscriber in one write per run of a channel, in order."""
    hub = redis_hub("b")
    start_at(hub, "10-0")
    on_a, on_both = Recorder(), Recorder()
    hub.subscribe(on_a, ["a"])
    hub.subscribe(on_both, ["a", "b"])
    batch = [
        _entry(i, ch, f"data: {i}\n".encode())
        for i, ch in (("10-1", "a"), ("10-2", "a"), ("11-0", "b"), ("11-1", "a"))
    ]
    assert hub.deliver_batch(batch) == [2, 2, 1, 2]
    assert on_a.sent == [
        b"id: 10-1\ndata: 10-1\n\nid: 10-2\ndata: 10-2\n\n",
        b"id: 11-1\ndata: 11-1\n\n",
    ]
    assert len(on_both.sent) == 3
    # Read again (a reconnect overlapping what was delivered): nothing twice.
    assert hub.deliver_batch(batch) == [0, 0, 0, 0]
    assert len(on_a.sent) == 2 and hub.last_id == "11-1"
    assert [e.id for e in hub.replay(["a", "b"], "10-1") or []] == ["10-2", "11-0", "11-1"]
