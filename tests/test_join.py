"""Hub.join(): subscribe and replay in one call, on the in-process backplane and a held one."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from wsgi_sse import Hub
from wsgi_sse._backplane import Entry, Fetched, LocalBackplane
from wsgi_sse._hub import CLOSE_BODY, RESET, Joined


class Recorder:
    """A subscriber that keeps what it is sent."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def send(self, wire: bytes) -> None:
        self.sent.append(wire)


class SharedStub(LocalBackplane):
    """A shared backplane whose fetches the test answers."""

    shared = True

    def __init__(self) -> None:
        super().__init__("peer")
        self.fetches: list[Deferred[Fetched]] = []

    def fetch_after(self, position: int, event_id: str) -> Deferred[Fetched]:
        d: Deferred[Fetched] = Deferred()
        self.fetches.append(d)
        return d


def result(d: Deferred[Joined]) -> Joined:
    """The result of a Deferred that has fired."""
    out: list[Joined] = []
    d.addCallback(out.append)
    assert out, "not fired"
    return out[0]


def test_join_without_id_sends_the_preface_then_live_events() -> None:
    """No last id: the preface, then every event published after the join."""
    hub = Hub(clock=Clock(), instance_id="t")
    hub.publish("a", b"data: before\n")
    client = Recorder()
    assert result(hub.join(client, ["a"], None, preface=b": hi\n\n")) == Joined(0, False)
    hub.publish("a", b"data: after\n")
    assert client.sent == [b": hi\n\n", b"id: t-2\ndata: after\n\n"]


def test_join_replays_the_missed_events_with_the_preface_in_one_write() -> None:
    """A known id: preface and missed events in one send, then live; nothing twice."""
    hub = Hub(clock=Clock(), instance_id="t")
    for i in range(3):
        hub.publish("a", f"data: {i}\n".encode())
    client = Recorder()
    joined = result(hub.join(client, ["a", "a"], "t-1", preface=b": hi\n\n"))
    assert joined == Joined(2, False)
    hub.publish("a", b"data: 3\n")
    assert client.sent == [
        b": hi\n\nid: t-2\ndata: 1\n\nid: t-3\ndata: 2\n\n",
        b"id: t-4\ndata: 3\n\n",
    ]


@pytest.mark.parametrize("last_id", ["garbage", "t-99", "other-1"])
def test_join_with_an_unknown_id_sends_reset_then_live(last_id: str) -> None:
    """An id this hub cannot answer for: reset (no preface), then live events."""
    hub = Hub(clock=Clock(), instance_id="t")
    hub.publish("a", b"data: 0\n")
    client = Recorder()
    assert result(hub.join(client, ["a"], last_id, preface=b": hi\n\n")) == Joined(0, True)
    hub.publish("a", b"data: 1\n")
    assert client.sent == [RESET, b"id: t-2\ndata: 1\n\n"]
    assert hub.stats.replay_resets == 1


def test_join_twice_is_refused() -> None:
    """A subscriber joins once."""
    hub = Hub(clock=Clock(), instance_id="t")
    client = Recorder()
    hub.join(client, ["a"])
    with pytest.raises(ValueError, match="already subscribed"):
        hub.join(client, ["b"])


def held_hub() -> tuple[Hub, SharedStub]:
    """A hub on a shared stub backplane, started at position 10."""
    stub = SharedStub()
    hub = Hub(clock=Clock(), instance_id="me", backplane=stub)
    hub.start_at(10, "peer-10")
    return hub, stub


def test_a_held_client_that_leaves_is_never_subscribed() -> None:
    """Unsubscribing while the fetch runs cancels the join."""
    hub, stub = held_hub()
    client = Recorder()
    joined = hub.join(client, ["a"], "peer-5")
    assert hub.held_count() == 1
    hub.unsubscribe(client)
    stub.fetches[0].callback(Fetched(True, [Entry(6, "peer-6", "a", b"data: x\n")], 6, "", False))
    assert not joined.called and client.sent == [] and hub.subscriber_count() == 0


def test_held_clients_are_capped() -> None:
    """Past max_held waiting joins, a new one is reset at once instead of fetching."""
    stub = SharedStub()
    hub = Hub(clock=Clock(), instance_id="me", backplane=stub, max_held=2)
    hub.start_at(10, "peer-10")
    clients = [Recorder() for _ in range(3)]
    for client in clients:
        hub.join(client, ["a"], "peer-5")
    assert len(stub.fetches) == 2 and hub.held_count() == 2
    assert clients[2].sent == [RESET] and hub.subscriber_count("a") == 1


def test_a_fetched_replay_then_the_local_history_without_overlap() -> None:
    """Fetched events up to their end, then local ones after it: in order, once each."""
    hub, stub = held_hub()
    hub.deliver_batch([Entry(11, "peer-11", "a", b"data: 11\n")])
    client = Recorder()
    joined = hub.join(client, ["a"], "peer-8", preface=b": hi\n\n")
    entries = [Entry(p, f"peer-{p}", "a", f"data: {p}\n".encode()) for p in (9, 10, 11)]
    stub.fetches[0].callback(Fetched(True, entries, 11, "", False))
    assert result(joined) == Joined(3, False)
    assert client.sent == [
        b": hi\n\nid: peer-9\ndata: 9\n\nid: peer-10\ndata: 10\n\nid: peer-11\ndata: 11\n\n"
    ]


def test_restart_forgets_the_history_and_resets_waiting_clients() -> None:
    """A backplane moving backwards: old ids are unknown, held clients reset, delivery goes on."""
    hub, _stub = held_hub()
    hub.deliver_batch([Entry(11, "peer-11", "a", b"data: 11\n")])
    held = Recorder()
    hub.join(held, ["a"], "peer-5")
    hub.restart_at(3, "peer-3")
    assert held.sent == [RESET] and hub.subscriber_count("a") == 1
    assert hub.parse_id("peer-11") is None and hub.can_replay(["a"], "peer-3")
    assert hub.deliver_batch([Entry(4, "peer-4", "a", b"data: 4\n")]) == [1]
    assert held.sent[-1] == b"id: peer-4\ndata: 4\n\n"


def test_a_replay_callable_takes_the_fetched_events_before_the_subscription() -> None:
    """join(replay=...): the fetched events are handed over, not sent, then live ones follow."""
    hub, stub = held_hub()
    client: Any = Recorder()
    handed: list[Any] = []

    def replay(events: Any) -> None:
        handed.append([e.id for e in events])
        assert hub.subscriber_count("a") == 0  # not subscribed yet

    joined = hub.join(client, ["a"], "peer-8", preface=b": hi\n\n", replay=replay)
    assert not joined.called and hub.held_count() == 1
    entries = [Entry(p, f"peer-{p}", "a", f"data: {p}\n".encode()) for p in (9, 10)]
    stub.fetches[0].callback(Fetched(True, entries, 10, "", False))
    assert result(joined) == Joined(2, False)
    assert handed == [["peer-9", "peer-10"]] and client.sent == [b": hi\n\n"]
    hub.deliver_batch([Entry(11, "peer-11", "a", b"data: 11\n")])
    assert client.sent[-1] == b"id: peer-11\ndata: 11\n\n"


def test_a_replay_callable_is_told_of_a_reset_instead_of_sending_it() -> None:
    """join(replay=...) with an unknown id: the callable gets None, nothing is sent, it is live."""
    hub = Hub(clock=Clock(), instance_id="t")
    client = Recorder()
    handed: list[Any] = []
    assert result(hub.join(client, ["a"], "garbage", replay=handed.append)) == Joined(0, True)
    assert handed == [None] and client.sent == [] and hub.subscriber_count("a") == 1


def test_a_replay_callable_gets_the_events_up_to_a_close_and_the_subscriber_stays_out() -> None:
    """join(replay=...) past a close: events up to the close, no end() call, no subscription."""
    hub = Hub(clock=Clock(), instance_id="t")
    hub.publish("a", b"data: 1\n")
    hub.publish("a", CLOSE_BODY)
    hub.publish("a", b"data: 3\n")
    client: Any = Recorder()
    client.ended = 0
    client.end = lambda: setattr(client, "ended", client.ended + 1)
    handed: list[Any] = []
    assert result(hub.join(client, ["a"], "t-0", replay=handed.append)) == Joined(2, False, True)
    assert [e.id for e in handed[0]] == ["t-1", "t-2"] and handed[0][-1].closes
    assert client.sent == [] and client.ended == 0 and hub.subscriber_count("a") == 0


def test_the_join_result_comes_before_any_live_event() -> None:
    """A callback on join()'s result can send (init after reset) before the first live event."""
    hub, stub = held_hub()
    client = Recorder()
    hub.join(client, ["a"], "peer-5").addCallback(lambda joined: client.send(b"init\n\n"))
    stub.fetches[0].callback(Fetched(False, [], 0, "", False))
    hub.deliver_batch([Entry(11, "peer-11", "a", b"data: 11\n")])
    assert client.sent == [RESET, b"init\n\n", b"id: peer-11\ndata: 11\n\n"]


def test_a_stream_held_by_the_backplane_replays_through_its_backlog() -> None:
    """A fetched replay over max_buffer to a paused stream: kept, written on resume, live after."""
    from twisted.web.http_headers import Headers

    from wsgi_sse import StreamOptions
    from wsgi_sse._streams import Streams

    class Response:
        """The response of a stream: what it is written, nothing else."""

        channel = None
        startedWriting = True
        chunked = False
        content = None
        args: dict[bytes, list[bytes]] = {}

        def __init__(self) -> None:
            self.responseHeaders = Headers()
            self.requestHeaders = Headers()
            self.written: list[bytes] = []
            self.finished: Deferred[None] = Deferred()

        def setHeader(self, name: bytes, value: bytes) -> None:
            self.responseHeaders.setRawHeaders(name, [value])

        def getHeader(self, name: bytes) -> None:
            return None

        def registerProducer(self, producer: object, streaming: bool) -> None:
            pass

        def notifyFinish(self) -> Deferred[None]:
            return self.finished

        def write(self, data: bytes) -> None:
            self.written.append(data)

    hub, stub = held_hub()
    streams = Streams(hub, reactor=Clock(), options=StreamOptions(max_buffer=300, heartbeat=0))
    request: Any = Response()
    client = streams.open(request, ("a",), "peer", "peer-8", "peer-8")
    assert hub.held_count() == 1 and request.written  # the stream started, no replay yet
    head = len(request.written)
    client.pauseProducing()
    body = b"data: " + b"x" * 200 + b"\n"
    stub.fetches[0].callback(
        Fetched(True, [Entry(p, f"peer-{p}", "a", body) for p in (9, 10)], 10, "", False)
    )
    hub.deliver_batch([Entry(11, "peer-11", "a", b"data: live\n")])
    assert not client.closed and request.written[head:] == []
    client.resumeProducing()
    written = b"".join(request.written[head:])
    assert written.count(b"x" * 200) == 2 and written.endswith(b"id: peer-11\ndata: live\n\n")
    assert written.index(b"id: peer-10") < written.index(b"id: peer-11")


class Finishing(Recorder):
    """A stream-like subscriber with an identity, counting finish() and end() calls."""

    def __init__(self, identity: str) -> None:
        super().__init__()
        self.identity = identity
        self.finished = 0
        self.ended = 0

    def finish(self) -> None:
        self.finished += 1

    def end(self) -> None:
        self.ended += 1


def test_a_routed_join_replays_to_the_subscriber_and_each_channel_to_its_receiver() -> None:
    """join(route=...): the fetched replay goes to the subscriber, live events per channel."""
    hub, stub = held_hub()
    client = Recorder()
    receivers: dict[str, Finishing] = {}

    def route(channel: str) -> Finishing:
        receivers[channel] = Finishing("-")
        return receivers[channel]

    joined = hub.join(client, ["a", "b"], "peer-8", route=route)
    assert receivers == {} and hub.held_count() == 1
    stub.fetches[0].callback(Fetched(True, [Entry(9, "peer-9", "b", b"data: 9\n")], 9, "", False))
    assert result(joined) == Joined(1, False)
    assert client.sent == [b"id: peer-9\ndata: 9\n\n"]
    hub.deliver_batch(
        [Entry(11, "peer-11", "a", b"data: 11\n"), Entry(12, "peer-12", "b", b"data: 12\n")]
    )
    assert receivers["a"].sent == [b"id: peer-11\ndata: 11\n\n"]
    assert receivers["b"].sent == [b"id: peer-12\ndata: 12\n\n"]
    assert client.sent == [b"id: peer-9\ndata: 9\n\n"]
    assert hub.subscriber_count() == 1 and hub.channel_counts() == {"a": 1, "b": 1}
    hub.unsubscribe(client)
    assert hub.subscriber_count() == 0 and hub.channel_counts() == {}
    assert hub.deliver_batch([Entry(13, "peer-13", "a", b"data: 13\n")]) == [0]


def test_a_routed_subscriber_ends_once_on_close_and_revocation() -> None:
    """A close ends a routed subscriber through its channel's receiver and frees every channel."""
    hub = Hub(clock=Clock(), instance_id="t")
    closed, revoked = Finishing("ann"), Finishing("bob")
    receivers: list[Finishing] = []

    def route(channel: str) -> Finishing:
        receivers.append(Finishing("-"))
        return receivers[-1]

    hub.subscribe(closed, ["a", "b"], route=route)
    hub.subscribe(revoked, ["a", "b"], route=route)
    assert hub.end_streams("bob") == 1
    assert revoked.finished == 1 and hub.channel_counts() == {"a": 1, "b": 1}
    hub.publish("b", CLOSE_BODY)
    assert [r.ended for r in receivers] == [0, 1, 0, 0] and receivers[1].sent == [b"id: t-1\n\n"]
    assert hub.subscriber_count() == 0 and hub.channel_counts() == {}
