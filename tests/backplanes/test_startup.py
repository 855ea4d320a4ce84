"""
A process started beside others takes connections once it reads the shared
history: a stream it opens gets every event published after it opened, by
any process.  Real servers, a real redis-server and PostgreSQL, with a
proxy in front of the backplane that holds its answers back.
"""

from __future__ import annotations

import threading
from typing import Any

from backplane_support import Backend, GatedProxy
from support import RunningServer, StreamClient, serve, wait_until
from test_contract import app, connected, server_on


def open_in_thread(server: RunningServer) -> tuple[threading.Thread, dict[str, StreamClient]]:
    """Open a stream on C{server} in a thread of its own: it ends once the head arrived."""
    box: dict[str, StreamClient] = {}

    def run() -> None:
        box["client"] = server.stream()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def data(client: StreamClient, last: str) -> list[str]:
    """Read until the event C{last} arrives; every event's data."""
    client.wait_for(lambda c: any(e.data == last for e in c.events))
    return [e.data for e in client.events]


def test_a_stream_opens_once_its_process_reads_the_shared_history(
    shared_backend: Backend,
) -> None:
    """
    Until its reader has its position, a process leaves connections in the
    listen backlog: an event another process publishes meanwhile is before
    the stream opened, and every event after the opening reaches it.
    """
    with (
        server_on(shared_backend) as a,
        GatedProxy(shared_backend.server.port) as proxy,
        serve(app, backplane_url=proxy.url_for(shared_backend.url)) as b,
    ):
        thread, box = open_in_thread(b)
        thread.join(0.5)
        opened_early = not thread.is_alive()
        a.service.broadcaster.broadcast_and_wait("before")
        proxy.open()
        thread.join(10)
        assert not thread.is_alive(), "the stream never opened"
        with box["client"] as client:
            b.wait_clients(1)
            a.service.broadcaster.broadcast_and_wait("after")
            got = data(client, "after")
            assert got == (["before", "after"] if opened_early else ["after"])
            assert not opened_early, "the stream opened before its process read the history"
            assert connected(b)


def test_a_backplane_that_never_answers_delays_connections_by_twice_its_timeout(
    session_redis: Any,
) -> None:
    """
    A backplane that takes the connection but never answers holds the
    connections back for twice its timeout, no longer: streams then open,
    get this process's own events, and the shared ones once it answers.
    """
    from twisted.internet import reactor

    from wsgi_sse import Hub
    from wsgi_sse.redis import RedisBackplane

    Backend("redis", session_redis).clean()
    with (
        server_on(Backend("redis", session_redis)) as a,
        GatedProxy(session_redis.port) as proxy,
    ):
        # Its first read would fail only after timeout + block = 10.5 s.
        backplane = RedisBackplane(
            proxy.url_for(session_redis.url), timeout=0.5, block=10, reactor=reactor
        )
        with serve(app, hub=Hub(backplane=backplane, clock=reactor)) as b:
            thread, box = open_in_thread(b)
            thread.join(5)
            assert not thread.is_alive(), "still waiting for the backplane"
            assert not connected(b)
            with box["client"] as client:
                b.wait_clients(1)
                b.service.broadcaster.broadcast("own")
                assert data(client, "own") == ["own"]
                proxy.open()
                wait_until(lambda: connected(b), timeout=30, what="connected")
                a.service.broadcaster.broadcast_and_wait("shared")
                assert data(client, "shared") == ["own", "shared"]
