"""
The backplane contract: what every backplane guarantees, checked against
the in-process one, a real redis-server and a real PostgreSQL, with real
servers on loopback ports read by a raw-socket client.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from backplane_support import Backend
from support import RunningServer, serve, wait_until


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app with nothing to say."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def connected(server: RunningServer) -> bool:
    """Whether a server's shared backplane is connected (always, in-process)."""
    backplane = server.service.backplane
    return backplane is None or bool(backplane.stats()["connected"])


@contextlib.contextmanager
def server_on(backend: Backend, **kwargs: Any) -> Iterator[RunningServer]:
    """A server using C{backend}, connected to it."""
    with serve(app, backplane_url=backend.url, **kwargs) as server:
        wait_until(lambda: connected(server), what="connected")
        yield server


def position(server: RunningServer, event_id: str) -> int:
    """The backplane position of a wire id (ids compare by it)."""
    found = server.service.hub._position(event_id)
    assert found is not None, event_id
    return int(found[0])


def publish_from_thread(server: RunningServer, tag: str, n: int) -> threading.Thread:
    """Broadcast C{tag}:0..n-1 from a thread of its own (as a WSGI view would)."""

    def run() -> None:
        for i in range(n):
            server.service.broadcaster.broadcast(f"{tag}:{i}")
            if i % 25 == 24:
                time.sleep(0.002)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_every_process_sees_the_same_ids_in_the_same_order(shared_backend: Backend) -> None:
    """Two processes publishing at once: both clients get every event once, same ids, one order."""
    with server_on(shared_backend) as a, server_on(shared_backend) as b:
        with a.stream() as ca, b.stream() as cb:
            a.wait_clients(1)
            b.wait_clients(1)
            threads = [publish_from_thread(a, "a", 200), publish_from_thread(b, "b", 200)]
            for thread in threads:
                thread.join()
            got_a = [(e.data, e.last_event_id) for e in ca.wait_events(400, timeout=30)]
            got_b = [(e.data, e.last_event_id) for e in cb.wait_events(400, timeout=30)]
        assert got_a == got_b
        assert len({i for _, i in got_a}) == 400
        for tag in "ab":
            assert [d for d, _ in got_a if d[0] == tag] == [f"{tag}:{i}" for i in range(200)]
        positions = [position(a, i) for _, i in got_a]
        assert positions == sorted(positions)
        print(f"\n{shared_backend.kind}: 400 events from 2 processes, one order in both")


def test_a_tagged_stream_reset_then_closed_resumes_from_where_it_went_on(
    any_backend: Backend,
) -> None:
    """
    After a reset, a channel-tagged stream (the browser client) is told
    where it goes on from; closed before its next event, it resumes from
    there: what was published meanwhile is replayed, with no second reset.
    """
    tagged = "/sse?channel=a&channelInId=1"
    with server_on(any_backend, history_size=2) as a:
        with a.stream(tagged) as client:
            a.wait_clients(1)
            for i in range(5):
                a.service.broadcaster.broadcast(f"e{i}", channel="a")
            events = client.wait_events(6)[1:]
        first = events[0].last_event_id
        any_backend.forget_up_to(events[1].last_event_id.split(" ")[0])
    with server_on(any_backend) as b:
        for n, lost in enumerate(("garbage", first)):
            with b.stream(tagged, headers={"Last-Event-ID": lost}) as client:
                reset, start = client.wait_events(2)
                assert (reset.type, reset.last_event_id) == ("reset", ""), client.body
                assert start.type == "wsgi-sse:position" and start.data == ""
                b.wait_clients(1)
            b.wait_clients(0)
            b.service.broadcaster.broadcast_and_wait(f"meanwhile{n}", channel="a")
            with b.stream(tagged, headers={"Last-Event-ID": start.last_event_id}) as again:
                (event,) = again.wait_events(1)
                assert (event.type, event.data) == ("message", f"meanwhile{n}")
                assert event.last_event_id.endswith(" a")
        assert b.service.sse_resource.stats.resets + b.service.hub.stats.replay_resets == 2


def test_client_moving_to_a_process_started_later_replays_exactly(
    shared_backend: Backend,
) -> None:
    """A client reconnecting to a process that never saw its events gets exactly the missed ones."""
    with server_on(shared_backend) as a:
        with a.stream("/sse?channel=x&channel=y") as client:
            a.wait_clients(1)
            for i in range(3):
                a.service.broadcaster.broadcast(f"seen{i}", channel="xy"[i % 2])
            seen = client.wait_events(3)
        for i in range(5):
            # Shared before the late process starts: it starts reading after
            # them, so only a fetch from the backplane can replay them.
            a.service.broadcaster.broadcast_and_wait(f"missed{i}", channel="xyz"[i % 3])
        with server_on(shared_backend) as late:
            last = seen[-1].last_event_id
            with late.stream("/sse?channel=x&channel=y", headers={"Last-Event-ID": last}) as again:
                late.wait_clients(1)
                late.service.broadcaster.broadcast("live", channel="y")
                events = again.wait_events(5)
                assert [e.data for e in events] == [
                    "missed0",
                    "missed1",
                    "missed3",
                    "missed4",
                    "live",
                ]
                ids = [e.last_event_id for e in events]
                assert len(set(ids)) == 5 and position(late, ids[0]) > position(late, last)
            assert late.service.hub.stats.replays_fetched == 1


def test_unknown_and_expired_ids_get_reset_then_live(any_backend: Backend) -> None:
    """Garbage, never-issued and no-longer-kept ids each get one reset event, then live events."""
    with server_on(any_backend, history_size=2) as a:
        with a.stream() as client:
            a.wait_clients(1)
            for i in range(5):
                a.service.broadcaster.broadcast(f"e{i}")
            events = client.wait_events(5)
        first = events[0].last_event_id
        any_backend.forget_up_to(events[1].last_event_id)
        never = {"local": f"{a.service.hub.instance_id}-999999", "redis": "1-0"}.get(
            any_backend.kind, "999999"
        )
    # A process started after the events: only the backplane could replay them.
    with server_on(any_backend) as b:
        for lost in ("garbage", never, first):
            with b.stream(headers={"Last-Event-ID": lost}) as client:
                (reset,) = client.wait_events(1)
                assert reset.type == "reset" and reset.last_event_id == "", (lost, client.body)
                b.wait_clients(1)
                b.service.broadcaster.broadcast("new")
                assert [e.data for e in client.wait_events(2)[1:]] == ["new"]
            b.wait_clients(0)
        assert b.service.sse_resource.stats.resets + b.service.hub.stats.replay_resets == 3


def test_outage_local_delivery_then_recovery(shared_backend: Backend) -> None:
    """Backplane down: local clients still get events (local ids, replayable here); back: shared."""
    with server_on(shared_backend) as a, server_on(shared_backend) as b:
        with a.stream() as ca, b.stream() as cb:
            a.wait_clients(1)
            b.wait_clients(1)
            a.service.broadcaster.broadcast("before")
            (before,) = ca.wait_events(1)
            cb.wait_events(1)
            shared_backend.stop()
            try:
                wait_until(lambda: not connected(a), what="outage noticed")
                a.service.broadcaster.broadcast("during-1")
                a.service.broadcaster.broadcast("during-2")
                events = ca.wait_events(3)
                assert [e.data for e in events] == ["before", "during-1", "during-2"]
                local_id = events[1].last_event_id
                assert local_id.startswith(before.last_event_id + ".")
                with a.stream(headers={"Last-Event-ID": local_id}) as again:
                    assert [e.data for e in again.wait_events(1)] == ["during-2"]
            finally:
                shared_backend.start()
            wait_until(lambda: connected(a) and connected(b), timeout=30, what="reconnected")
            a.service.broadcaster.broadcast("after")
            after_a = ca.wait_events(4)[3]
            after_b = cb.wait_events(2)[1]
            assert after_a.data == after_b.data == "after"
            assert after_a.last_event_id == after_b.last_event_id
            assert "." not in after_a.last_event_id
        stats = a.service.backplane.stats()
        assert stats["local_only"] == 2 and stats["reconnects"] >= 1


def test_reconnecting_clients_lose_nothing_and_see_nothing_twice(any_backend: Backend) -> None:
    """Reconnecting 4 times during 400 broadcasts (to the other process if shared): each once."""
    total = 400
    with server_on(any_backend) as a, server_on(any_backend) as b:
        servers = [a, b] if any_backend.shared else [a, a]
        received: list[tuple[str, str]] = []
        client = a.stream()
        a.wait_clients(1)
        publisher = publish_from_thread(a, "p", total)
        try:
            for n, threshold in enumerate((80, 160, 240, 320)):
                client.wait_events(threshold - len(received), timeout=30)
                received.extend((e.last_event_id, e.data) for e in client.events)
                client.close()
                client = servers[(n + 1) % 2].stream(headers={"Last-Event-ID": received[-1][0]})
            client.wait_events(total - len(received), timeout=30)
            received.extend((e.last_event_id, e.data) for e in client.events)
        finally:
            publisher.join()
            client.close()
        assert [data for _, data in received] == [f"p:{i}" for i in range(total)]
        assert len({i for i, _ in received}) == total


def test_a_stream_opened_through_hooks_starts_without_reset(any_backend: Backend) -> None:
    """With authorize and initial hooks, a new page gets init, then live events: never reset."""
    with server_on(
        any_backend, authorize=lambda request: True, initial=lambda request: {"n": 0}
    ) as a:
        with a.stream() as client:
            a.wait_clients(1)
            a.service.broadcaster.broadcast("live")
            events = client.wait_events(2)
        assert [(e.type, e.data) for e in events] == [("init", '{"n":0}'), ("message", "live")]
        # The init event's id is a position a client can resume from here.
        with a.stream(headers={"Last-Event-ID": events[0].last_event_id}) as again:
            assert [e.data for e in again.wait_events(1)] == ["live"]


def test_tagged_stream_moving_to_a_process_started_later_replays_exactly(
    shared_backend: Backend,
) -> None:
    """A channel-tagged stream (the shared-tabs client) resumes on another process, ids tagged."""
    tagged = "/sse?channel=x&channel=y&channelInId=1"
    with server_on(shared_backend) as a:
        with a.stream(tagged) as client:
            a.wait_clients(1)
            a.service.broadcaster.broadcast("seen", channel="x")
            start, seen = client.wait_events(2)
            assert start.type == "wsgi-sse:position"
        for i in range(5):
            a.service.broadcaster.broadcast(f"missed{i}", channel="xyz"[i % 3])
        with a.stream(tagged, headers={"Last-Event-ID": seen.last_event_id}) as here:
            expected = [(e.data, e.last_event_id) for e in here.wait_events(4)]
        with server_on(shared_backend) as late:
            with late.stream(tagged, headers={"Last-Event-ID": seen.last_event_id}) as again:
                late.wait_clients(1)
                late.service.broadcaster.broadcast("live", channel="y")
                again.wait_events(5)
                again.read_some(0.2)
                got = [(e.type, e.data, e.last_event_id) for e in again.events]
            assert late.service.hub.stats.replays_fetched == 1
            assert late.service.sse_resource.stats.resets == 0
    assert [(d, i) for _, d, i in got[:4]] == expected
    assert [(t, d, i.split(" ")[1]) for t, d, i in got] == [
        ("message", "missed0", "x"),
        ("message", "missed1", "y"),
        ("message", "missed3", "x"),
        ("message", "missed4", "y"),
        ("message", "live", "y"),
    ]
    ids = [i.split(" ")[0] for _, _, i in got]
    assert len(set(ids)) == 5 and position(a, ids[0]) > position(a, seen.last_event_id.split()[0])


def test_what_one_backplane_carries_every_backplane_carries(any_backend: Backend) -> None:
    """Arguments are refused alike by every backplane; what one delivers, every one delivers."""
    with server_on(any_backend, max_channel_length=1000) as a:
        broadcaster = a.service.broadcaster
        for refused in (
            {"channel": "c" * 1001},
            {"channel": "é" * 501},
            {"channel": "a\ud800"},
        ):
            with pytest.raises(ValueError):
                broadcaster.broadcast_and_wait(**{"data": "x", **refused})
        longest = "c" * 1000
        with a.stream(f"/sse?channel={longest}") as on_long, a.stream() as client:
            a.wait_clients(2)
            # Each is delivered (and answered) by the backplane, not lost on the way back.
            assert broadcaster.broadcast_and_wait("long", channel=longest) == 1
            assert broadcaster.broadcast_and_wait("later", retry=10**12) == 1
            largest = "x" * ((1 << 20) - len(b"data: \n"))
            assert broadcaster.broadcast_and_wait(largest) == 1
            # Larger than a shared backplane carries: delivered here only.
            assert broadcaster.broadcast_and_wait(largest + "x") == 1
            broadcaster.broadcast("last")
            assert [e.data for e in on_long.wait_events(1)] == ["long"]
            events = client.wait_events(4)
            assert [e.data for e in events] == ["later", largest, largest + "x", "last"]
        if a.service.backplane is not None:
            stats = a.service.backplane.stats()
            assert stats["malformed"] == 0 and stats["refused"] == stats["local_only"] == 1
