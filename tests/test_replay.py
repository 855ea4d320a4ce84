"""Replay over real sockets: Last-Event-ID, lastEventId, reset, and the initial hook."""

from __future__ import annotations

import threading
import time
from typing import Any

from support import StreamClient, serve

from wsgi_sse import Hub, StreamRequest


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def seq(event_id: str) -> int:
    """The sequence number of a hub-issued id."""
    return int(event_id.rsplit("-", 1)[1])


def test_reconnects_during_concurrent_broadcasts_miss_nothing() -> None:
    """Reconnecting mid-stream with Last-Event-ID, 4 times, sees all 1,000 events once, in order."""
    total = 1000
    with serve(app) as server:
        bc = server.service.broadcaster
        progress = [0]
        client = server.stream("/sse?channel=live")
        server.wait_clients(1)

        def publish() -> None:
            for i in range(total):
                bc.broadcast(str(i), channel="live")
                progress[0] = i + 1
                if i % 10 == 9:
                    time.sleep(0.005)

        publisher = threading.Thread(target=publish)
        publisher.start()
        received: list[tuple[str, str]] = []
        reconnects_at: list[int] = []
        try:
            for threshold in (100, 300, 550, 800):
                client.wait_events(threshold - len(received), timeout=30)
                received.extend((e.last_event_id, e.data) for e in client.events)
                reconnects_at.append(progress[0])
                client.close()
                client = server.stream(
                    "/sse?channel=live", headers={"Last-Event-ID": received[-1][0]}
                )
            client.wait_events(total - len(received), timeout=30)
            received.extend((e.last_event_id, e.data) for e in client.events)
        finally:
            publisher.join()
            client.close()
        assert [data for _, data in received] == [str(i) for i in range(total)]
        ids = [seq(i) for i, _ in received]
        assert ids == sorted(set(ids))
        # The reconnections really happened while events were being published.
        assert all(0 < n < total for n in reconnects_at[:2]), reconnects_at
        stats = server.call(server.service.sse_resource.snapshot)
        assert stats["replays"] == 4 and stats["resets"] == 0


def test_last_event_id_query_parameter_replays() -> None:
    """A first connection with ?lastEventId= gets what followed that id, then live events."""
    with serve(app) as server:
        bc = server.service.broadcaster
        for i in range(5):
            bc.broadcast_and_wait(f"old {i}")
        first_id = server.call(lambda: server.service.hub.last_id)
        for i in range(3):
            bc.broadcast_and_wait(f"missed {i}")
        with server.stream(f"/sse?lastEventId={first_id}") as client:
            server.wait_clients(1)
            bc.broadcast_and_wait("live")
            events = client.wait_events(4)
            assert [e.data for e in events] == ["missed 0", "missed 1", "missed 2", "live"]
            assert all(e.type == "message" for e in events)


def test_header_wins_over_query_parameter() -> None:
    """When both are given the Last-Event-ID header is the one used."""
    with serve(app) as server:
        bc = server.service.broadcaster
        bc.broadcast_and_wait("a")
        after_a = server.call(lambda: server.service.hub.last_id)
        bc.broadcast_and_wait("b")
        with server.stream(
            "/sse?lastEventId=nonsense", headers={"Last-Event-ID": after_a}
        ) as client:
            assert [e.data for e in client.wait_events(1)] == ["b"]


def _wait_reset(client: StreamClient) -> None:
    client.wait_for(lambda c: any(e.type == "reset" for e in c.events))


def test_unknown_id_gets_one_reset_then_live() -> None:
    """An id this server never issued gets exactly one reset event (no id), then live events."""
    with serve(app) as server:
        bc = server.service.broadcaster
        bc.broadcast_and_wait("before")
        with server.stream(headers={"Last-Event-ID": "someone-else-17"}) as client:
            _wait_reset(client)
            server.wait_clients(1)
            bc.broadcast_and_wait("after")
            events = client.wait_events(2)
            assert [(e.type, e.data) for e in events] == [("reset", ""), ("message", "after")]
            assert events[0].last_event_id == ""
            assert "id" not in client.parser.fields_seen[: client.parser.fields_seen.index("data")]
        stats = server.call(server.service.sse_resource.snapshot)
        assert (stats["resets"], stats["replays"]) == (1, 0)


def test_id_older_than_history_count_resets() -> None:
    """An id whose successors left the history (count cap) resets; one still covered replays."""
    with serve(app, history_size=5) as server:
        bc = server.service.broadcaster
        bc.broadcast_and_wait("0")
        oldest = server.call(lambda: server.service.hub.last_id)
        for i in range(1, 10):
            bc.broadcast_and_wait(str(i))
        with server.stream(headers={"Last-Event-ID": oldest}) as client:
            _wait_reset(client)
            assert [e.type for e in client.events] == ["reset"]
        # Ids start at 1: "-5" is the event "4", the last one evicted.
        recent = f"{server.service.hub.instance_id}-5"
        with server.stream(headers={"Last-Event-ID": recent}) as client:
            assert [e.data for e in client.wait_events(5)] == ["5", "6", "7", "8", "9"]


def test_id_older_than_history_age_resets() -> None:
    """An id whose successors expired (age cap) resets."""
    with serve(app, history_age=0.2) as server:
        bc = server.service.broadcaster
        bc.broadcast_and_wait("0")
        first = server.call(lambda: server.service.hub.last_id)
        bc.broadcast_and_wait("1")
        time.sleep(0.4)
        with server.stream(headers={"Last-Event-ID": first}) as client:
            _wait_reset(client)
            assert [e.type for e in client.events] == ["reset"]


def test_multi_channel_replay_merges_in_publish_order() -> None:
    """Replay over several channels interleaves their events by id, skipping other channels."""
    with serve(app) as server:
        bc = server.service.broadcaster
        bc.broadcast_and_wait("start", channel="a")
        start = server.call(lambda: server.service.hub.last_id)
        plan = ["a", "b", "c", "b", "a", "a", "c", "b"]
        for i, ch in enumerate(plan):
            bc.broadcast_and_wait(f"{ch}{i}", channel=ch)
        with server.stream("/sse?channel=a&channel=b", headers={"Last-Event-ID": start}) as client:
            expected = [f"{ch}{i}" for i, ch in enumerate(plan) if ch != "c"]
            events = client.wait_events(len(expected))
            assert [e.data for e in events] == expected
            ids = [seq(e.last_event_id) for e in events]
            assert ids == sorted(ids)


def test_initial_hook_sends_init_then_events_published_meanwhile() -> None:
    """The init event comes first (in a pool thread), then what was published while it ran."""
    started, release = threading.Event(), threading.Event()
    seen: list[tuple[str, StreamRequest]] = []

    def initial(request: StreamRequest) -> object:
        seen.append((threading.current_thread().name, request))
        started.set()
        assert release.wait(10)
        return {"snapshot": [1, 2, 3]}

    with serve(app, initial=initial) as server:
        bc = server.service.broadcaster
        bc.broadcast_and_wait("before connect", channel="room")
        mark = server.call(lambda: server.service.hub.last_id)
        # The response head only comes once the hook returns: open it aside.
        opened: list[StreamClient] = []
        opener = threading.Thread(
            target=lambda: opened.append(server.stream("/sse?channel=room&user=ada"))
        )
        opener.start()
        assert started.wait(10)
        bc.broadcast_and_wait("during 1", channel="room")
        bc.broadcast_and_wait("elsewhere", channel="other")
        bc.broadcast_and_wait("during 2", channel="room")
        release.set()
        opener.join()
        with opened[0] as client:
            server.wait_clients(1)
            bc.broadcast_and_wait("after", channel="room")
            events = client.wait_events(4)
            assert [(e.type, e.data) for e in events] == [
                ("init", '{"snapshot":[1,2,3]}'),
                ("message", "during 1"),
                ("message", "during 2"),
                ("message", "after"),
            ]
            assert events[0].last_event_id == mark
            stats = server.call(server.service.sse_resource.snapshot)
            assert (stats["replays"], stats["resets"]) == (0, 0)  # a new page: neither
        thread_name, request = seen[0]
        assert "wsgi" in thread_name
        assert request.channels == ("room",)
        assert request.query["user"] == ("ada",)
        assert request.last_event_id is None


def test_initial_hook_skipped_on_exact_resume_and_run_after_reset() -> None:
    """A resuming client gets a replay and no init; an unknown id gets reset then init."""
    calls: list[str | None] = []

    def initial(request: StreamRequest) -> object:
        calls.append(request.last_event_id)
        return "state"

    with serve(app, initial=initial) as server:
        bc = server.service.broadcaster
        bc.broadcast_and_wait("x")
        known = server.call(lambda: server.service.hub.last_id)
        bc.broadcast_and_wait("y")
        with server.stream(headers={"Last-Event-ID": known}) as client:
            assert [(e.type, e.data) for e in client.wait_events(1)] == [("message", "y")]
        with server.stream(headers={"Last-Event-ID": "gone-3"}) as client:
            events = client.wait_events(2)
            assert [(e.type, e.data) for e in events] == [("reset", ""), ("init", "state")]
        assert calls == ["gone-3"]
        stats = server.call(server.service.sse_resource.snapshot)
        assert (stats["replays"], stats["resets"]) == (1, 1)


def test_history_lost_while_the_authorize_hook_runs_gets_reset_then_init() -> None:
    """
    A page resuming from an id the history still held when it connected, whose
    missed events leave the history while its authorize hook runs, gets
    reset then init (from then on), as a page whose id was already too old.
    """
    started, release = threading.Event(), threading.Event()
    calls: list[str] = []

    def authorize(request: StreamRequest) -> bool:
        calls.append("authorize")
        if request.query.get("slow"):
            started.set()
            assert release.wait(10)
        return True

    def initial(request: StreamRequest) -> object:
        calls.append("initial")
        return "state"

    with serve(app, history_size=5, authorize=authorize, initial=initial) as server:
        bc = server.service.broadcaster
        bc.broadcast_and_wait("seen", channel="q")
        known = server.call(lambda: server.service.hub.last_id)
        opened: list[StreamClient] = []
        opener = threading.Thread(
            target=lambda: opened.append(
                server.stream("/sse?channel=q&slow=1", headers={"Last-Event-ID": known})
            )
        )
        opener.start()
        assert started.wait(10)
        for n in range(20):
            bc.broadcast_and_wait(f"missed {n}", channel="q")
        mark = server.call(lambda: server.service.hub.last_id)
        release.set()
        opener.join()
        with opened[0] as client:
            server.wait_clients(1)
            bc.broadcast_and_wait("after", channel="q")
            client.wait_for(lambda c: any(e.data == "after" for e in c.events))
            events = client.events
            assert [(e.type, e.data) for e in events] == [
                ("reset", ""),
                ("init", "state"),
                ("message", "after"),
            ]
            assert events[1].last_event_id == mark
        # The authorize hook ran once; the initial hook once, after it.
        assert calls == ["authorize", "initial"]
        stats = server.call(server.service.sse_resource.snapshot)
        assert (stats["replays"], stats["resets"]) == (0, 1)


def test_hook_that_fails_is_a_transient_refusal() -> None:
    """An initial hook that raises is a "retry later" refusal (a 500); nothing subscribed."""

    def initial(request: StreamRequest) -> object:
        raise RuntimeError("database down")

    with serve(app, initial=initial) as server:
        from support import http_request

        status, _, body = http_request(server.port, "GET", "/sse")
        assert status == 200 and b": stream hook failed\nretry: " in body
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0
        assert server.call(server.service.sse_resource.snapshot)["refused"] == {"500": 1}


def test_fresh_hub_ids_from_previous_run_reset() -> None:
    """Ids of another hub instance (a previous run) are never replayed."""
    old = Hub(instance_id="old")
    assert old.publish("default", b"data: x\n") == 0
    with serve(app) as server:
        server.service.broadcaster.broadcast_and_wait("new")
        with server.stream(headers={"Last-Event-ID": old.last_id}) as client:
            _wait_reset(client)
            assert [e.type for e in client.events] == ["reset"]
