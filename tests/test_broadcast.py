"""broadcast() and broadcast_and_wait(): validation in the caller, delivery in the reactor."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from support import serve
from twisted.internet.task import Clock

from wsgi_sse import Broadcaster, Hub, broadcast, broadcast_and_wait, get_broadcaster
from wsgi_sse._broadcast import set_broadcaster


def idle_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("204 No Content", [])
    return []


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"event": "x\ny"}, ValueError),
        ({"event": "x\r"}, ValueError),
        ({"event": "\x00"}, ValueError),
        ({"retry": "10"}, TypeError),
        ({"retry": -5}, ValueError),
        ({"channel": "a\nb"}, ValueError),
        ({"channel": ""}, ValueError),
        ({"channel": 3}, TypeError),
    ],
)
def test_refused_values_raise_in_caller_and_send_nothing(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    """Invalid arguments raise in the calling thread; the stream gets nothing."""
    with serve(idle_app) as server:
        with server.stream() as client:
            server.wait_clients(1)
            with pytest.raises(error):
                broadcast("payload", **kwargs)
            with pytest.raises(TypeError):
                broadcast(object())
            broadcast("after")
            (event,) = client.wait_events(1)
            assert event.data == "after"
            assert server.call(lambda: server.service.hub.stats.events_published) == 1


def test_broadcast_from_reactor_thread_is_immediate() -> None:
    """Called in the reactor thread, broadcast() publishes synchronously."""
    with serve(idle_app) as server:
        with server.stream() as client:
            server.wait_clients(1)

            def in_reactor() -> int:
                before = server.service.hub.stats.events_published
                broadcast({"from": "reactor"}, event="r")
                return int(server.service.hub.stats.events_published - before)

            assert server.call(in_reactor) == 1
            (event,) = client.wait_events(1)
            assert (event.type, event.data) == ("r", '{"from":"reactor"}')


def test_broadcast_and_wait_reports_count() -> None:
    """broadcast_and_wait returns how many clients the event was handed to."""
    with serve(idle_app) as server:
        with server.stream("/sse?channel=a") as a1, server.stream("/sse?channel=a") as a2:
            with server.stream("/sse?channel=b") as b:
                server.wait_clients(3)
                assert broadcast_and_wait("hi", channel="a") == 2
                assert broadcast_and_wait("hi", channel="b") == 1
                assert broadcast_and_wait("hi", channel="nobody") == 0
                assert a1.wait_events(1)[0].data == "hi"
                assert a2.wait_events(1)[0].data == "hi"
                assert b.wait_events(1)[0].data == "hi"


def test_broadcast_and_wait_checks_its_timeout_before_sending() -> None:
    """A timeout that is not a non-negative number raises, and nothing is sent."""
    bad: list[tuple[object, type[Exception]]] = [
        ("5", TypeError),
        (None, TypeError),
        (True, TypeError),
        (-1, ValueError),
        (float("nan"), ValueError),
    ]
    with serve(idle_app) as server:
        with server.stream("/sse?channel=t") as client:
            server.wait_clients(1)
            for timeout, error in bad:
                with pytest.raises(error, match="timeout"):
                    broadcast_and_wait("too soon", channel="t", timeout=timeout)  # type: ignore[arg-type]
            assert broadcast_and_wait("first", channel="t", timeout=3) == 1
            assert broadcast_and_wait("second", channel="t", timeout=0.5) == 1
            assert [e.data for e in client.wait_events(2)] == ["first", "second"]
            assert server.service.hub.stats.events_published == 2


def test_broadcast_and_wait_refuses_reactor_thread() -> None:
    """broadcast_and_wait in the reactor thread raises instead of deadlocking."""
    with serve(idle_app) as server:

        def in_reactor() -> str:
            try:
                broadcast_and_wait("x")
            except RuntimeError as e:
                return str(e)
            return "no error"

        assert "block the reactor" in server.call(in_reactor)


def test_one_threads_order_is_kept_under_contention() -> None:
    """Each thread's events keep their order while other threads publish too."""
    with serve(idle_app) as server:
        with server.stream() as client:
            server.wait_clients(1)
            n = 300

            def publish(tag: str) -> None:
                for i in range(n):
                    broadcast({"t": tag, "i": i})

            threads = [threading.Thread(target=publish, args=(t,)) for t in "abcd"]
            for t in threads:
                t.start()
            publish("main")
            for t in threads:
                t.join()
            events = client.wait_events(5 * n, timeout=30)
            import json

            by_tag: dict[str, list[int]] = {}
            for e in events:
                value = json.loads(e.data)
                by_tag.setdefault(value["t"], []).append(value["i"])
            assert all(seq == list(range(n)) for seq in by_tag.values())
            assert set(by_tag) == {"a", "b", "c", "d", "main"}


def test_broadcast_and_wait_comes_after_broadcasts_before_it() -> None:
    """broadcast() then broadcast_and_wait() from one thread: the stream gets them in that order."""
    with serve(idle_app) as server:
        with server.stream() as client:
            server.wait_clients(1)
            for i in range(10):
                broadcast(f"first {i}")
                assert broadcast_and_wait(f"second {i}") == 1
            events = client.wait_events(20)
    assert [e.data for e in events] == [f"{w} {i}" for i in range(10) for w in ("first", "second")]


class _TurnReactor:
    """
    Runs what threads hand to the reactor one turn at a time, when told, in
    the order of Twisted's C{runUntilCurrent}: the calls from threads queued
    before the turn, then the calls due that were timed before or during
    them; a call timed by one of those waits for the next turn.
    """

    def __init__(self) -> None:
        self.calls: list[Any] = []
        self.timed: list[Any] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.calls.append((f, args))

    def callLater(self, delay: float, f: Any, *args: Any) -> None:
        assert delay == 0
        self.timed.append((f, args))

    def turn(self) -> None:
        calls, self.calls = self.calls, []
        for f, args in calls:
            f(*args)
        timed, self.timed = self.timed, []
        for f, args in timed:
            f(*args)


class _Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, list[bytes]]] = []

    def publish(self, channel: str, body: bytes) -> int:
        self.published.append((channel, [body]))
        return 0

    def publish_many(self, channel: str, bodies: Any) -> int:
        self.published.append((channel, list(bodies)))
        return 0


def test_thread_broadcasts_wait_one_reactor_turn_and_go_out_together() -> None:
    """Thread broadcasts go out after the reactor's next turn, with those made in that turn."""
    reactor, recorder = _TurnReactor(), _Recorder()
    broadcaster = Broadcaster(recorder, reactor=reactor)  # type: ignore[arg-type]

    def from_a_thread(*data: str) -> None:
        thread = threading.Thread(target=lambda: [broadcaster.broadcast(d) for d in data])
        thread.start()
        thread.join()

    from_a_thread("a")
    reactor.turn()  # the turn in which the view's answer is handed over
    assert recorder.published == []
    from_a_thread("b", "c")  # requests read in that turn broadcast too
    reactor.turn()
    (batch,) = recorder.published
    assert batch == ("default", [b"data: a\n", b"data: b\n", b"data: c\n"])
    from_a_thread("d")
    broadcaster.call_after_broadcasts(recorder.published.append, ("after", []))
    reactor.turn()  # published at once: what must come after them asked for them
    assert [c for c, _ in recorder.published[1:]] == ["default", "after"]


def test_thread_broadcasts_go_out_after_the_real_reactors_next_look_at_its_sockets() -> None:
    """
    In Twisted's reactor: not in the turn that takes the broadcasts from
    the thread, but in the next one, whose look at the sockets does not
    wait for them.
    """
    from twisted.internet.selectreactor import SelectReactor

    reactor, recorder = SelectReactor(), _Recorder()
    try:
        broadcaster = Broadcaster(recorder, reactor=reactor)  # type: ignore[arg-type]
        thread = threading.Thread(target=lambda: broadcaster.broadcast("a"))
        thread.start()
        thread.join()
        reactor.runUntilCurrent()  # the thread's hand-over is taken
        assert recorder.published == []
        assert reactor.timeout() == 0  # the next look at the sockets does not wait
        reactor.doIteration(0)
        reactor.runUntilCurrent()
        assert recorder.published == [("default", [b"data: a\n"])]
    finally:
        reactor.waker.connectionLost(None)  # its pipe's two descriptors


def test_default_broadcaster_is_lazy_and_replaceable() -> None:
    """Without a server, broadcast() targets a lazily created hub; it can be replaced."""
    previous = set_broadcaster(None)
    try:
        first = get_broadcaster()
        assert get_broadcaster() is first
        replacement = Broadcaster(Hub(clock=Clock()))
        assert set_broadcaster(replacement) is first
        assert get_broadcaster() is replacement
    finally:
        set_broadcaster(previous)


def test_prepare_encodes_in_caller() -> None:
    """Broadcaster.prepare returns the channel and the id-less body."""
    b = Broadcaster(Hub(clock=Clock()))
    assert b.prepare("x\ny", event="e", channel="c", retry=10) == (
        "c",
        b"event: e\nretry: 10\ndata: x\ndata: y\n",
    )
    assert b.prepare(1) == ("default", b"data: 1\n")


def test_a_channel_no_page_can_subscribe_to_is_sent_and_warned_of_once() -> None:
    """
    A broadcast on a channel name the server refuses to pages (outside its
    channel_pattern) still goes out, for other servers sharing a backplane,
    and is logged as a warning, once per name; a valid name is not.
    """
    from twisted.logger import LogLevel, globalLogPublisher

    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        with serve(idle_app, channel_pattern=r"[a-z]+") as server:
            with server.stream("/sse?channel=room") as client:
                server.wait_clients(1)
                for _ in range(3):
                    broadcast("typo", channel="user 7")
                    broadcast("Upper", channel="Room")
                broadcast_and_wait("hello", channel="room")
                client.wait_for(lambda c: any(e.data == "hello" for e in c.events))
    finally:
        globalLogPublisher.removeObserver(events.append)
    warned = [
        e["channel"]
        for e in events
        if e.get("log_level") == LogLevel.warn and "no page of this server" in e["log_format"]
    ]
    assert sorted(warned) == ["Room", "user 7"]


def test_the_names_checked_are_remembered_within_a_bound() -> None:
    """However many names a program makes up, the names remembered and warned of stay bounded."""
    from twisted.logger import globalLogPublisher

    from wsgi_sse import StreamOptions
    from wsgi_sse._broadcast import _REMEMBERED_NAMES

    broadcaster = Broadcaster(Hub(clock=Clock()), reactor=Clock())
    checked: list[str] = []

    def check(name: str) -> str:
        checked.append(name)
        return StreamOptions(channel_pattern=r"[a-z0-9]+").check_channel(name)

    broadcaster.check_channel = check
    warnings: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(warnings.append)
    try:
        for n in range(_REMEMBERED_NAMES + 500):
            broadcaster.prepare("x", channel=f"good{n}")
            broadcaster.prepare("x", channel=f"Bad{n}")
        broadcaster.prepare("x", channel="good1")
    finally:
        globalLogPublisher.removeObserver(warnings.append)
    assert len(broadcaster._subscribable) == _REMEMBERED_NAMES
    assert len(broadcaster._warned) == _REMEMBERED_NAMES
    assert len([w for w in warnings if "no page of this server" in w.get("log_format", "")]) == (
        _REMEMBERED_NAMES
    )
    # A remembered name is not checked again.
    assert checked.count("good1") == 1
