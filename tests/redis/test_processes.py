"""Several server processes sharing broadcasts through a real redis-server."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

from redis_support import (
    RedisServer,
    ServerProcess,
    bottle_server,
    burst_server,
    processes,
    wait_connected,
)
from support import PYTHON, StreamClient, subprocess_env


def wait_subscribed(server: ServerProcess, client: StreamClient) -> None:
    """Wait until a stream's first bytes arrived (it is subscribed by then)."""
    client.wait_for(lambda c: c.parser.retry is not None)


def test_knock_on_one_process_reaches_clients_of_both(
    bottle_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    """Knocks on either process reach every client of both, in order, exactly once."""
    a, b = bottle_pair
    with a.stream() as a1, a.stream() as a2, b.stream() as b1:
        for client, server in ((a1, a), (a2, a), (b1, b)):
            wait_subscribed(server, client)
        # broadcast() does not wait for Redis: knocks on different
        # processes are ordered by the stream, so wait for each to land.
        for n, (server, name) in enumerate(((a, "Ada"), (b, "Bob"), (a, "Cy")), 1):
            server.knock(name)
            b1.wait_events(n)
        seen = [c.wait_events(3) for c in (a1, a2, b1)]
        for client in (a1, a2, b1):
            client.read_some(0.3)  # anything extra would show up here
        expected = [(e.data, e.last_event_id) for e in seen[0]]
        assert [data for data, _ in expected] == ["Ada knocked", "Bob knocked", "Cy knocked"]
        for events in seen:
            assert [(e.data, e.last_event_id) for e in events] == expected


def test_client_moving_between_processes_replays_what_it_missed(
    bottle_pair: tuple[ServerProcess, ServerProcess],
) -> None:
    """Last-Event-ID from process A, used on process B, replays exactly the missed knocks."""
    a, b = bottle_pair
    with a.stream() as on_a:
        wait_subscribed(a, on_a)
        a.knock("Dee")
        (last,) = on_a.wait_events(1)
    with a.stream() as watcher:
        wait_subscribed(a, watcher)
        b.knock("Eve")
        watcher.wait_events(1)
        a.knock("Fay")
        watcher.wait_events(2)
    with b.stream(headers={"Last-Event-ID": last.last_event_id}) as on_b:
        missed = on_b.wait_events(2)
        assert [e.data for e in missed] == ["Eve knocked", "Fay knocked"]
        a.knock("Gus")
        events = on_b.wait_events(3)
        on_b.read_some(0.3)
        assert [e.data for e in events] == ["Eve knocked", "Fay knocked", "Gus knocked"]
        assert all(e.last_event_id > last.last_event_id for e in events)


def test_non_server_process_publishes_to_every_process(
    bottle_pair: tuple[ServerProcess, ServerProcess], shared_redis: RedisServer
) -> None:
    """A plain Python process (no reactor) publishes with RedisPublisher; both servers deliver."""
    a, b = bottle_pair
    code = (
        "from wsgi_sse.redis import RedisPublisher\n"
        "with RedisPublisher() as p:\n"
        "    print(p.broadcast({'job': 7, 'state': 'done'}, event='job'))\n"
    )
    with a.stream() as on_a, b.stream() as on_b:
        wait_subscribed(a, on_a)
        wait_subscribed(b, on_b)
        done = subprocess.run(
            [PYTHON, "-c", code],
            env=subprocess_env(WSGI_SSE_REDIS_URL=shared_redis.url),
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        event_id = done.stdout.strip()
        for client in (on_a, on_b):
            (event,) = client.wait_events(1)
            assert (event.type, event.data, event.last_event_id) == (
                "job",
                '{"job":7,"state":"done"}',
                event_id,
            )


def test_redis_outage_local_delivery_then_recovery(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Redis killed: each process still serves its own clients; restarted: both share again."""
    a = burst_server(tmp_path, "a", redis_server.url)
    b = burst_server(tmp_path, "b", redis_server.url)
    with processes(a, b):
        wait_connected(a)
        wait_connected(b)
        with a.stream() as on_a, b.stream() as on_b:
            wait_subscribed(a, on_a)
            wait_subscribed(b, on_b)
            a.post("/burst?tag=before&n=1")
            on_a.wait_events(1)
            on_b.wait_events(1)

            redis_server.kill()
            a.post("/burst?tag=during&n=2")
            assert [e.data for e in on_a.wait_events(3)[1:]] == ["during:0", "during:1"]
            stats = a.stats()
            assert stats["local_only"] == 2 and not stats["connected"]

            redis_server.start()
            wait_connected(a, timeout=30)
            wait_connected(b, timeout=30)
            a.post("/burst?tag=after&n=1")
            assert on_a.wait_events(4)[3].data == "after:0"
            assert on_b.wait_events(2)[1].data == "after:0"
            assert [e.data for e in on_b.events] == ["before:0", "after:0"]
            assert a.stats()["reconnects"] >= 1 and b.stats()["reconnects"] >= 1
    assert "Redis unreachable" in a.log() and "reconnected to Redis" in a.log()


def test_stress_four_publishers_two_processes(redis_server: RedisServer, tmp_path: Path) -> None:
    """4 publishers x 2,000 events, 2 processes: no loss, no duplicates, one order everywhere."""
    per_publisher = 2000
    a = burst_server(tmp_path, "a", redis_server.url)
    b = burst_server(tmp_path, "b", redis_server.url)
    with processes(a, b):
        wait_connected(a)
        wait_connected(b)
        clients = [server.stream("/sse?channel=x&channel=y", timeout=60) for server in (a, b, a, b)]
        try:
            for client in clients:
                client.wait_for(lambda c: c.parser.retry is not None)
            total = 4 * per_publisher
            readers = [threading.Thread(target=c.wait_events, args=(total, 120)) for c in clients]
            for reader in readers:
                reader.start()
            publishers = [
                threading.Thread(
                    target=server.post,
                    args=(f"/burst?tag=p{i}&n={per_publisher}&channel={channel}",),
                    kwargs={"timeout": 120},
                )
                for i, (server, channel) in enumerate(((a, "x"), (a, "y"), (b, "x"), (b, "y")))
            ]
            started = time.monotonic()
            for publisher in publishers:
                publisher.start()
            for thread in publishers + readers:
                thread.join(150)
            assert time.monotonic() - started < 150
            reference = [(e.data, e.last_event_id) for e in clients[0].events]
            assert len(reference) == total
            assert len({i for _, i in reference}) == total
            for i in range(4):
                tags = [int(d.split(":")[1]) for d, _ in reference if d.startswith(f"p{i}:")]
                assert tags == list(range(per_publisher))
            ids = [
                tuple(map(int, re.split(r"[-_]", i))) + (0,) * (i.count("_") == 0)
                for _, i in reference
            ]
            assert ids == sorted(ids)
            for client in clients[1:]:
                client.read_some(0.2)
                assert [(e.data, e.last_event_id) for e in client.events] == reference
        finally:
            for client in clients:
                client.close()
        deadline = time.monotonic() + 10
        while a.stats()["published"] + b.stats()["published"] != total:
            assert time.monotonic() < deadline, (a.stats(), b.stats())
            time.sleep(0.05)
        assert a.stats()["local_only"] == 0


def test_process_started_later_replays_from_redis(
    bottle_pair: tuple[ServerProcess, ServerProcess], shared_redis: RedisServer, tmp_path: Path
) -> None:
    """
    A process started after the knocks replays them from Redis for a client
    of another one, plain or channel-tagged (the shared-tabs client).
    """
    a, _ = bottle_pair
    with a.stream() as on_a, a.stream("/sse?channelInId=1") as tagged_on_a:
        wait_subscribed(a, on_a)
        wait_subscribed(a, tagged_on_a)
        for n, name in enumerate(("Hal", "Ida", "Jon"), 1):
            a.knock(name)
            on_a.wait_events(n)
        first = on_a.events[0]
        # (First where the stream starts, for the browser client.)
        assert tagged_on_a.wait_events(4)[0].type == "wsgi-sse:position"
        tagged_first = tagged_on_a.events[1]
    assert tagged_first.last_event_id == f"{first.last_event_id} default"
    with processes(bottle_server(tmp_path, "late", shared_redis.url)) as (late,):
        tagged = late.stream(
            "/sse?channelInId=1", headers={"Last-Event-ID": tagged_first.last_event_id}
        )
        with late.stream(headers={"Last-Event-ID": first.last_event_id}) as on_late, tagged:
            missed = on_late.wait_events(2)
            assert [(e.data, e.last_event_id) for e in missed] == [
                (e.data, e.last_event_id) for e in on_a.events[1:]
            ]
            assert [(e.type, e.data, e.last_event_id) for e in tagged.wait_events(2)] == [
                ("message", e.data, f"{e.last_event_id} default") for e in on_a.events[1:]
            ]
            a.knock("Kim")
            assert on_late.wait_events(3)[2].data == "Kim knocked"
            kim = tagged.wait_events(3)[2]
            assert kim.last_event_id == f"{on_late.events[2].last_event_id} default"
            on_late.read_some(0.3)
            tagged.read_some(0.1)
            assert len(on_late.events) == 3 and len(tagged.events) == 3


def test_close_ends_held_streams_in_every_process(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """close() on one process, or RedisPublisher.close_channel, ends held streams on both."""
    a = burst_server(tmp_path, "a", redis_server.url)
    b = burst_server(tmp_path, "b", redis_server.url)
    with processes(a, b):
        wait_connected(a)
        wait_connected(b)
        with a.stream("/hold?channel=job") as on_a, b.stream("/hold?channel=job") as on_b:
            wait_subscribed(a, on_a)
            wait_subscribed(b, on_b)
            a.post("/burst?tag=step&n=3&channel=job")
            a.post("/close?channel=job")
            for client in (on_a, on_b):
                client.read_to_end()
                assert [e.data for e in client.events] == ["step:0", "step:1", "step:2"]
        with a.stream("/hold?channel=job2") as on_a, b.stream("/hold?channel=job2") as on_b:
            wait_subscribed(a, on_a)
            wait_subscribed(b, on_b)
            code = (
                "from wsgi_sse.redis import RedisPublisher\n"
                "with RedisPublisher() as p:\n"
                "    p.broadcast('last', channel='job2')\n"
                "    print(p.close_channel('job2'))\n"
            )
            done = subprocess.run(
                [PYTHON, "-c", code],
                env=subprocess_env(WSGI_SSE_REDIS_URL=redis_server.url),
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
            for client in (on_a, on_b):
                client.read_to_end()
                assert [e.data for e in client.events] == ["last"]
                assert client.parser.last_event_id == done.stdout.strip()
