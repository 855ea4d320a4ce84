"""Timer logic on a fake clock: history age, pause-time drops, heartbeat cadence."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyChannel

from wsgi_sse import Hub, SSEResource
from wsgi_sse._client import StreamClient


def test_history_expires_by_age() -> None:
    """Events older than history_age leave the history; resuming before them resets."""
    clock = Clock()
    hub = Hub(clock=clock, history_age=10, instance_id="t")
    hub.publish("a", b"data: 1\n")  # t-1 at 0s
    clock.advance(5)
    hub.publish("a", b"data: 2\n")  # t-2 at 5s
    assert [e.id for e in hub.replay(["a"], "t-0") or []] == ["t-1", "t-2"]
    clock.advance(5)
    assert [e.id for e in hub.replay(["a"], "t-0") or []] == ["t-1", "t-2"]  # exactly 10s: kept
    clock.advance(0.5)
    assert hub.replay(["a"], "t-0") is None  # t-1 expired: cannot replay exactly
    assert [e.id for e in hub.replay(["a"], "t-1") or []] == ["t-2"]
    clock.advance(5)
    hub.prune()
    assert hub.replay(["a"], "t-1") is None
    assert hub.replay(["a"], "t-2") == []  # nothing was missed


def test_history_count_cap() -> None:
    """Only history_size events per channel are kept."""
    hub = Hub(clock=Clock(), history_size=2, instance_id="t")
    for i in range(4):
        hub.publish("a", b"data: %d\n" % i)
    assert hub.replay(["a"], "t-1") is None
    assert [e.id for e in hub.replay(["a"], "t-2") or []] == ["t-3", "t-4"]


class _Transport:
    """Records aborts."""

    def __init__(self) -> None:
        self.aborted = 0

    def abortConnection(self) -> None:
        self.aborted += 1


class _Request:
    """The little of a twisted.web Request that StreamClient uses."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.channel = type("Channel", (), {})()
        self.channel.transport = _Transport()

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def _client(clock: Clock, **kwargs: Any) -> tuple[StreamClient, _Request, list[str]]:
    request = _Request()
    drops: list[str] = []
    client = StreamClient(
        request,  # type: ignore[arg-type]
        channels=("a",),
        peer="192.0.2.1",
        clock=clock,
        max_buffer=kwargs.get("max_buffer", 1000),
        max_pause=kwargs.get("max_pause", 5.0),
        on_drop=lambda c, reason: drops.append(reason),
    )
    return client, request, drops


def test_pause_shorter_than_max_pause_is_forgiven() -> None:
    """A reader that resumes before max_pause gets the held events in one write and stays."""
    clock = Clock()
    client, request, drops = _client(clock)
    client.send(b"one\n\n")
    client.pauseProducing()
    client.send(b"two\n\n")
    client.send(b"three\n\n")
    assert client.held_bytes == 12 and request.writes == [b"one\n\n"]
    clock.advance(4.9)
    client.resumeProducing()
    assert request.writes == [b"one\n\n", b"two\n\nthree\n\n"]
    assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert drops == [] and not client.closed


def test_pause_longer_than_max_pause_drops() -> None:
    """A reader paused for max_pause seconds is aborted with reason 'stalled'."""
    clock = Clock()
    client, request, drops = _client(clock)
    client.pauseProducing()
    client.send(b"held\n\n")
    clock.advance(4.99)
    assert drops == []
    clock.advance(0.01)
    assert drops == ["stalled"]
    assert request.channel.transport.aborted == 1
    assert client.closed and client.discarded == 6
    client.send(b"late\n\n")
    client.resumeProducing()
    assert request.writes == []


def test_buffer_cap_drops_before_the_timer() -> None:
    """Holding more than max_buffer bytes aborts at once with reason 'buffer'; the timer is gone."""
    clock = Clock()
    client, request, drops = _client(clock, max_buffer=100)
    client.pauseProducing()
    client.send(b"x" * 60)
    assert drops == []
    client.send(b"y" * 60)
    assert drops == ["buffer"]
    assert request.channel.transport.aborted == 1
    assert clock.getDelayedCalls() == []


def _stream(resource: SSEResource) -> tuple[Request, DummyChannel]:
    channel = DummyChannel()
    request = Request(channel, False)
    request.method = b"GET"
    request.uri = request.path = b"/sse"
    request.args = {}
    request.clientproto = b"HTTP/1.1"
    request.prepath, request.postpath = [b"sse"], []
    assert resource.render(request) == NOT_DONE_YET
    return request, channel


def test_heartbeat_cadence() -> None:
    """A comment goes out every `heartbeat` seconds while clients are connected, then stops."""
    clock = Clock()
    resource = SSEResource(Hub(clock=clock), reactor=clock, heartbeat=15)
    request, channel = _stream(resource)
    written = channel.transport.written

    def beats() -> int:
        return written.getvalue().split(b"\n").count(b":")

    assert b"retry:" in written.getvalue() and beats() == 0
    clock.advance(14.9)
    assert beats() == 0
    clock.advance(0.1)
    assert beats() == 1
    clock.advance(15)
    clock.advance(15)
    assert beats() == 3
    assert b"id:" not in written.getvalue()
    request.connectionLost(Failure(ConnectionDone()))
    assert resource.clients == set()
    assert clock.getDelayedCalls() == []
    assert resource.snapshot()["disconnects"] == 1


def test_heartbeat_off() -> None:
    """heartbeat=0 schedules no heartbeat: only the stream log's summary is pending."""
    clock = Clock()
    resource = SSEResource(Hub(clock=clock), reactor=clock, heartbeat=0)
    _stream(resource)
    assert [call.func for call in clock.getDelayedCalls()] == [resource.streams._stream_log._fire]


def test_heartbeat_prunes_expired_history() -> None:
    """The heartbeat also drops expired history, so idle channels do not keep old events."""
    clock = Clock()
    hub = Hub(clock=clock, history_age=20, instance_id="t")
    resource = SSEResource(hub, reactor=clock, heartbeat=15)
    _stream(resource)
    hub.publish("other", b"data: x\n")
    clock.advance(15)
    assert "other" in hub._channels
    clock.advance(15)  # the event is 30s old at this beat
    assert "other" not in hub._channels


def test_subscriber_leaving_during_fan_out_without_history() -> None:
    """A subscriber that unsubscribes itself while being sent to (a slow-client drop) is safe."""
    hub = Hub(clock=Clock(), history_size=0, instance_id="t")

    class Leaver:
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def send(self, wire: bytes) -> None:
            self.got.append(wire)
            hub.unsubscribe(self)

    first, second = Leaver(), Leaver()
    hub.subscribe(first, ["a"])
    hub.subscribe(second, ["a"])
    assert hub.publish("a", b"data: x\n") == 2
    assert first.got and second.got
    assert hub.subscriber_count() == 0
    assert hub.publish("a", b"data: y\n") == 0
