"""
The Redis stream is input from outside the process: any client of that
Redis can write to it.  Each attack runs against a real redis-server and
real servers on loopback ports, read by a raw-socket client; the figures
are printed (run with -s to see them).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from redis_support import RedisServer
from support import RunningServer, StreamClient, http_request, serve, wait_until

from wsgi_sse.redis import RedisPublisher

KEY = "wsgi-sse:default:events"
SECRET = "s" * 32
MAX_ID = "18446744073709551615-18446744073709551615"


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app with nothing to say."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@contextlib.contextmanager
def server_on(redis_server: RedisServer, **kwargs: Any) -> Iterator[RunningServer]:
    """A server sharing C{redis_server}, connected to it."""
    with serve(app, backplane_url=redis_server.url, **kwargs) as server:
        wait_until(lambda: server.service.backplane.stats()["connected"], what="connected")
        yield server


def forged() -> list[dict[str, bytes | str]]:
    """Entries wsgi-sse never writes: each tries to reach a browser as something else."""
    return [
        {"c": "default", "b": b"id: 999999\nevent: pwn\ndata: forged-id\n"},
        {"c": "default", "b": b"data: x\n\nid: 999999\nevent: pwn\ndata: forged-split\n"},
        {"c": "default", "b": b"data: forged-batch\n\nid: 1\ndata: b\n", "n": b"2"},
        {"c": "default", "b": b"data: forged-count\n", "n": b"x"},
        {"c": "default", "b": b"data: forged-count\n\ndata: forged-count\n", "n": b"3"},
        {"c": "default", "b": b"data: forged-cr\rid: 9\n"},
        {"c": "default", "b": b"data: \xff\xfe forged-utf8\n"},
        {"c": "default", "b": b"retry: 1\nretry: 2\ndata: forged-order\n"},
        {"c": "default", "b": b"data: forged-no-newline"},
        {"c": "default\nid: 9", "b": b"data: forged-channel\n"},
        {"c": b"\xff", "b": b"data: forged-channel-utf8\n"},
        {"c": "default", "b": b"data: " + b"x" * (1 << 20) + b"\n"},
        {"c": "default"},
        {"b": b"data: forged-no-channel\n"},
    ]


def forged_count(events: list[Any]) -> int:
    """Events a forged entry produced (their data or type says so)."""
    return sum(1 for e in events if "forged" in e.data or e.type == "pwn")


def test_forged_entries_never_reach_a_client_live_or_replayed(redis_server: RedisServer) -> None:
    """Malformed stream entries are dropped the same way when read live and when replayed."""
    raw = redis_server.client()
    with server_on(redis_server) as a:
        with a.stream() as live:
            a.wait_clients(1)
            a.service.broadcaster.broadcast("start")
            (start,) = live.wait_events(1)
            entries = forged()
            for i, fields in enumerate(entries):
                raw.xadd(KEY, fields)
                raw.xadd(KEY, {"c": "default", "b": f"data: good{i}\n".encode()})
            live.wait_events(1 + len(entries))
            time.sleep(0.2)  # anything else would have arrived with them
            live.read_some(0.2)
            live_events = live.events
        good = [f"good{i}" for i in range(len(entries))]
        assert [e.data for e in live_events[1:]] == good
        malformed_live = a.service.backplane.stats()["malformed"]
    # A process started afterwards replays them from Redis (XRANGE).
    with server_on(redis_server) as b:
        with b.stream(headers={"Last-Event-ID": start.last_event_id}) as replayed:
            replayed_events = replayed.wait_events(len(entries))
            replayed.read_some(0.2)
        assert b.service.hub.stats.replays_fetched == 1
        assert [e.data for e in replayed.events] == good
        malformed_replay = b.service.backplane.stats()["malformed"]
    print(
        f"\n{len(entries)} forged entries beside {len(entries)} good ones: "
        f"live {forged_count(live_events)} forged delivered ({malformed_live} dropped), "
        f"replay {forged_count(replayed_events)} forged delivered ({malformed_replay} dropped)"
    )
    assert forged_count(live_events) == forged_count(replayed_events) == 0
    assert malformed_live == malformed_replay == len(entries)


def test_bad_origin_fields_lose_no_good_event_of_their_batch(redis_server: RedisServer) -> None:
    """Entries with malformed origin fields, read in one batch with good ones, lose nothing."""
    raw = redis_server.client()
    with server_on(redis_server) as a:
        prefix = a.service.hub.instance_id
        with a.stream() as client:
            a.wait_clients(1)
            pipe = raw.pipeline(transaction=False)
            origins = [f"{prefix}:", f"{prefix}:x", f"{prefix}:{'9' * 40}", f"{prefix}:-1", "\xff"]
            for i, origin in enumerate(origins):
                pipe.xadd(KEY, {"c": "default", "b": f"data: bad-origin{i}\n", "o": origin})
                pipe.xadd(KEY, {"c": "default", "b": f"data: good{i}\n"})
            pipe.execute()  # one round trip: the reader gets them in one batch
            events = client.wait_events(2 * len(origins))
            a.service.broadcaster.broadcast("after")
            assert client.wait_events(2 * len(origins) + 1)[-1].data == "after"
        assert [e.data for e in events[: 2 * len(origins)]] == [
            d for i in range(len(origins)) for d in (f"bad-origin{i}", f"good{i}")
        ]


def post_publish(server: RunningServer, data: str) -> tuple[int, dict[str, Any], float]:
    """POST /publish; return the status, the JSON answer and the seconds it took."""
    started = time.monotonic()
    status, _, body = http_request(
        server.port,
        "POST",
        "/publish",
        body=json.dumps({"data": data}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"},
        timeout=30,
    )
    return status, json.loads(body), time.monotonic() - started


def test_maximal_id_then_deleted_stream_stops_nothing(redis_server: RedisServer) -> None:
    """An entry with the maximal id, then the key deleted: delivery and publishing go on."""
    raw = redis_server.client()
    options = {"publish_path": "/publish", "publish_secret": SECRET}
    with server_on(redis_server, **options) as a, server_on(redis_server, **options) as b:
        with a.stream() as ca, b.stream() as cb:
            a.wait_clients(1)
            b.wait_clients(1)
            # A well-formed entry: delivered like any other.
            raw.xadd(KEY, {"c": "default", "b": b"data: max-id\n"}, id=MAX_ID)
            assert cb.wait_events(1)[0].last_event_id == MAX_ID
            # The stream is stuck at the maximal id: every XADD fails, so each
            # process delivers its own events locally, and answers at once.
            status, answer, stuck = post_publish(a, "while-stuck")
            assert status == 200 and answer["delivered"] == 1
            assert [e.data for e in ca.wait_events(2)] == ["max-id", "while-stuck"]
            raw.delete(KEY)
            started = time.monotonic()
            # Until the failed XADD is behind it, a process delivers locally;
            # then every event reaches both processes again.
            wait_until(lambda: a.service.backplane.stats()["connected"], what="connected")
            status, answer, after = post_publish(a, "after-delete")
            assert status == 200
            assert ca.wait_events(3, timeout=20)[2].data == "after-delete"
            assert cb.wait_events(2, timeout=20)[1].data == "after-delete"
            recovered = time.monotonic() - started
            a.service.broadcaster.broadcast("later")
            assert [e.data for e in cb.wait_events(3)] == ["max-id", "after-delete", "later"]
            assert ca.wait_events(4)[3].last_event_id == cb.events[2].last_event_id
        events = ca.events + cb.events
        assert forged_count(events) == 0
        restarts = a.service.backplane.stats()["restarts"]
        assert restarts >= 1 and b.service.backplane.stats()["restarts"] >= 1
    print(
        f"\nmaximal id: publish answered in {stuck * 1000:.0f} ms (local delivery); "
        f"after deleting the key: publish answered in {after * 1000:.0f} ms, "
        f"both processes delivering again after {recovered:.2f} s"
    )


def test_an_entry_dated_days_ahead_stops_no_later_event(redis_server: RedisServer) -> None:
    """After an entry dated two days ahead, later events (dated after it) reach every process."""
    raw = redis_server.client()
    options = {"publish_path": "/publish", "publish_secret": SECRET}
    with server_on(redis_server, **options) as a, server_on(redis_server, **options) as b:
        with a.stream() as ca, b.stream() as cb:
            a.wait_clients(1)
            b.wait_clients(1)
            ahead = int(time.time() * 1000) + 2 * 24 * 3600 * 1000
            raw.xadd(KEY, {"c": "default", "b": b"data: ahead\n"}, id=f"{ahead}-0")
            # Redis dates every later entry after it: {ahead}-1, {ahead}-2...
            status, answer, _ = post_publish(a, "after")  # waits for the read back
            assert status == 200 and answer["delivered"] == 1
            b.service.broadcaster.broadcast("later")
            expected = ["ahead", "after", "later"]
            assert [e.data for e in ca.wait_events(3)] == expected
            assert [e.data for e in cb.wait_events(3)] == expected
            assert answer["id"] == ca.events[1].last_event_id == f"{ahead}-1"
        assert a.service.backplane.stats()["malformed"] == 0


def test_made_up_ids_cost_one_lookup_and_do_not_delay_a_real_replay(
    redis_server: RedisServer,
) -> None:
    """200 clients with ids not in a 10,000-entry stream each cost one 1-entry XRANGE."""
    raw = redis_server.client()
    with RedisPublisher(redis_server.url) as publisher:
        for start in range(0, 10_000, 1000):
            publisher.broadcast_many([(f"e{start + i}", {}) for i in range(1000)])
    ids = [i.decode() for i, _ in raw.xrange(KEY, count=10_000)]
    real_id = ids[-51]
    first_ms = int(ids[0].split("-")[0])
    made_up = [f"{first_ms + k % 3}-{90_000 + k}" for k in range(200)]
    with server_on(redis_server) as server:
        # The process started after the events: every replay needs Redis.
        raw.config_resetstat()
        started = time.monotonic()
        with server.stream(headers={"Last-Event-ID": real_id}) as alone:
            alone.read_some(0.01)  # what came with the response head
            alone.wait_events(50)
        alone_s = time.monotonic() - started
        raw.config_resetstat()
        attackers = [
            StreamClient(server.port, "/sse", headers={"Last-Event-ID": i}) for i in made_up
        ]
        try:
            started = time.monotonic()
            with server.stream(headers={"Last-Event-ID": real_id}) as real:
                real.read_some(0.01)
                events = real.wait_events(50, timeout=30)
            crowded_s = time.monotonic() - started
            for attacker in attackers:
                # The reset may have come with the response head: decode it first.
                attacker.read_some(0.01)
                attacker.wait_events(1, timeout=30)
            assert all(a.events[0].type == "reset" for a in attackers)
        finally:
            for attacker in attackers:
                attacker.close()
        assert [e.data for e in events] == [f"e{i}" for i in range(9950, 10_000)]
        calls = raw.info("commandstats").get("cmdstat_xrange", {}).get("calls", 0)
        stats = server.service.backplane.stats()
    print(
        f"\nreal replay of 50 events: {alone_s * 1000:.0f} ms alone, "
        f"{crowded_s * 1000:.0f} ms beside 200 made-up ids; "
        f"XRANGE calls: {calls} for 201 clients (misses: {stats['replay_misses']})"
    )
    # One 1-entry lookup per made-up id, a lookup and one range for the real one.
    assert calls <= len(made_up) + 2
    assert stats["replay_misses"] >= len(made_up)


def test_deleting_entries_even_the_newest_redelivers_nothing(redis_server: RedisServer) -> None:
    """XDEL of entries (the newest included) is not a stream moved backwards: no replay storm."""
    raw = redis_server.client()
    with server_on(redis_server) as a:
        with a.stream() as client:
            a.wait_clients(1)
            for i in range(3):
                a.service.broadcaster.broadcast(f"e{i}")
                client.wait_events(i + 1)
            for raw_id, _ in raw.xrange(KEY):
                raw.xdel(KEY, raw_id)
            # Let the reader have a quiet XREAD (block = 1 s): where it checks.
            time.sleep(1.5)
            a.service.broadcaster.broadcast("after")
            client.wait_events(4)
            client.read_some(0.3)
        assert [e.data for e in client.events] == ["e0", "e1", "e2", "after"]
        assert a.service.backplane.stats()["restarts"] == 0


def test_stream_moved_back_with_xsetid_redelivers_nothing(redis_server: RedisServer) -> None:
    """The newest entry deleted and the id moved back (XSETID): no event again, later ones flow."""
    raw = redis_server.client()
    with server_on(redis_server) as a:
        with a.stream() as client:
            a.wait_clients(1)
            for i in range(3):
                a.service.broadcaster.broadcast(f"e{i}")
                client.wait_events(i + 1)
            ids = [raw_id for raw_id, _ in raw.xrange(KEY)]
            raw.xdel(KEY, ids[-1])
            raw.execute_command("XSETID", KEY, ids[-2])
            assert raw.xinfo_stream(KEY)["last-generated-id"] == ids[-2]
            # Let the reader have a quiet XREAD (block = 1 s): where it checks.
            wait_until(lambda: a.service.backplane.stats()["restarts"] == 1, what="noticed")
            a.service.broadcaster.broadcast("after")
            client.wait_events(4)
            client.read_some(0.3)
        assert [e.data for e in client.events] == ["e0", "e1", "e2", "after"]


def test_an_origin_token_never_issued_answers_no_later_publish(redis_server: RedisServer) -> None:
    """
    An entry naming this process as its origin with a batch token it never
    issued (forged, or left by an earlier process with the same instance
    id) answers no publish: each later one is still answered by its own
    event, read back with its id and its count.
    """
    raw = redis_server.client()
    options = {"publish_path": "/publish", "publish_secret": SECRET}
    with server_on(redis_server, **options) as a:
        prefix = a.service.hub.instance_id
        with a.stream() as client:
            a.wait_clients(1)
            raw.xadd(
                KEY, {"c": "default", "b": b"data: forged-origin\n", "o": f"{prefix}:{10**15}"}
            )
            assert client.wait_events(1)[0].data == "forged-origin"
            answers = [post_publish(a, f"after{i}")[:2] for i in range(5)]
            events = client.wait_events(6)
        assert [e.data for e in events] == ["forged-origin"] + [f"after{i}" for i in range(5)]
        for (status, answer), event in zip(answers, events[1:], strict=True):
            assert status == 200
            assert (answer["id"], answer["delivered"]) == (event.last_event_id, 1)
        assert a.service.backplane.stats()["foreign_origins"] == 1
