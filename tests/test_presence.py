"""Presence and revocation in one process: identities, coalesced joins, disconnect()."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import http_request, serve
from twisted.internet.task import Clock

import wsgi_sse
from wsgi_sse import Allowed, Hub, PresenceChange, StreamRequest
from wsgi_sse._backplane import Entry, LocalBackplane
from wsgi_sse._encoding import encode_body
from wsgi_sse._presence import CONTROL_CHANNEL, _size


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


revoked: set[str] = set()


def by_cookie(request: StreamRequest) -> Allowed | bool:
    """The cookie 'user' names the stream's owner; revoked users are refused."""
    user = request.cookies.get("user")
    if user in revoked:
        return False
    return Allowed({"room", f"user-{user}"} if user else {"room"}, identity=user)


@pytest.fixture
def closing() -> Any:
    """Streams closed at the end of the test."""
    streams: list[Any] = []
    yield streams
    for stream in streams:
        stream.close()


def wait_until(predicate: Any, timeout: float = 5.0) -> None:
    """Poll until C{predicate()} is true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_three_tabs_of_one_user_join_once_and_leave_with_the_last() -> None:
    """Three streams of one identity count once in presence and notify one join, one leave."""
    changes: list[PresenceChange] = []
    seen = threading.Event()

    def on_presence(change: PresenceChange) -> None:
        changes.append(change)
        seen.set()

    with serve(app, authorize=by_cookie, on_presence=on_presence) as server:
        ada = {"Cookie": "user=ada"}
        tabs = [server.stream("/sse?channel=room", headers=ada) for _ in range(3)]
        guest = server.stream("/sse?channel=room")
        server.wait_clients(4)
        now = wsgi_sse.presence("room")
        assert dict(now.identities) == {"ada": 3} and now.guests == 1
        assert now.users == ["ada"] and now.connections == 4
        wait_until(lambda: len(changes) == 2)
        for tab in tabs[:2]:
            tab.close()
        server.wait_clients(2)
        assert dict(wsgi_sse.presence("room").identities) == {"ada": 1}
        tabs[2].close()
        guest.close()
        server.wait_clients(0)
        wait_until(lambda: len(changes) == 4)
        time.sleep(0.2)  # nothing more arrives
        assert wsgi_sse.presence("room") == wsgi_sse.Presence("room", {}, 0)
    kinds = sorted((c.identity or "", c.joined) for c in changes)
    assert kinds == [("", False), ("", True), ("ada", False), ("ada", True)]
    ada_leave = next(c for c in changes if c.identity == "ada" and not c.joined)
    assert ada_leave.presence.identities.get("ada") is None


def test_disconnect_by_identity_ends_those_streams_and_the_reconnect_is_refused(
    closing: list[Any],
) -> None:
    """disconnect(identity=) from a thread ends that user's streams at once; others stay."""
    with serve(app, authorize=by_cookie) as server:
        ada = server.stream("/sse?channel=room&channel=user-ada", headers={"Cookie": "user=ada"})
        bob = server.stream("/sse?channel=room", headers={"Cookie": "user=bob"})
        server.wait_clients(2)
        closing.extend([ada, bob])
        revoked.add("ada")
        try:
            wsgi_sse.disconnect(identity="ada")
            ada.read_to_end(timeout=1.0)
            server.wait_clients(1)
            server.service.broadcaster.broadcast_and_wait("still here", channel="room")
            assert [e.data for e in bob.wait_events(1)] == ["still here"]
            # The browser's reconnect is authorized again, and refused.
            status, _, _ = http_request(
                server.port, "GET", "/sse?channel=room", headers={"Cookie": "user=ada"}
            )
            assert status == 403
        finally:
            revoked.discard("ada")
        assert dict(wsgi_sse.presence("room").identities) == {"bob": 1}
        bob.close()


@pytest.mark.parametrize("where", ["here", "another process"])
def test_disconnect_while_the_authorize_hook_runs_reaches_the_stream(
    where: str, closing: list[Any]
) -> None:
    """
    A stream whose hook already said yes when disconnect() is called (here,
    or in another process sharing the backplane) does not open on that
    answer: the hook decides again and refuses the revoked user.  A
    revocation of someone else lets it open.
    """
    entered = threading.Event()
    gate = threading.Event()
    answers: list[object] = []

    def slow_authorize(request: StreamRequest) -> Allowed | bool:
        answer = by_cookie(request)  # the session is checked first...
        answers.append(answer)
        entered.set()
        gate.wait(10)  # ...then the hook goes on working
        return answer

    with serve(app, authorize=slow_authorize) as server, ThreadPoolExecutor(2) as pool:
        hub = server.service.hub

        def revoke(identity: str) -> None:
            if where == "here":
                wsgi_sse.disconnect(identity=identity)
            else:
                message = {"k": "d", "i": "elsewhere", "u": identity, "c": None}
                server.call(hub.deliver_control, encode_body(json.dumps(message)))

        ada = {"Cookie": "user=ada"}
        # Someone else's revocation: the stream opens on the hook's answer.
        opening = pool.submit(server.stream, "/sse?channel=user-ada", headers=ada)
        assert entered.wait(10)
        revoke("bob")
        gate.set()
        stream = opening.result(10)
        closing.append(stream)
        assert stream.status == 200 and len(answers) == 1
        server.wait_clients(1)
        stream.close()
        server.wait_clients(0)

        entered.clear()
        gate.clear()
        answers.clear()
        opening = pool.submit(server.stream, "/sse?channel=user-ada", headers=ada)
        assert entered.wait(10)
        revoked.add("ada")
        try:
            revoke("ada")
            gate.set()
            stream = opening.result(10)
            closing.append(stream)
            assert stream.status == 403
            assert answers == [Allowed({"room", "user-ada"}, identity="ada"), False]
        finally:
            revoked.discard("ada")
        assert server.client_count() == 0


def test_disconnect_after_broadcast_sends_the_last_word_first(closing: list[Any]) -> None:
    """An event broadcast before disconnect() in one thread reaches the stream before its end."""
    with serve(app, authorize=by_cookie) as server:
        ada = server.stream("/sse?channel=user-ada", headers={"Cookie": "user=ada"})
        closing.append(ada)
        server.wait_clients(1)
        wsgi_sse.broadcast("logged out", channel="user-ada")
        wsgi_sse.disconnect(identity="ada")
        ada.read_to_end(timeout=5.0)
        assert [e.data for e in ada.events] == ["logged out"]


def test_disconnect_by_channel_and_by_identity_on_a_channel(closing: list[Any]) -> None:
    """disconnect(channel=) ends every stream of a channel; with identity too, only those."""
    with serve(app, authorize=by_cookie) as server:
        own = server.stream("/sse?channel=user-ada", headers={"Cookie": "user=ada"})
        room = server.stream("/sse?channel=room", headers={"Cookie": "user=ada"})
        other = server.stream("/sse?channel=room", headers={"Cookie": "user=bob"})
        closing.extend([own, room, other])
        server.wait_clients(3)
        wsgi_sse.disconnect(identity="ada", channel="room")
        room.read_to_end(timeout=2.0)
        server.wait_clients(2)
        wsgi_sse.disconnect(channel="room")
        other.read_to_end(timeout=2.0)
        server.wait_clients(1)
        assert wsgi_sse.presence("user-ada").identities == {"ada": 1}
        own.close()


def test_bad_arguments_are_refused() -> None:
    """disconnect() needs a target; identities are checked; the control channel is reserved."""
    with pytest.raises(ValueError, match="identity, a channel"):
        wsgi_sse.disconnect()
    with pytest.raises(ValueError, match="identity"):
        Allowed(True, identity="a\nb")
    with pytest.raises(ValueError, match="identity"):
        Allowed(True, identity="x" * 257)
    with pytest.raises(TypeError):
        Allowed(True, identity=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reserved"):
        wsgi_sse.broadcast("forged", channel=CONTROL_CHANNEL)
    with serve(app, channel_pattern=r".+") as server:
        status, _, body = http_request(server.port, "GET", "/sse?channel=%23wsgi-sse")
        assert status == 400 and b"reserved" in body


def _control(hub: Hub, message: object) -> None:
    hub.deliver_control(encode_body(json.dumps(message)))


class Tab:
    """A subscriber with an identity, as a stream would be."""

    def __init__(self, identity: str | None) -> None:
        self.identity = identity
        self.sent: list[bytes] = []
        self.finished = False

    def send(self, wire: bytes) -> None:
        self.sent.append(wire)

    def finish(self) -> None:
        self.finished = True


def test_another_process_presence_merges_and_expires() -> None:
    """Reports of another process add to presence until their TTL passes without a refresh."""
    clock = Clock()
    hub = Hub(clock=clock, instance_id="here")
    hub.subscribe(Tab("ada"), ["room"])
    report = {"k": "p", "i": "there", "t": 30, "f": True, "c": {"room": [{"ada": 1, "bob": 2}, 3]}}
    _control(hub, report)
    now = hub.presence.get("room")
    assert dict(now.identities) == {"ada": 2, "bob": 2} and now.guests == 3
    clock.advance(29)
    assert hub.presence.get("room").guests == 3
    clock.advance(2)
    assert dict(hub.presence.get("room").identities) == {"ada": 1}
    assert hub.channel_counts() == {"room": 1}


def test_an_event_on_the_reserved_channel_in_the_shared_history_is_dropped() -> None:
    """Control messages never travel in the event history: one found there is forged."""
    hub = Hub(clock=Clock(), instance_id="here")
    tab = Tab("ada")
    hub.subscribe(tab, ["room"])
    body = encode_body(json.dumps({"k": "d", "i": "there", "u": "ada", "c": None}))
    hub.deliver_batch([Entry(1, "here-1", CONTROL_CHANNEL, body)])
    assert not tab.finished and hub.presence.malformed == 1
    assert hub.last_id == "here-1" and hub.channel_counts() == {"room": 1}


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "nested",
        [1, 2],
        {"k": "p", "i": "BAD!", "t": 30, "c": {}},
        {"k": "p", "i": "there", "t": 10**9, "c": {}},
        {"k": "p", "i": "there", "t": 30, "c": {"room": [{"ada": -1}, 0]}},
        {"k": "p", "i": "there", "t": 30, "c": {"room": [{"a\nb": 1}, 0]}},
        {"k": "p", "i": "there", "t": 30, "c": {"room": [{}, True]}},
        {"k": "d", "i": "there", "u": None, "c": None},
        {"k": "d", "i": "there", "u": 5, "c": None},
        # Nothing disconnect() could send, which would be remembered a day.
        {"k": "d", "i": "there", "u": "a" * 257, "c": None},
        {"k": "d", "i": "there", "u": "a\x1bb", "c": None},
        {"k": "d", "i": "there", "u": None, "c": "c" * 1001},
        {"k": "d", "i": "there", "u": "ada", "c": "\xe9" * 501},
        {"k": "d", "i": "there", "u": None, "c": "a\nb"},
        {"k": "d", "i": "there", "u": None, "c": ""},
        {"k": "?", "i": "there"},
    ],
)
def test_forged_control_messages_are_dropped(message: object) -> None:
    """Malformed presence or revocation entries change nothing and are counted."""
    hub = Hub(clock=Clock(), instance_id="here")
    tab = Tab("ada")
    hub.subscribe(tab, ["room"])
    if message == "not json":
        hub.deliver_control(b"data: {nope\n")
    elif message == "nested":
        # Deeper than the JSON parser recurses (a few hundred KiB).
        hub.deliver_control(b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n")
    else:
        _control(hub, message)
    assert hub.presence.malformed == 1
    assert dict(hub.presence.get("room").identities) == {"ada": 1}
    assert not tab.finished and hub.subscriber_count() == 1
    assert len(hub.revoked_tokens) == 0


def test_revocation_message_from_another_process_ends_matching_streams() -> None:
    """A disconnect message read from the backplane ends this process's matching streams."""
    hub = Hub(clock=Clock(), instance_id="here")
    ada, bob = Tab("ada"), Tab("bob")
    hub.subscribe(ada, ["room"])
    hub.subscribe(bob, ["room"])
    _control(hub, {"k": "d", "i": "there", "u": "ada", "c": None})
    assert ada.finished and not bob.finished
    assert len(hub.revoked_tokens) == 1
    assert dict(hub.presence.get("room").identities) == {"bob": 1}
    # Its own messages, coming back, are not acted on twice.
    _control(hub, {"k": "d", "i": "here", "u": "bob", "c": None})
    assert not bob.finished


def test_the_requests_identity_is_used_unless_the_hook_names_another() -> None:
    """StreamRequest.identity (a token, a view) is the stream's identity; Allowed overrides it."""
    from wsgi_sse._resource import _authorized

    request = StreamRequest(("room",), None, {}, {}, {}, "127.0.0.1", "/sse", identity="ada")
    assert _authorized(lambda r: {"room"}, request, ("room",)) == (True, "ada")
    assert _authorized(lambda r: Allowed(True, identity="bob"), request, ("room",)) == (
        True,
        "bob",
    )
    assert _authorized(lambda r: Allowed({"x"}), request, ("room",)) == (frozenset({"x"}), "ada")
    with pytest.raises(ValueError, match="identity"):
        StreamRequest(("room",), None, {}, {}, {}, "127.0.0.1", "/sse", identity="")


def test_joining_while_present_in_another_process_notifies_nothing() -> None:
    """A user already connected through another process does not join again here."""
    clock = Clock()
    hub = Hub(clock=clock, instance_id="here")
    changes: list[PresenceChange] = []
    hub.presence.listen(changes.append)
    _control(hub, {"k": "p", "i": "there", "t": 30, "f": True, "c": {"room": [{"ada": 1}, 0]}})
    tab = Tab("ada")
    hub.subscribe(tab, ["room"])
    hub.unsubscribe(tab)
    assert changes == []
    clock.advance(31)  # the other process is gone
    hub.subscribe(tab, ["room"])
    assert [(c.identity, c.joined) for c in changes] == [("ada", True)]


class SharedRecording(LocalBackplane):
    """The in-process backplane posing as shared, recording control messages."""

    shared = True

    def __init__(self, instance_id: str, max_control_body: int) -> None:
        super().__init__(instance_id)
        self.max_control_body = max_control_body
        self.bodies: list[bytes] = []

    def send_control(self, body: bytes) -> None:
        self.bodies.append(body)


@pytest.mark.parametrize("limit", [7900, 256 * 1024])
def test_a_large_report_is_split_into_messages_the_backplane_carries(limit: int) -> None:
    """Many channels and identities go in several bounded messages; none is lost."""
    clock = Clock()
    recording = SharedRecording("big", limit)
    hub = Hub(clock=clock, instance_id="big", backplane=recording)
    for c in range(300):
        for i in range(20):
            hub.subscribe(Tab(f"user-{i:03d}-{'é' * 60}"), [f"channel-{c}"])
    for i in range(3000):  # one crowded channel: its table spans several messages
        hub.subscribe(Tab(f"crowd-{i:05d}"), ["crowd"])
    hub.subscribe(Tab(None), ["crowd"])
    hub.presence.start()
    hub.presence.stop()
    assert len(recording.bodies) > 2
    assert all(len(b) <= limit for b in recording.bodies)
    other = Hub(clock=clock, instance_id="other")
    for body in recording.bodies[:-1]:  # all but the goodbye of stop()
        other.deliver_control(body)
    assert other.presence.malformed == 0
    assert len(other.presence.channels()) == 301
    assert (
        other.presence.get("channel-299").identities == hub.presence.get("channel-299").identities
    )
    crowd = other.presence.get("crowd")
    # 2,000 identities of a channel are shared; the others count as guests.
    assert len(crowd.identities) == 2000 and crowd.guests == 1001
    assert crowd.connections == 3001
    other.deliver_control(recording.bodies[-1])  # the goodbye empties it at once
    assert other.presence.channels() == []


def test_an_identity_others_would_refuse_is_reported_as_a_guest() -> None:
    """A stream given an identity with a control character does not spoil the report."""
    clock = Clock()
    recording = SharedRecording("here", 7900)
    hub = Hub(clock=clock, instance_id="here", backplane=recording)
    hub.subscribe(Tab("bad\nname"), ["room"])
    hub.subscribe(Tab("ada"), ["room"])
    hub.presence.start()
    other = Hub(clock=clock, instance_id="other")
    for body in recording.bodies:
        other.deliver_control(body)
    assert other.presence.malformed == 0
    now = other.presence.get("room")
    assert (dict(now.identities), now.guests) == ({"ada": 1}, 1)


def _reports(recording: SharedRecording) -> list[dict[str, Any]]:
    """The control messages a hub sent, decoded."""
    return [json.loads(body[6:-1]) for body in recording.bodies]


def test_a_process_that_starts_listening_reports_in_full_and_asks_the_others() -> None:
    """Reports sent while a process could not hear them are not waited for until the interval."""
    clock = Clock()
    recording = SharedRecording("here", 7900)
    hub = Hub(clock=clock, instance_id="here", backplane=recording)
    hub.subscribe(Tab("ada"), ["room"])
    hub.presence.start()
    del recording.bodies[:]
    hub.control_listening()
    full, ask = _reports(recording)
    assert full["k"] == "p" and full["f"] is True and full["c"] == {"room": [{"ada": 1}, 0]}
    assert ask["k"] == "q" and ask["i"] == "here"

    # The other process, asked, answers with its whole table.
    other_recording = SharedRecording("other", 7900)
    other = Hub(clock=clock, instance_id="other", backplane=other_recording)
    other.subscribe(Tab("bob"), ["room"])
    other.presence.start()
    del other_recording.bodies[:]
    other.deliver_control(recording.bodies[1])
    assert other_recording.bodies == []  # gathered for `delay` first
    clock.advance(other.presence.delay)
    (answer,) = _reports(other_recording)
    assert answer["f"] is True and answer["c"] == {"room": [{"bob": 1}, 0]}
    hub.deliver_control(other_recording.bodies[0])
    assert dict(hub.presence.get("room").identities) == {"ada": 1, "bob": 1}


def test_asks_for_a_full_report_are_answered_at_most_once_a_second() -> None:
    """Another process asking in a loop (or a forged flood) costs one report a second."""
    clock = Clock()
    recording = SharedRecording("here", 7900)
    hub = Hub(clock=clock, instance_id="here", backplane=recording)
    hub.subscribe(Tab("ada"), ["room"])
    asking = SharedRecording("there", 7900)
    Hub(clock=clock, instance_id="there", backplane=asking).control_listening()
    assert asking.bodies == []  # presence not started: nothing sent
    ask = b'data: {"k": "q", "i": "there", "t": 30}\n'
    hub.deliver_control(ask)
    assert recording.bodies == []  # not started: nobody to answer for
    hub.presence.start()
    del recording.bodies[:]
    for _ in range(50):  # 5 s of asks, ten a second
        hub.deliver_control(ask)
        clock.advance(0.1)
    assert 5 <= len(recording.bodies) <= 6
    assert all(r["k"] == "p" and r["f"] is True for r in _reports(recording))
    assert hub.presence.malformed == 0
    hub.presence.stop()
    hub.deliver_control(ask)
    clock.advance(2)
    assert _reports(recording)[-1]["c"] == {}  # the goodbye, and nothing after it


def _report(instance: str, channels: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    """A presence report of another process."""
    return {"k": "p", "i": instance, "t": 30, "f": full, "c": channels}


def _held(hub: Hub) -> int:
    """What the other processes' tables take, recomputed from them."""
    return sum(
        _size(name, counts)
        for _, table in hub.presence._remote.values()
        for name, counts in table.items()
    )


def _state(hub: Hub, channel: str) -> tuple[dict[str, int], int]:
    now = hub.presence.get(channel)
    return dict(now.identities), now.guests


def test_one_process_report_is_kept_up_to_its_bound_and_not_past_it() -> None:
    """
    A report exactly at the bound is kept whole; a channel past it is counted
    as guests if that fits, dropped if not; freeing room lets it in.
    """
    hub = Hub(clock=Clock(), instance_id="here")
    tracker = hub.presence
    one = _size("ch-1", {"ada": 1})
    tracker.max_process_bytes = 3 * one
    ada = [{"ada": 1}, 0]
    _control(hub, _report("there", {"ch-1": ada, "ch-2": ada, "ch-3": ada}, full=True))
    assert [_state(hub, f"ch-{n}") for n in (1, 2, 3)] == [({"ada": 1}, 0)] * 3
    assert tracker.overflow == 0 and tracker.remote_bytes == 3 * one == _held(hub)

    _control(hub, _report("there", {"ch-4": ada}))  # one channel too many
    assert _state(hub, "ch-4") == ({}, 0) and tracker.channels() == ["ch-1", "ch-2", "ch-3"]
    assert tracker.overflow == 1 and tracker.remote_bytes == 3 * one == _held(hub)

    guests_only = _size("ch-4", {None: 1})
    tracker.max_process_bytes = 3 * one + guests_only
    _control(hub, _report("there", {"ch-4": ada}))  # its connection still counts
    assert _state(hub, "ch-4") == ({}, 1) and tracker.overflow == 2

    _control(hub, _report("there", {"ch-1": [{}, 0]}))  # ada left ch-1: room again
    _control(hub, _report("there", {"ch-4": ada}))
    assert _state(hub, "ch-4") == ({"ada": 1}, 0) and _state(hub, "ch-1") == ({}, 0)
    assert tracker.overflow == 2 and tracker.remote_bytes == 3 * one == _held(hub)
    assert tracker.malformed == 0


def test_reports_of_all_processes_are_kept_up_to_the_bound_in_all() -> None:
    """
    Past the bound in all, reports are cut; a full report frees the one it
    replaces, an expired process frees its room, and it is logged once a minute.
    """
    from twisted.logger import globalLogPublisher

    clock = Clock()
    hub = Hub(clock=clock, instance_id="here")
    tracker = hub.presence
    one = _size("ch-1", {"ada": 1})
    tracker.max_remote_bytes = 2 * one
    ada = [{"ada": 1}, 0]
    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        _control(hub, _report("p1", {"ch-1": ada, "ch-2": ada}, full=True))
        assert tracker.remote_bytes == 2 * one and tracker.overflow == 0 and seen == []
        for _ in range(3):  # no room left for another process
            _control(hub, _report("p2", {"ch-3": ada}, full=True))
        assert _state(hub, "ch-3") == ({}, 0) and tracker.overflow == 3
        warnings = [e for e in seen if "memory bound" in e.get("log_format", "")]
        assert len(warnings) == 1  # once, not per message

        _control(hub, _report("p1", {"ch-1": ada}, full=True))  # replaces its whole table
        _control(hub, _report("p2", {"ch-3": ada}, full=True))
        assert _state(hub, "ch-2") == ({}, 0) and _state(hub, "ch-3") == ({"ada": 1}, 0)
        assert tracker.remote_bytes == 2 * one == _held(hub)

        clock.advance(31)  # both fell silent: their room goes to the next one
        _control(hub, {**_report("p3", {"ch-4": ada, "ch-5": ada}), "t": 3600})
        assert tracker.channels() == ["ch-4", "ch-5"] and tracker.overflow == 3
        assert tracker.remote_bytes == 2 * one == _held(hub)

        # Identities added past the bound count as guests.
        _control(hub, {**_report("p3", {}), "a": {"ch-4": [{"bob": 1, "cy": 1}, 0]}})
        assert _state(hub, "ch-4") == ({"ada": 1}, 2) and tracker.overflow == 4
        assert tracker.remote_bytes == 2 * one == _held(hub)
        warnings = [e for e in seen if "memory bound" in e.get("log_format", "")]
        assert len(warnings) == 1  # the next one a minute after the first at most
        clock.advance(30)
        _control(hub, {**_report("p3", {"ch-6": ada}), "t": 3600})
        warnings = [e for e in seen if "memory bound" in e.get("log_format", "")]
        assert _state(hub, "ch-6") == ({}, 0) and tracker.overflow == 5
        # Each warning tells how many since the one before.
        assert [w["count"] for w in warnings] == [1, 4]
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert tracker.malformed == 0


DAY = 86_400


@pytest.mark.parametrize(
    ("sent", "recorded"),
    [
        (-100, -100),  # 100 s ago: as it says
        (10**12, 0),  # in the future: now
        (-10 * DAY, -DAY),  # ten days ago: a day ago (no token is older)
        (float("nan"), 0),
        (float("inf"), 0),
        ("yesterday", 0),
        (True, 0),
        (None, 0),
    ],
    ids=["past", "future", "long-ago", "nan", "inf", "text", "bool", "none"],
)
def test_a_revocation_from_another_process_keeps_its_time_within_the_last_day(
    sent: object, recorded: float
) -> None:
    """Its C{t} (hostile input) dates the revocation if it is a number in the last day."""
    clock = Clock()
    clock.advance(30 * DAY)
    now = clock.seconds()
    hub = Hub(clock=clock, instance_id="here")
    # Numbers are sent as seconds from now; anything else as it is.
    t = now + sent if type(sent) in (int, float) else sent  # type: ignore[operator]
    _control(hub, {"k": "d", "i": "there", "u": "ada", "c": None, "t": t})
    assert hub.revoked_tokens.knows("ada", None, now + recorded)
    assert not hub.revoked_tokens.knows("ada", None, now + recorded + 0.001)
    assert hub.presence.malformed == 0


def test_a_revocation_heard_again_ends_only_the_streams_opened_before_it() -> None:
    """
    A revocation sent again (for a process that missed it) ends nothing here
    once heard: streams opened since were opened after it.  A later one does.
    """
    clock = Clock()
    clock.advance(1000)
    hub = Hub(clock=clock, instance_id="here")
    before = Tab("ada")
    hub.subscribe(before, ["room"])
    message = {"k": "d", "i": "there", "u": "ada", "c": None, "t": 990.0}
    _control(hub, message)
    assert before.finished
    since = Tab("ada")
    hub.subscribe(since, ["room"])
    _control(hub, message)
    assert not since.finished and hub.subscriber_count() == 1
    _control(hub, {**message, "t": 999.0})
    assert since.finished and hub.subscriber_count() == 0


def test_revocations_made_here_are_sent_again_to_a_process_that_listens_anew() -> None:
    """
    Another process asking for reports (started, or back after an outage)
    gets this process's revocations of the last day again, dated, at most
    once a second however often it asks; so does everyone when this
    process listens anew.
    """
    clock = Clock()
    recording = SharedRecording("here", 256 * 1024)
    hub = Hub(clock=clock, instance_id="here", backplane=recording)

    def revocations() -> list[tuple[object, ...]]:
        found = [json.loads(body[6:-1]) for body in recording.bodies]
        recording.bodies.clear()
        return [(m["u"], m["c"], m["t"]) for m in found if m["k"] == "d"]

    hub.revoke("old")
    clock.advance(DAY)
    hub.revoke("ada")
    hub.revoke(None, "room")
    assert revocations() == [("old", None, 0.0), ("ada", None, DAY), (None, "room", DAY)]
    _control(hub, {"k": "q", "i": "there"})
    clock.advance(0)
    assert revocations() == [("ada", None, DAY), (None, "room", DAY)]
    _control(hub, {"k": "q", "i": "elsewhere"})
    _control(hub, {"k": "q", "i": "there"})
    clock.advance(0.5)
    assert revocations() == []
    clock.advance(0.5)
    assert revocations() == [("ada", None, DAY), (None, "room", DAY)]
    hub.control_listening()
    assert revocations() == [("ada", None, DAY), (None, "room", DAY)]


def test_revocations_heard_from_another_process_are_sent_again_too() -> None:
    """
    A revocation heard from another process is sent again, dated as sent,
    like those made here (so it outlives the process that made it while
    this one runs); heard again, it is not kept twice; past a day, no more.
    """
    clock = Clock()
    clock.advance(DAY)
    recording = SharedRecording("here", 256 * 1024)
    hub = Hub(clock=clock, instance_id="here", backplane=recording)

    def revocations() -> list[tuple[object, ...]]:
        found = [json.loads(body[6:-1]) for body in recording.bodies]
        recording.bodies.clear()
        return [(m["i"], m["u"], m["c"], m["t"]) for m in found if m["k"] == "d"]

    heard = {"k": "d", "i": "there", "u": "ada", "c": None, "t": DAY - 5.0}
    _control(hub, heard)
    _control(hub, heard)  # sent again by a third process
    hub.revoke(None, "room")
    assert revocations() == [("here", None, "room", DAY)]
    _control(hub, {"k": "q", "i": "later"})
    clock.advance(0)
    assert revocations() == [("here", "ada", None, DAY - 5.0), ("here", None, "room", DAY)]
    clock.advance(DAY - 4.0)  # the one heard is over a day old, the one made here is not
    hub.control_listening()
    assert revocations() == [("here", None, "room", DAY)]
    assert hub.presence.malformed == 0
