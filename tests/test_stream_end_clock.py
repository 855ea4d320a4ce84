"""StreamClient's end for a reader that is behind, timed on a fake clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from wsgi_sse._client import StreamClient


class Response:
    """A response that pauses its producer once C{window} bytes are unread, like a transport."""

    startedWriting = True
    chunked = True
    channel = None
    finished = False
    _disconnected = False

    def __init__(self, window: int) -> None:
        self.window = window
        self.unread = 0
        self.written: list[bytes] = []
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.written.append(data)
        self.unread += len(data)
        if self.unread > self.window:
            self.producer.pauseProducing()

    def read(self, n: int) -> None:
        """The reader takes C{n} bytes; once it has room, the producer resumes."""
        self.unread = max(self.unread - n, 0)
        if self.unread <= self.window:
            self.producer.resumeProducing()

    def unregisterProducer(self) -> None:
        self.producer = None

    def finish(self) -> None:
        self.finished = True


def behind(clock: Clock, window: int) -> tuple[StreamClient, Response, list[str]]:
    """A stream (max_pause 60 s) whose reader stopped at the clock's now, events held for it."""
    response = Response(window)
    drops: list[str] = []
    client = StreamClient(
        response,  # type: ignore[arg-type]
        channels=("c",),
        peer="test",
        clock=clock,
        max_buffer=1 << 20,
        max_pause=60.0,
        on_drop=lambda _, reason: drops.append(reason),
    )
    response.producer = client
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
