"""
How many bytes one replay from a shared backplane gathers, against a real
redis-server and PostgreSQL: a replay whose bodies pass C{max_replay_bytes}
stops reading there and the client gets C{reset}, as one past
C{max_replay} does; a proxy in front of the server counts what the
process receives.
"""

from __future__ import annotations

from typing import Any

import pytest
from backplane_support import Backend, GatedProxy, redis_user
from redis_support import RedisServer
from support import RunningServer, serve, wait_until
from test_contract import server_on

from wsgi_sse.postgres import PostgresBackplane
from wsgi_sse.redis import RedisBackplane

SIZE = 100_000
COUNT = 30
# About ten of the events: a third of them.
BUDGET = 1_000_000
# Entries one read of a Redis replay asks for, in these tests: the replay
# of the last seven events (and the client's own entry) takes two reads.
PAGE = 7
# Room for every event queued to one client at once.
BUFFER = 64 << 20


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app with nothing to say."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def publish_large(server: RunningServer) -> list[str]:
    """
    Broadcast C{start}, then C{COUNT} events of C{SIZE} bytes
    (C{<n> xxx…}) through C{server}: the ids of all of them.
    """
    with server.stream() as live:
        server.wait_clients(1)
        server.service.broadcaster.broadcast_and_wait("start")
        for i in range(COUNT):
            server.service.broadcaster.broadcast_and_wait(f"{i} " + "x" * SIZE)
        events = live.wait_events(1 + COUNT, timeout=30)
    return [e.last_event_id for e in events]


def replay(server: RunningServer, last_id: str, count: int) -> list[tuple[str, str]]:
    """What a client reconnecting with C{last_id} is sent: (type, first word of data)."""
    with server.stream(headers={"Last-Event-ID": last_id}) as again:
        again.wait_events(count, timeout=30)
        again.read_some(0.3)
    return [(e.type, e.data.split(" ")[0]) for e in again.events]


def check_replays(server: RunningServer, proxy: GatedProxy, ids: list[str]) -> int:
    """
    With a budget of a third of the events: a replay of them all is cut
    (reset), one of the last seven is sent whole, in order, and
    C{max_replay} still counts its events.  Return the bytes received by
    the process during the cut replay.
    """
    backplane = server.service.backplane
    backplane.max_replay_bytes = BUDGET
    tail = [("message", str(i)) for i in range(COUNT - 7, COUNT)]
    received = proxy.received
    assert replay(server, ids[0], 1) == [("reset", "")]
    received = proxy.received - received
    assert replay(server, ids[COUNT - 7], len(tail)) == tail
    backplane.max_replay = len(tail) - 1
    assert replay(server, ids[COUNT - 7], 1) == [("reset", "")]
    backplane.max_replay = len(tail)
    assert replay(server, ids[COUNT - 7], len(tail)) == tail
    assert server.service.hub.stats.replay_resets == 2
    assert server.service.hub.stats.replays_fetched == 2
    return received


def test_a_replay_stops_at_its_bytes(
    shared_backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    30 events of 100 kB, replayed by a process that started after them,
    with a budget of 1 MB: the replay of them all reads little more than
    the budget and gives the client C{reset}; the replay of the last seven
    (in two reads from Redis) is sent whole, in order.
    """
    monkeypatch.setattr("wsgi_sse._redis._REPLAY_PAGE", PAGE, raising=False)
    with server_on(shared_backend) as a:
        ids = publish_large(a)
    with (
        GatedProxy(shared_backend.server.port) as proxy,
        serve(app, backplane_url=proxy.url_for(shared_backend.url), max_buffer=BUFFER) as c,
    ):
        proxy.open()
        wait_until(lambda: c.service.backplane.connected, what="connected")
        received = check_replays(c, proxy, ids)
    print(f"\na cut replay of {COUNT} events of {SIZE:,} bytes: {received:,} bytes received")
    # The budget, the event that passes it, and the rest of the answers.
    assert received < BUDGET + SIZE + 50_000


def test_without_scripts_a_replay_stops_at_its_bytes(
    session_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    Where an ACL refuses scripts, a replay reads the stream with XRANGE in
    pages, and stops once its bodies pass the budget: C{reset}; one under
    the budget is sent whole, in order.
    """
    monkeypatch.setattr("wsgi_sse._redis._REPLAY_PAGE", PAGE, raising=False)
    backend = Backend("redis", session_redis)
    backend.clean()
    with redis_user(session_redis) as url:
        with server_on(backend) as a:
            ids = publish_large(a)
        with (
            GatedProxy(session_redis.port) as proxy,
            serve(app, backplane_url=proxy.url_for(url), max_buffer=BUFFER) as c,
        ):
            proxy.open()
            wait_until(lambda: c.service.backplane.connected, what="connected")
            received = check_replays(c, proxy, ids)
    print(f"\nwithout scripts: {received:,} bytes received")
    # At most one read past the budget.
    assert received < BUDGET + PAGE * SIZE + 50_000


def test_a_batch_of_replays_stops_at_its_bytes(shared_backend: Backend) -> None:
    """
    Replays of different last ids answered together (one batch) hold the
    budget together: once the answers' bodies pass it, the batch stops and
    the other ids are answered in the next one, whole and in order.
    """
    with server_on(shared_backend) as a:
        ids = publish_large(a)
    with serve(app, backplane_url=shared_backend.url, max_buffer=BUFFER) as c:
        backplane = c.service.backplane
        wait_until(lambda: backplane.connected, what="connected")
        backplane.max_replay_bytes = BUDGET
        batches: list[tuple[int, int, int]] = []
        fetch_many = backplane._fetch_many

        def recording(requests: list[tuple[str, int]]) -> Any:
            answers = fetch_many(requests)
            held = sum(len(e.body) for answer in answers for e in answer.entries)
            batches.append((len(requests), len(answers), held))
            return answers

        backplane._fetch_many = recording
        # The last 3 events first (a batch of its own, while the others
        # queue), then the last 7, 6, 5 and 4: 2.2 MB in one batch.
        wanted = [COUNT - 3, COUNT - 7, COUNT - 6, COUNT - 5, COUNT - 4]

        def fetch_all() -> list[Any]:
            return [backplane.fetch_after(backplane.parse_id(ids[n]), ids[n]) for n in wanted]

        answers: list[Any] = []
        for fetching in c.call(fetch_all):
            fetching.addCallback(answers.append)
        wait_until(lambda: len(answers) == len(wanted), timeout=30, what="every replay")
    got = {a.entries[0].body: [e.body.split(b" ")[1] for e in a.entries] for a in answers}
    for n in wanted:
        first = next(body for body in got if body.startswith(b"data: %d " % n))
        assert got[first] == [b"%d" % i for i in range(n, COUNT)]
        assert not next(a for a in answers if a.entries[0].body == first).truncated
    assert [answered < asked for asked, answered, _ in batches] == [False, True, False]
    # One answer past the budget at most: the last 7 events and the last 6.
    assert max(held for _, _, held in batches) < BUDGET + 7 * SIZE


@pytest.mark.parametrize(
    ("kind", "url"),
    [
        (RedisBackplane, "redis://127.0.0.1:1/0"),
        (PostgresBackplane, "postgresql://u@127.0.0.1:1/db"),
    ],
)
def test_max_replay_bytes_must_be_positive(kind: type, url: str) -> None:
    """C{max_replay_bytes} is 64 MiB unless given; zero is refused."""
    with pytest.raises(ValueError, match="max_replay_bytes"):
        kind(url, max_replay_bytes=0)
    assert kind(url).max_replay_bytes == 64 << 20
