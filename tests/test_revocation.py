"""Revocation edges: disconnect() racing a stream's setup, over real sockets."""

from __future__ import annotations

import json
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from support import StreamClient, serve, wait_until
from twisted.internet.task import Clock

import wsgi_sse
from wsgi_sse import Allowed, Hub, StreamRequest, hold_body, hold_headers
from wsgi_sse._encoding import encode_body


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def _pending(server: Any) -> tuple[int, int]:
    """Open streams, and streams being authorized."""

    def read() -> tuple[int, int]:
        resource = server.service.sse_resource
        return len(resource.clients), resource._pending

    return server.call(read)  # type: ignore[no-any-return]


def test_a_stream_revoked_every_time_its_hooks_run_is_told_to_come_back_later() -> None:
    """
    After its hooks ran four times (three re-runs), each time revoked while
    they ran, a stream is answered as a browser keeps reconnecting from: a
    200 event stream with only a comment and a retry:, Retry-After, and the
    end of the connection; the stats count a 503.
    """
    calls: list[str] = []

    def revoking(request: StreamRequest) -> Allowed:
        # The user logs out (elsewhere) every time the hook checks them.
        calls.append("authorize")
        wsgi_sse.disconnect(identity="ada")
        return Allowed(True, identity="ada")

    with serve(app, authorize=revoking, busy_retry_after=7, retry=1000) as server:
        with StreamClient(server.port, "/sse?channel=room") as client:
            client.read_to_end()
            assert client.eof
        assert len(calls) == 4
        assert client.status == 200
        assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert client.headers["retry-after"] == "7"
        assert client.headers["connection"] == "close"
        assert client.body.startswith(b": stream revoked while opening\nretry: ")
        assert client.parser.events == []
        retry = client.parser.retry
        assert retry is not None and 7000 <= retry <= 7000 * 1.5
        assert client.parser.fields_seen == ["retry"]
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["refused"] == {"503": 1}
        assert _pending(server) == (0, 0)


class HoldingView:
    """
    A view that holds C{job-7} for the identity in its C{user} cookie (a
    guest without one) and, once it has decided, waits for the test to let
    it return.
    """

    def __init__(self) -> None:
        self.decided = threading.Event()
        self.gate = threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        user = environ.get("HTTP_COOKIE", "").removeprefix("user=") or None
        start_response("200 OK", hold_headers("job-7", identity=user))
        self.decided.set()
        assert self.gate.wait(10)
        return [hold_body({"job": "7", "for": user})]


def _revoke(server: Any, where: str, identity: str | None, channel: str | None) -> None:
    if where == "here":
        wsgi_sse.disconnect(identity=identity, channel=channel)
    else:
        message = {"k": "d", "i": "elsewhere", "u": identity, "c": channel}
        server.call(server.service.hub.deliver_control, encode_body(json.dumps(message)))


@pytest.mark.parametrize("where", ["here", "another process"])
@pytest.mark.parametrize(
    ("user", "identity", "channel"),
    [("ada", "ada", None), ("ada", "ada", "job-7"), (None, None, "job-7")],
)
def test_disconnect_while_a_view_sets_up_its_held_stream_reaches_it(
    where: str, user: str | None, identity: str | None, channel: str | None
) -> None:
    """
    A disconnect() matching a held stream, made while its view runs (here,
    or in another process), does not let the stream open: the page is told
    to come back later, and the view decides again then.  Its first body,
    computed before the revocation, is never sent.
    """
    view = HoldingView()
    with serve(view) as server, ThreadPoolExecutor(1) as pool:
        headers = {"Cookie": f"user={user}"} if user else {}
        opening = pool.submit(StreamClient, server.port, "/jobs/7/events", headers=headers)
        assert view.decided.wait(10)
        _revoke(server, where, identity, channel)
        view.gate.set()
        with opening.result(10) as client:
            client.read_to_end(timeout=3)
        assert client.status == 200
        assert client.body.startswith(b": stream revoked while opening\nretry: ")
        assert client.events == [] and "retry-after" in client.headers
        assert _pending(server) == (0, 0)
        assert server.call(server.service.sse_resource.snapshot)["refused"] == {"503": 1}
        # The reconnect runs the view again (a logged-out user would be refused there).
        view.decided.clear()
        with StreamClient(server.port, "/jobs/7/events", headers=headers) as again:
            (first,) = again.wait_events(1)
            assert json.loads(first.data) == {"job": "7", "for": user}
            server.wait_clients(1)


@pytest.mark.parametrize("where", ["here", "another process"])
def test_a_revocation_of_someone_else_lets_a_held_stream_open(where: str) -> None:
    """A disconnect() of another user or channel made while the view runs leaves its stream be."""
    view = HoldingView()
    with serve(view) as server, ThreadPoolExecutor(1) as pool:
        opening = pool.submit(
            StreamClient, server.port, "/jobs/7/events", headers={"Cookie": "user=ada"}
        )
        assert view.decided.wait(10)
        _revoke(server, where, "bob", None)
        _revoke(server, where, None, "job-8")
        _revoke(server, where, "ada", "job-8")
        view.gate.set()
        with opening.result(10) as client:
            assert [e.type for e in client.wait_events(1)] == ["init"]
            server.wait_clients(1)
        assert server.call(server.service.sse_resource.snapshot)["refused"] == {}


def test_a_view_outlived_by_more_revocations_than_are_kept_is_not_trusted() -> None:
    """Past the revocations a hub remembers, revoked_since() answers yes: nothing is known safe."""
    hub = Hub(clock=Clock())
    mark = hub.revocation_mark
    assert not hub.revoked_since(mark, "ada", ["job-7"])
    for n in range(1024):
        hub.end_streams(f"user-{n}")
    assert not hub.revoked_since(mark, "ada", ["job-7"])
    assert hub.revoked_since(mark, "user-0", ["job-7"])
    assert not hub.revoked_since(hub.revocation_mark - 1, "user-0", ["job-7"])
    hub.end_streams("bob")
    assert hub.revoked_since(mark, "ada", ["job-7"])
    assert not hub.revoked_since(mark + 1, "ada", ["job-7"])


def test_a_flood_of_revocations_while_streams_open_costs_no_memory_per_stream() -> None:
    """
    50,000 revocations (other users logging out, or read from the backplane)
    while 20 streams' authorize hooks run: the hub keeps its last 1,024,
    nothing per opening stream (each once kept its own list: 76 MiB here),
    and each stream, not known safe past them, is authorized again, then opens.
    """
    pending, revocations = 20, 50_000
    gate = threading.Event()
    calls: list[str | None] = []

    def authorize(request: StreamRequest) -> bool:
        calls.append(request.identity)
        gate.wait(30)
        return True

    with serve(app, authorize=authorize, threads=pending) as server:
        hub = server.service.hub
        clients = []
        try:
            with ThreadPoolExecutor(pending) as pool:
                opening = [pool.submit(server.stream, "/sse?channel=room") for _ in range(pending)]
                wait_until(lambda: len(calls) == pending, what="the hooks to run")

                def flood() -> int:
                    tracemalloc.start()
                    try:
                        before = tracemalloc.get_traced_memory()[0]
                        for n in range(revocations):
                            hub.end_streams(f"user-{n}")
                        return tracemalloc.get_traced_memory()[0] - before
                    finally:
                        tracemalloc.stop()

                grown = server.call(flood, timeout=120)
                gate.set()
                clients = [f.result(20) for f in opening]
            # The hub's last revocations, and its record for stream tokens
            # (10,000 identities): 2.7 MiB.
            assert grown < 4 * 1024 * 1024, grown
            assert [c.status for c in clients] == [200] * pending
            server.wait_clients(pending)
            assert len(calls) == 2 * pending
        finally:
            gate.set()
            for client in clients:
                client.close()
