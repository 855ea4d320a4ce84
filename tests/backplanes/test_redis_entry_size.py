"""
What a large entry written straight into the Redis stream (by anyone who
can write to it) costs a reading process, against a real redis-server: the
bytes it receives are counted by a proxy in front of Redis.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pytest
import redis
from backplane_support import Backend, GatedProxy, redis_user
from redis_support import RedisServer
from support import logged, serve, wait_until
from test_contract import server_on

KEY = "wsgi-sse:default:events"
FORGED_SIZE = 20_000_000


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app with nothing to say."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def info_calls(raw: Any) -> int:
    """How many times Redis answered XINFO or a script (a quiet read asks one)."""
    stats = raw.info("commandstats")
    names = ("xinfo|stream", "eval", "evalsha")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in names)


def script_calls(raw: Any) -> tuple[int, int]:
    """How many scripts Redis was sent whole (EVAL) and by their SHA1 (EVALSHA)."""
    stats = raw.info("commandstats")
    whole, by_sha = (
        stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("eval", "evalsha")
    )
    return whole, by_sha


def test_a_large_forged_entry_is_not_sent_again_at_every_quiet_read(
    session_redis: RedisServer,
) -> None:
    """
    A 20 MB entry, the newest of the stream, is read once by the live
    reader and dropped as malformed; the quiet reads after it, which look
    at the stream's ids, do not receive it again.  Events before and after
    it are delivered.
    """
    Backend("redis", session_redis).clean()
    raw = session_redis.client()
    with (
        GatedProxy(session_redis.port) as proxy,
        serve(app, backplane_url=proxy.url_for(session_redis.url)) as b,
    ):
        proxy.open()
        wait_until(lambda: b.service.backplane.connected, what="connected")
        with b.stream() as live:
            b.wait_clients(1)
            b.service.broadcaster.broadcast_and_wait("before")
            raw.xadd(KEY, {"c": "default", "b": b"data: " + b"x" * FORGED_SIZE + b"\n"})
            wait_until(lambda: b.service.backplane.stats()["malformed"] == 1, what="read")
            after_read = proxy.received
            calls = info_calls(raw)
            wait_until(lambda: info_calls(raw) >= calls + 3, what="three quiet reads")
            quiet = proxy.received - after_read
            b.service.broadcaster.broadcast_and_wait("after")
            live.wait_events(2)
    print(f"\na {FORGED_SIZE:,}-byte newest entry: {quiet:,} bytes received in 3 quiet reads")
    assert [e.data for e in live.events] == ["before", "after"]
    assert quiet < 100_000


def test_without_scripts_the_stream_is_still_read(session_redis: RedisServer) -> None:
    """
    Where an ACL refuses scripts, the stream's ids are read with XINFO
    STREAM (logged once): events are shared and replayed as before.
    """
    backend = Backend("redis", session_redis)
    backend.clean()
    with redis_user(session_redis) as url:
        with logged() as log, serve(app, backplane_url=url) as a, server_on(backend) as b:
            wait_until(lambda: a.service.backplane.connected, what="connected")
            with a.stream() as live:
                a.wait_clients(1)
                b.service.broadcaster.broadcast_and_wait("shared")
                (first,) = live.wait_events(1)
                wait_until(lambda: any("refused a script" in x for x in log), what="logged")
            b.service.broadcaster.broadcast_and_wait("missed")
            with a.stream(headers={"Last-Event-ID": first.last_event_id}) as again:
                assert [e.data for e in again.wait_events(1)] == ["missed"]
    refusals = [x for x in log if "refused a script" in x]
    assert len(refusals) == 1 and "XINFO STREAM" in refusals[0], refusals
    assert [e.data for e in live.events] == ["shared"]


def forged_between(raw: Any) -> list[str]:
    """
    Write C{before}, a forged 20 MB entry, C{after1} and C{after2} straight
    into the stream: the ids of the four entries.
    """
    ids = [raw.xadd(KEY, {"c": "default", "b": b"data: before\n"})]
    ids.append(raw.xadd(KEY, {"c": "default", "b": b"data: " + b"x" * FORGED_SIZE + b"\n"}))
    for name in ("after1", "after2"):
        ids.append(raw.xadd(KEY, {"c": "default", "b": f"data: {name}\n".encode()}))
    return [i.decode("ascii") for i in ids]


def test_a_replay_is_not_sent_a_large_forged_entry(session_redis: RedisServer) -> None:
    """
    Clients reconnecting with the id of a forged 20 MB entry, or of the
    entry before it, make the server fetch from Redis each time: the entry
    is never sent to it, and is dropped as malformed in its place; the
    events around it are replayed in order, with their ids.
    """
    Backend("redis", session_redis).clean()
    raw = session_redis.client()
    before, forged, after1, after2 = forged_between(raw)
    with (
        GatedProxy(session_redis.port) as proxy,
        serve(app, backplane_url=proxy.url_for(session_redis.url)) as b,
    ):
        proxy.open()
        wait_until(lambda: b.service.backplane.connected, what="connected")
        start = proxy.received
        replays = []
        for last in (forged, before, forged, before):
            # Started after them, the server replays these from Redis only.
            with b.stream(headers={"Last-Event-ID": last}) as again:
                replays.append([(e.data, e.last_event_id) for e in again.wait_events(2)])
        received = proxy.received - start
        fetched = b.service.hub.stats.replays_fetched
        malformed = b.service.backplane.stats()["malformed"]
    print(f"\n4 replays over a {FORGED_SIZE:,}-byte entry: {received:,} bytes received")
    assert replays == [[("after1", after1), ("after2", after2)]] * 4
    assert fetched == 4 and malformed == 4
    assert received < 200_000


def test_scripts_are_sent_by_their_sha1_once_redis_holds_them(session_redis: RedisServer) -> None:
    """
    Replays and quiet reads run their scripts by SHA1 (EVALSHA): each
    script's text is sent once, when Redis does not hold it (at first, and
    again after a SCRIPT FLUSH, as after a restart), and every replay is
    answered as before.
    """
    Backend("redis", session_redis).clean()
    raw = session_redis.client()
    before, forged, after1, after2 = forged_between(raw)
    raw.script_flush()
    with serve(app, backplane_url=session_redis.url) as b:
        wait_until(lambda: b.service.backplane.connected, what="connected")
        start = script_calls(raw)
        replays = []
        for flush in (False, False, True, False):
            if flush:
                raw.script_flush()
            for last in (forged, before):
                with b.stream(headers={"Last-Event-ID": last}) as again:
                    replays.append([(e.data, e.last_event_id) for e in again.wait_events(2)])
        end = script_calls(raw)
    assert replays == [[("after1", after1), ("after2", after2)]] * 8
    whole, by_sha = end[0] - start[0], end[1] - start[1]
    # Eight replays: an existence check and a range read each, all by SHA1;
    # the two scripts (and the quiet reads' one) sent whole at most twice.
    assert whole <= 6, whole
    assert by_sha >= 16, by_sha


def test_without_scripts_replays_read_whole_entries(session_redis: RedisServer) -> None:
    """
    Where an ACL stops allowing scripts while the server runs, the next
    replay reads the stream with XRANGE (logged once, saying it sends
    entries whole): the events are replayed in order, the forged entry
    dropped as malformed.
    """
    Backend("redis", session_redis).clean()
    raw = session_redis.client()
    with redis_user(session_redis, scripts=True) as url:
        before, forged, after1, after2 = forged_between(raw)
        with logged() as log, serve(app, backplane_url=url) as b:
            wait_until(lambda: b.service.backplane.connected, what="connected")
            raw.acl_setuser("noscript", enabled=True, commands=["-@scripting"])
            replays = []
            for last in (before, forged):
                with b.stream(headers={"Last-Event-ID": last}) as again:
                    replays.append([(e.data, e.last_event_id) for e in again.wait_events(2)])
            fetched = b.service.hub.stats.replays_fetched
            malformed = b.service.backplane.stats()["malformed"]
    assert replays == [[("after1", after1), ("after2", after2)]] * 2
    assert fetched == 2 and malformed == 2
    refusals = [x for x in log if "refused a script" in x]
    assert len(refusals) == 1 and "XRANGE" in refusals[0], refusals


def test_a_busy_redis_does_not_turn_scripts_off(session_redis: RedisServer) -> None:
    """
    A script answered C{BUSY} (another client's script is running) is a
    refusal of that call, not of scripts: the replay fails, and once Redis
    is free again replays still read through scripts, so the forged entry
    is still never sent.
    """
    redis_server = session_redis
    Backend("redis", redis_server).clean()
    raw = redis_server.client()
    before, _, after1, after2 = forged_between(raw)
    threshold = raw.config_get("busy-reply-threshold")["busy-reply-threshold"]
    raw.config_set("busy-reply-threshold", 50)
    with (
        GatedProxy(redis_server.port) as proxy,
        serve(app, backplane_url=proxy.url_for(redis_server.url)) as b,
    ):
        proxy.open()
        backplane = b.service.backplane
        wait_until(lambda: backplane.connected, what="connected")

        def spin() -> None:
            with contextlib.suppress(redis.ResponseError):
                redis_server.client().eval("while true do end", 0)

        spinning = threading.Thread(target=spin)
        spinning.start()
        try:

            def busy() -> bool:
                try:
                    raw.ping()
                except redis.ResponseError:
                    return True
                return False

            wait_until(busy, what="Redis busy with the other script")
            with pytest.raises(redis.ResponseError, match="BUSY"):
                backplane._fetch_many([(before, backplane.parse_id(before))])
        finally:
            while spinning.is_alive():
                with contextlib.suppress(redis.ResponseError):
                    raw.script_kill()
                spinning.join(0.1)
            raw.config_set("busy-reply-threshold", threshold)
        assert backplane._by_script
        start = proxy.received
        with b.stream(headers={"Last-Event-ID": before}) as again:
            replayed = [(e.data, e.last_event_id) for e in again.wait_events(2)]
        received = proxy.received - start
    assert replayed == [("after1", after1), ("after2", after2)]
    assert received < 200_000
