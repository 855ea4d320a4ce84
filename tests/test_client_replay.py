"""
StreamClient on a consumer that pushes back, on a fake clock: a replay's
order, the cap and the stall timer, and the end of a stream whose reader
is behind.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from wsgi_sse._client import StreamClient


class PushingBackRequest:
    """A response that pauses its producer once C{window} bytes are unread, like a transport."""

    startedWriting = True
    chunked = False
    channel = None
    finished = False
    _disconnected = False

    def __init__(self, window: int) -> None:
        self.window = window
        self.written: list[bytes] = []
        self.unread = 0
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.unread += len(data)
        if self.unread > self.window:
            self.producer.pauseProducing()

    def drain(self) -> None:
        """The reader caught up: resume the producer, as a transport does."""
        self.read(self.unread)

    def read(self, n: int) -> None:
        """The reader takes C{n} bytes; once it has room, the producer resumes."""
        self.unread = max(self.unread - n, 0)
        if self.unread <= self.window:
            self.producer.resumeProducing()

    def unregisterProducer(self) -> None:
        self.producer = None

    def finish(self) -> None:
        self.finished = True


def make_client(window: int, **kwargs: Any) -> tuple[StreamClient, PushingBackRequest, list[str]]:
    """A client over a pushing-back response; drops are recorded."""
    request = PushingBackRequest(window)
    drops: list[str] = []
    options = {"max_buffer": 1000, "max_pause": 10.0} | kwargs
    client = StreamClient(
        request,  # type: ignore[arg-type]
        channels=("a",),
        peer="test",
        clock=kwargs.pop("clock", Clock()),
        max_buffer=options["max_buffer"],
        max_pause=options["max_pause"],
        on_drop=lambda _, reason: drops.append(reason),
    )
    request.producer = client
    return client, request, drops


def test_replay_stops_when_pushed_back_and_live_events_follow_it() -> None:
    """The replay is written as the reader drains; live events sent meanwhile come after it."""
    client, request, drops = make_client(window=1000)
    replay = [b"r%03d" % i + b"." * 1020 for i in range(200)]  # 200 KiB
    client.replay(replay, sum(map(len, replay)))
    assert client.paused and len(b"".join(request.written)) <= 65 * 1024
    client.send(b"live-1")
    client.send(b"live-2")
    while client.paused:
        request.drain()
    assert b"".join(request.written) == b"".join(replay) + b"live-1live-2"
    assert drops == []


def test_live_events_behind_a_replay_count_toward_max_buffer() -> None:
    """Past max_buffer of live events held behind an unread replay, the client is dropped."""
    client, _, drops = make_client(window=100, max_buffer=500)
    client.replay([b"x" * 1024] * 200, 200 * 1024)
    for _ in range(5):
        client.send(b"y" * 100)
    assert drops == [] and client.held_bytes == 500
    client.send(b"y")
    assert drops == ["buffer"] and client.closed
    # Discarded: the held live events and the part of the replay not written.
    assert client.discarded == 501 + 200 * 1024 - 64 * 1024


def test_a_replay_nobody_reads_is_dropped_after_max_pause() -> None:
    """A reader that never drains its replay is dropped as stalled after max_pause."""
    clock = Clock()
    client, _, drops = make_client(window=100, max_pause=5.0, clock=clock)
    client.replay([b"x" * 1024] * 200, 200 * 1024)
    clock.advance(4.9)
    assert drops == []
    clock.advance(0.2)
    assert drops == ["stalled"]


def behind(clock: Clock, window: int) -> tuple[StreamClient, PushingBackRequest, list[str]]:
    """A stream (max_pause 60 s) whose reader stopped at the clock's now, events held for it."""
    client, response, drops = make_client(window, max_buffer=1 << 20, max_pause=60.0, clock=clock)
    client._sock = None  # the generic path, through response.write
    client.send(b"x" * (window + 1))  # fills the connection: paused
    client.send(b"held" * 100)
    assert client.paused and client.held_bytes == 400
    return client, response, drops


def test_an_ended_stream_waits_only_for_what_is_left_of_max_pause() -> None:
    """
    A stream ended 59 s after its reader stopped, whose reader then takes a
    little (what it is owed fills the connection again), is dropped when
    max_pause runs out since the reader stopped, not max_pause later.
    """
    clock = Clock()
    client, response, drops = behind(clock, window=100)
    clock.advance(59)
    client.finish()
    response.read(50)  # room again: the held events are written, and fill it
    assert client.paused and not response.finished
    clock.advance(1.5)
    assert drops == ["stalled"] and not response.finished


def test_an_ended_stream_ends_cleanly_once_its_reader_caught_up() -> None:
    """The reader takes everything before max_pause: held events, then a clean end."""
    clock = Clock()
    client, response, drops = behind(clock, window=1000)
    clock.advance(30)
    client.finish()
    response.read(10_000)
    assert response.finished and drops == []
    assert b"".join(response.written).endswith(b"held" * 100)
    clock.advance(120)
    assert drops == []
