"""
Test your views' broadcasts without a server, a reactor or a socket.

Inside L{capture_broadcasts}, every C{broadcast()} and
C{broadcast_and_wait()} made through the module-level functions of
L{wsgi_sse} is recorded instead of sent, after the same validation as in
production: a view that passes a bad event name or data JSON cannot encode
fails in your test exactly as it would on the server.  Works with any test
client that calls your WSGI app in the test process (Bottle, Flask, Django,
WebTest, a plain WSGI call)::

    from wsgi_sse.testing import capture_broadcasts

    def test_knock():
        with capture_broadcasts() as broadcasts:
            client.post("/knock", data={"name": "Ada"})
        broadcasts.assert_broadcast("Ada knocked")

With pytest, the C{broadcasts} fixture (installed with wsgi-sse as a pytest
plugin) does the same for the length of a test.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Sequence

from twisted.python import threadable

from ._broadcast import Broadcaster, set_broadcaster, validate_channel, validate_timeout

__all__ = ["ANY", "BroadcastRecorder", "RecordedBroadcast", "capture_broadcasts"]

_in_reactor_thread: Callable[[], bool] = threadable.isInIOThread


class _Any:
    """Matches every value in L{BroadcastRecorder.assert_broadcast}."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        return "ANY"


ANY: Any = _Any()
"""A wildcard for L{BroadcastRecorder.assert_broadcast}: matches any value."""


@dataclass(frozen=True)
class RecordedBroadcast:
    """
    One captured broadcast.

    @ivar data: the data exactly as the view passed it (a C{str}, a C{dict},
        ...), not yet encoded.
    @ivar event: the event name, or L{None} for a plain C{message}.
    @ivar channel: the channel it was sent on (C{"default"} when the view
        named none).
    @ivar retry: the C{retry} value given, or L{None}.
    @ivar body: the encoded event as it would go on the wire, without the
        C{id:} line the server adds and the blank line that ends it.
    @ivar waited: whether it was sent with C{broadcast_and_wait()}.
    """

    data: object
    event: str | None
    channel: str
    retry: int | None
    body: bytes
    waited: bool = False

    @property
    def text(self) -> str:
        """The encoded event as text (C{"event: job\\ndata: {...}\\n"})."""
        return self.body.decode("utf-8")


class _NoPublisher:
    """The publisher of a recorder: nothing is ever published."""

    def publish(self, channel: str, body: bytes) -> int:
        raise AssertionError("a BroadcastRecorder publishes nothing")  # pragma: no cover

    def publish_many(self, channel: str, bodies: Sequence[bytes]) -> int:
        raise AssertionError("a BroadcastRecorder publishes nothing")  # pragma: no cover

    def publish_event(self, channel: str, body: bytes) -> Any:
        raise AssertionError("a BroadcastRecorder publishes nothing")  # pragma: no cover


class BroadcastRecorder(Broadcaster):
    """
    A L{Broadcaster} that records events instead of sending them.

    Values are validated and encoded exactly as by the real broadcaster, so
    bad input raises the same C{TypeError} or C{ValueError} (and nothing is
    recorded).  Every method may be called in any thread.

    @ivar clients: the count C{broadcast_and_wait()} returns, as if that
        many clients had received the event (default 0).
    """

    def __init__(self, *, clients: int = 0) -> None:
        super().__init__(_NoPublisher())
        self.clients = clients
        self._lock = threading.Lock()
        self._events: list[RecordedBroadcast] = []
        self._closed: list[str] = []

    def _record(
        self,
        data: object,
        event: str | None,
        channel: str | None,
        retry: int | None,
        waited: bool,
    ) -> None:
        name, body = self.prepare(data, event=event, channel=channel, retry=retry)
        with self._lock:
            self._events.append(RecordedBroadcast(data, event, name, retry, body, waited))

    def broadcast(
        self,
        data: object,
        *,
        event: str | None = None,
        channel: str | None = None,
        retry: int | None = None,
    ) -> None:
        """Validate, encode and record an event.  May be called in any thread."""
        self._record(data, event, channel, retry, waited=False)

    def broadcast_and_wait(
        self,
        data: object,
        *,
        event: str | None = None,
        channel: str | None = None,
        retry: int | None = None,
        timeout: float = 5.0,
    ) -> int:
        """
        Validate, encode and record an event; return L{clients}.

        @raise RuntimeError: in the reactor thread, as in production.
        @raise TypeError: for values of the wrong type (C{timeout} included).
        @raise ValueError: for values that would break the stream, or a
            negative C{timeout}.
        """
        if _in_reactor_thread():
            raise RuntimeError(
                "broadcast_and_wait() would block the reactor thread; use broadcast()"
            )
        validate_timeout(timeout)
        self._record(data, event, channel, retry, waited=True)
        return self.clients

    def close(self, channel: str) -> None:
        """
        Validate and record the close of C{channel} (see L{closed}).  May be
        called in any thread.
        """
        name = validate_channel(channel)
        with self._lock:
            self._closed.append(name)

    @property
    def closed(self) -> list[str]:
        """The channels C{close()} was called on, oldest first (a copy)."""
        with self._lock:
            return list(self._closed)

    @property
    def events(self) -> list[RecordedBroadcast]:
        """Every broadcast recorded so far, oldest first (a copy)."""
        with self._lock:
            return list(self._events)

    @property
    def data(self) -> list[object]:
        """The data of every broadcast recorded so far, oldest first."""
        return [e.data for e in self.events]

    def on_channel(self, channel: str) -> list[RecordedBroadcast]:
        """The broadcasts recorded on C{channel}, oldest first."""
        return [e for e in self.events if e.channel == channel]

    def clear(self) -> None:
        """Forget everything recorded so far."""
        with self._lock:
            self._events.clear()
            self._closed.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._events)

    def __iter__(self) -> Iterator[RecordedBroadcast]:
        return iter(self.events)

    def assert_broadcast(
        self,
        data: object = ANY,
        *,
        event: str | None = ANY,
        channel: str | None = ANY,
        retry: int | None = ANY,
    ) -> RecordedBroadcast:
        """
        Assert that at least one recorded broadcast matches every given field;
        return the first that does.

        Fields left out match anything; C{event=None} asks for a plain
        C{message}, C{channel=None} for the default channel.  C{data} is
        compared with C{==} to the value the view passed (a C{dict} to a
        C{dict}, a C{str} to a C{str}).

        @raise AssertionError: listing what was recorded, if none matches.
        """
        if channel is None:
            channel = self.prepare("", channel=None)[0]
        wanted = {"data": data, "event": event, "channel": channel, "retry": retry}
        events = self.events
        for recorded in events:
            if all(
                getattr(recorded, key) == value for key, value in wanted.items() if value is not ANY
            ):
                return recorded
        shown = ", ".join(f"{k}={v!r}" for k, v in wanted.items() if v is not ANY)
        recorded_text = "\n".join(
            f"  data={e.data!r}, event={e.event!r}, channel={e.channel!r}, retry={e.retry!r}"
            for e in events
        )
        raise AssertionError(
            f"no broadcast with {shown or 'any values'}; recorded {len(events)}"
            + (":\n" + recorded_text if events else "")
        )

    def assert_nothing_broadcast(self) -> None:
        """
        Assert that nothing was broadcast.

        @raise AssertionError: listing what was recorded, if anything was.
        """
        events = self.events
        if events:
            listed = "\n".join(
                f"  {e.data!r} (event={e.event!r}, channel={e.channel!r})" for e in events
            )
            raise AssertionError(f"expected no broadcast, recorded {len(events)}:\n{listed}")


@contextmanager
def capture_broadcasts(*, clients: int = 0) -> Iterator[BroadcastRecorder]:
    """
    Record every broadcast made through L{wsgi_sse.broadcast} and
    L{wsgi_sse.broadcast_and_wait} inside the block, instead of sending it.

    The broadcaster in use before is restored on exit, even if the block
    raises.  Call it in the thread that runs your test; the views it calls
    may broadcast from any thread.

    @param clients: the count C{broadcast_and_wait()} returns.
    """
    recorder = BroadcastRecorder(clients=clients)
    previous = set_broadcaster(recorder)
    try:
        yield recorder
    finally:
        set_broadcaster(previous)
