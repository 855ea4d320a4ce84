"""
Redis answering with an error (out of memory, a key of another type) is
not Redis being unreachable: real redis-server, real servers on loopback
ports, read by raw-socket clients.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from redis_support import RedisServer
from support import RunningServer, http_request, logged, serve, wait_until
from twisted.internet.defer import gatherResults

from wsgi_sse._encoding import encode_body
from wsgi_sse._redis import RedisBackplane
from wsgi_sse._shared import AppendRefusedError

KEY = "wsgi-sse:default:events"
SECRET = "s" * 32


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app with nothing to say."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@contextlib.contextmanager
def server_on(redis_server: RedisServer) -> Iterator[RunningServer]:
    """A server sharing C{redis_server} (with a publish endpoint), connected to it."""
    options = {"publish_path": "/publish", "publish_secret": SECRET}
    with serve(app, backplane_url=redis_server.url, **options) as server:
        wait_until(lambda: server.service.backplane.stats()["connected"], what="connected")
        yield server


def stored(raw: Any) -> list[str]:
    """The data of every event in the Redis stream, in order."""
    out = []
    for _, fields in raw.xrange(KEY):
        out += [line[6:].decode() for line in fields[b"b"].splitlines() if line[:6] == b"data: "]
    return out


def test_refused_xadd_is_delivered_locally_once_and_logged_as_refused(
    redis_server: RedisServer,
) -> None:
    """Under maxmemory, what Redis took is shared, what it refused reaches local clients only."""
    raw = redis_server.client()
    with server_on(redis_server) as a, server_on(redis_server) as b, logged() as log:
        backplane = a.service.backplane
        with a.stream() as ca, b.stream() as cb:
            a.wait_clients(1)
            b.wait_clients(1)
            raw.config_set("maxmemory-policy", "noeviction")
            raw.config_set("maxmemory", raw.info("memory")["used_memory"] + 2_000_000)
            big = "b" * 3_000_000
            hub = a.service.hub
            # Three runs queued in one reactor turn: the first fits, the
            # 3 MB one cannot (its request alone passes maxmemory).
            a.call(
                lambda: [
                    hub.publish("default", encode_body(body)) for body in ("first", big, "third")
                ]
            )
            events = ca.wait_events(3, timeout=20)
            assert sorted(e.data for e in events) == sorted(["first", big, "third"])
            in_redis = stored(raw)
            assert "first" in in_redis and big not in in_redis
            for event in events:
                # Refused events carry this process's local-only ids.
                assert ("." in event.last_event_id) == (event.data not in in_redis)
            # The other process gets exactly what Redis took.
            assert [e.data for e in cb.wait_events(len(in_redis))] == in_redis
            refused = 3 - len(in_redis)
            wait_until(lambda: backplane.stats()["refused"] == refused, what="counted")

            # Refused outright (Redis out of memory): the publish endpoint and
            # broadcast_and_wait() answer at once, for the local clients.
            raw.config_set("maxmemory", 1)
            status, _, body = http_request(
                a.port,
                "POST",
                "/publish",
                body=json.dumps({"data": "posted"}).encode(),
                headers={"Content-Type": "application/json", "Authorization": f"Bearer {SECRET}"},
            )
            assert status == 200 and json.loads(body)["delivered"] == 1
            waited: list[int] = []
            thread = threading.Thread(
                target=lambda: waited.append(a.service.broadcaster.broadcast_and_wait("waited"))
            )
            thread.start()
            thread.join(10)
            assert waited == [1]
            assert [e.data for e in ca.wait_events(5)[3:]] == ["posted", "waited"]
            stats = backplane.stats()
            assert stats["refused"] == refused + 2 and stats["connected"]
            assert stats["reconnects"] == 0

            raw.config_set("maxmemory", 0)
            a.service.broadcaster.broadcast("after")
            assert ca.wait_events(6)[5].data == "after"
            assert "." not in ca.events[5].last_event_id
            assert cb.wait_events(len(in_redis) + 1)[-1].data == "after"
            assert all(e.data not in ("posted", "waited") for e in cb.events)
            wait_until(lambda: any("accepts events again" in x for x in log), what="logged")
    refusals = [x for x in log if "Redis refused" in x]
    assert len(refusals) == 1 and "OutOfMemoryError" in refusals[0], log
    assert "maxmemory" in refusals[0]
    assert not any("unreachable" in x or "reconnected" in x for x in log), log


@pytest.mark.parametrize("fate", ["refused", "lost", "timed out"])
def test_an_event_not_read_back_is_answered_when_a_later_one_of_its_round_trip_is(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, fate: str
) -> None:
    """
    In one round trip the first event does not reach the stream and the next
    one does, and the reader reads the next one back before the publisher
    has reported on the round trip.  Refused: its publisher is answered
    with its own local delivery (its local-only id, one client), not with
    the later event's id and nobody reached.  Taken but lost (a Redis
    restarted without its data): answered with the later id and nobody.
    Taken, but the answer timed out: delivered once, from Redis, not again
    as local-only.

    (Redis refuses one command of a pipeline and takes the next when memory
    frees in between; here the first run's fate is made up, and the rest
    goes to the real server, slowly.)
    """
    go = threading.Event()
    calls: list[int] = []
    append = RedisBackplane._append

    def slow_append(self: RedisBackplane, batch: Any) -> int:
        calls.append(len(batch))
        if len(calls) == 1:
            go.wait(10)  # the next two events queue up behind this one
        first = [run for run in batch if any(b"first" in body for body in run[2])]
        taken = [run for run in batch if run not in first]
        appended = append(self, taken) if taken else 0
        if not first:
            return appended
        time.sleep(0.5)  # the reader reads the taken event back meanwhile
        if fate == "lost":
            return appended + 1
        if fate == "timed out":  # Redis took the whole round trip; its answer was late
            append(self, first)
            time.sleep(0.5)
            raise TimeoutError("Timeout reading from socket")
        raise AppendRefusedError("OOM command not allowed", first, appended)

    monkeypatch.setattr(RedisBackplane, "_append", slow_append)
    raw = redis_server.client()
    with server_on(redis_server) as a, a.stream() as ca:
        a.wait_clients(1)
        hub = a.service.hub
        a.call(lambda: hub.publish("default", encode_body("gate")) and None)
        wait_until(lambda: calls == [1], what="the gate in the publisher's hands")
        pending: list[Any] = []
        a.call(
            lambda: pending.append(
                gatherResults(
                    [hub.publish_event("default", encode_body(b)) for b in ("first", "taken")]
                )
            )
        )
        go.set()
        first, taken = a.call(lambda: pending[0], timeout=20)
        assert calls == [1, 2]  # one round trip for both
        in_redis = stored(raw)
        assert in_redis == (
            ["gate", "taken", "first"] if fate == "timed out" else ["gate", "taken"]
        )
        assert taken.delivered == 1 and "." not in taken.id
        if fate == "lost":
            assert first == (taken.id, 0)
            assert [e.data for e in ca.wait_events(2, timeout=20)] == ["gate", "taken"]
            return
        if fate == "timed out":
            # Read back before the publisher gave up on it: delivered once,
            # from Redis, and not again as local-only.
            assert first.delivered == 1 and "." not in first.id
            assert [e.data for e in ca.wait_events(3, timeout=20)] == ["gate", "taken", "first"]
            time.sleep(1.0)  # a second delivery would be here by now
            ca.read_some(timeout=0.5)
            assert [e.data for e in ca.events] == ["gate", "taken", "first"]
            stats = a.service.backplane.stats()
            assert stats["duplicates_suppressed"] == 2 and stats["errors"] == 1
            return
        assert first.delivered == 1 and "." in first.id
        assert [e.data for e in ca.wait_events(3, timeout=20)] == ["gate", "taken", "first"]
        assert ca.events[2].last_event_id == first.id


def test_stream_key_of_another_type_is_refused_not_unreachable(
    redis_server: RedisServer,
) -> None:
    """With the stream key a string (WRONGTYPE), events are local-only; deleting it recovers."""
    raw = redis_server.client()
    with server_on(redis_server) as a, server_on(redis_server) as b, logged() as log:
        with a.stream() as ca, b.stream() as cb:
            a.wait_clients(1)
            b.wait_clients(1)
            raw.delete(KEY)
            raw.set(KEY, "not a stream")
            wait_until(lambda: not a.service.backplane.stats()["connected"], what="refusal seen")
            a.service.broadcaster.broadcast("during")
            (during,) = ca.wait_events(1)
            assert during.data == "during" and "." in during.last_event_id
            raw.delete(KEY)
            wait_until(lambda: a.service.backplane.stats()["connected"], what="reading again")
            wait_until(lambda: b.service.backplane.stats()["connected"], what="reading again")
            a.service.broadcaster.broadcast("after")
            assert ca.wait_events(2)[1].data == "after"
            assert [e.data for e in cb.wait_events(1)] == ["after"]
            stats = a.service.backplane.stats()
            assert stats["reconnects"] == 0 and stats["errors"] >= 1
    refusals = [x for x in log if "Redis refused to read stream" in x]
    assert refusals and all("WRONGTYPE" in x for x in refusals), log
    assert any("reading Redis stream" in x for x in log), log
    assert not any("unreachable" in x or "reconnected" in x for x in log), log


def test_one_round_trip_keeps_what_redis_took_and_returns_what_it_refused(
    redis_server: RedisServer,
) -> None:
    """An append whose pipeline Redis partly refuses raises with the refused runs only."""
    from wsgi_sse._shared import AppendRefusedError
    from wsgi_sse.redis import RedisBackplane

    raw = redis_server.client()
    raw.config_set("maxmemory-policy", "noeviction")
    raw.config_set("maxmemory", raw.info("memory")["used_memory"] + 2_000_000)
    backplane = RedisBackplane(redis_server.url)
    first = (1, "default", [encode_body("first")])
    big = (2, "default", [encode_body("b" * 3_000_000)])
    last = (3, "default", [encode_body("last"), encode_body("last-2")])
    try:
        with pytest.raises(AppendRefusedError) as raised:
            backplane._append([first, big, last])
    finally:
        backplane._close()
    refusal = raised.value
    # The first XADD is run before the 3 MB one is read, which is refused.
    assert refusal.runs[0] == big and first not in refusal.runs
    assert refusal.error.startswith("OutOfMemoryError: ")
    taken = [first] if last in refusal.runs else [first, last]
    assert refusal.appended == sum(len(bodies) for _, _, bodies in taken)
    assert stored(raw) == [data for _, _, bodies in taken for data in _data(bodies)]


def _data(bodies: list[bytes]) -> list[str]:
    """The data lines of encoded bodies."""
    return [line[6:].decode() for body in bodies for line in body.splitlines()]
