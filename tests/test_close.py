"""close(channel) in the hub and the broadcaster, on values (no sockets)."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from wsgi_sse import Broadcaster, Hub
from wsgi_sse._backplane import Entry, Fetched
from wsgi_sse._hub import CLOSE_BODY
from wsgi_sse.redis import RedisBackplane


class Sub:
    """A subscriber that records what it is sent and whether it was ended."""

    def __init__(self) -> None:
        self.wires: list[bytes] = []
        self.ended = 0

    def send(self, wire: bytes) -> None:
        self.wires.append(wire)

    def end(self) -> None:
        self.ended += 1


def test_close_sends_its_id_ends_subscribers_and_is_kept() -> None:
    """A close sends only its id, ends the channel's subscribers, and is replayed as an end."""
    hub = Hub(clock=Clock(), instance_id="t")
    a, b, other = Sub(), Sub(), Sub()
    hub.subscribe(a, ["job"])
    hub.subscribe(b, ["job", "news"])
    hub.subscribe(other, ["news"])
    hub.publish("job", b"data: 1\n")
    assert hub.publish("job", CLOSE_BODY) == 2
    assert (a.ended, b.ended, other.ended) == (1, 1, 0)
    assert a.wires == [b"id: t-1\ndata: 1\n\n", b"id: t-2\n\n"]
    assert hub.subscriber_count("job") == 0
    # Ended streams are unsubscribed from all their channels.
    assert hub.subscriber_count("news") == 1
    assert hub.publish("news", b"data: n\n") == 1
    assert len(b.wires) == 2
    replayed = hub.replay(["job"], "t-0") or []
    assert [(e.id, e.closes) for e in replayed] == [("t-1", False), ("t-2", True)]
    assert hub.replay(["job"], "t-2") == []
    # Later subscribers are not affected.
    late = Sub()
    hub.subscribe(late, ["job"])
    assert hub.publish("job", b"data: 2\n") == 1 and late.ended == 0


def test_publish_many_closes_after_the_events_before_it() -> None:
    """A close body in a batch ends streams after the earlier events; later ones go to no one."""
    hub = Hub(clock=Clock(), instance_id="t")
    a = Sub()
    hub.subscribe(a, ["job"])
    hub.publish_many("job", [b"data: 1\n", b"data: 2\n", CLOSE_BODY, b"data: 4\n"])
    assert b"".join(a.wires) == b"id: t-1\ndata: 1\n\nid: t-2\ndata: 2\n\nid: t-3\n\n"
    assert a.ended == 1
    assert [e.id for e in hub.replay(["job"], "t-0") or []] == ["t-1", "t-2", "t-3", "t-4"]


def test_broadcaster_close_keeps_order_with_queued_broadcasts() -> None:
    """Broadcaster.close() from a thread is queued behind that thread's broadcasts."""
    calls: list[object] = []

    class Reactor:
        def callFromThread(self, f: object, *args: object) -> None:
            calls.append((f, args))

        def callLater(self, delay: float, f: object, *args: object) -> None:
            calls.append((f, args))

    hub = Hub(clock=Clock(), instance_id="t")
    a = Sub()
    hub.subscribe(a, ["job"])
    broadcaster = Broadcaster(hub, reactor=Reactor())
    broadcaster.broadcast("one", channel="job")
    broadcaster.broadcast("two", channel="job")
    broadcaster.close("job")
    assert a.wires == [] and a.ended == 0
    assert len(calls) == 1  # one hand-off for the batch
    while calls:  # the reactor's turns
        drain, args = calls.pop(0)
        drain(*args)  # type: ignore[operator]
    assert b"".join(a.wires) == b"id: t-1\ndata: one\n\nid: t-2\ndata: two\n\nid: t-3\n\n"
    assert a.ended == 1


def _pos(redis_id: str) -> int:
    position = RedisBackplane("redis://unused").parse_id(redis_id)
    assert position is not None
    return position


def entry(rid: str, channel: str, body: bytes) -> Entry:
    """An entry as the Redis reader hands it to the hub."""
    return Entry(_pos(rid), rid, channel, body)


class CannedBackplane(RedisBackplane):
    """A Redis backplane (not started) whose fetches get a canned answer."""

    def __init__(self, fetched: Any) -> None:
        super().__init__("redis://unused")
        self.fetched = fetched

    def fetch_after(self, position: int, event_id: str) -> Any:
        from twisted.internet.defer import succeed

        return succeed(self.fetched)


def test_redis_delivered_close_ends_streams_in_stream_order() -> None:
    """A close read from the Redis stream ends streams after the entries before it."""
    hub = Hub(clock=Clock(), instance_id="p1", backplane=RedisBackplane("redis://unused"))
    hub.start_at(0, "0-0")
    a = Sub()
    hub.subscribe(a, ["job"])
    counts = hub.deliver_batch(
        [
            entry("1-0", "job", b"data: 1\n"),
            entry("2-0", "job", CLOSE_BODY),
            entry("3-0", "job", b"data: 3\n"),
        ]
    )
    assert counts == [1, 1, 0]
    assert a.wires == [b"id: 1-0\ndata: 1\n\n", b"id: 2-0\n\n"] and a.ended == 1
    # Delivered again (a reader that re-read the stream): nothing happens twice.
    assert hub.deliver_batch([entry("2-0", "job", CLOSE_BODY)]) == [0]
    assert a.ended == 1


def test_replay_from_redis_ends_at_a_close_in_the_stream() -> None:
    """A replay read from Redis stops at a close of the channel and ends the stream."""
    entries = [
        entry("2-0", "job", b"data: 2\n"),
        entry("3-0", "job", CLOSE_BODY),
        entry("4-0", "job", b"data: 4\n"),
    ]
    backplane = CannedBackplane(Fetched(True, entries, entries[-1].position, "4-0", False))
    hub = Hub(clock=Clock(), instance_id="p2", backplane=backplane)
    hub.start_at(_pos("4-0"), "4-0")
    sub = Sub()
    hub.join(sub, ["job"], "1-0")
    assert b"".join(sub.wires) == b"id: 2-0\ndata: 2\n\nid: 3-0\n\n"
    assert sub.ended == 1 and hub.subscriber_count() == 0 and hub.held_count() == 0


def test_replay_from_redis_ends_at_a_close_this_process_delivered() -> None:
    """A replay from Redis followed by a close in this process's own history ends there."""
    entries = [entry("2-0", "job", b"data: 2\n")]
    backplane = CannedBackplane(Fetched(True, entries, entries[-1].position, "2-0", False))
    hub = Hub(clock=Clock(), instance_id="p3", backplane=backplane)
    hub.start_at(_pos("2-0"), "2-0")
    hub.deliver_batch([entry("3-0", "job", CLOSE_BODY)])
    sub = Sub()
    hub.join(sub, ["job"], "1-0")
    assert b"".join(sub.wires) == b"id: 2-0\ndata: 2\n\nid: 3-0\n\n"
    assert sub.ended == 1 and hub.subscriber_count() == 0
