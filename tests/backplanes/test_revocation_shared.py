"""
disconnect() through a shared backplane (a real redis-server, a real
PostgreSQL): two servers, streams of /sse and held by views, over sockets.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from backplane_support import Backend
from support import RunningServer, StreamClient, serve, wait_until
from twisted.internet.defer import Deferred

import wsgi_sse
from wsgi_sse import Allowed, StreamRequest, hold_body, hold_headers, stream_token


class App:
    """
    C{/held} holds channel C{room} for the identity in the C{user} cookie;
    while C{gate} is clear, a hold waits for it after deciding.
    """

    def __init__(self) -> None:
        self.decided = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        user = environ.get("HTTP_COOKIE", "").removeprefix("user=") or None
        if environ["PATH_INFO"] != "/held":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"hello"]
        start_response("200 OK", hold_headers("room", identity=user))
        self.decided.set()
        assert self.gate.wait(10)
        return [hold_body("hello")]


def by_cookie(request: StreamRequest) -> Allowed:
    """The cookie 'user' names the stream's owner."""
    return Allowed(True, identity=request.cookies.get("user"))


@contextlib.contextmanager
def server_on(backend: Backend, app: App) -> Iterator[RunningServer]:
    """A server on C{backend}, its backplane connected."""
    with serve(app, backplane_url=backend.url, authorize=by_cookie) as server:
        wait_until(lambda: bool(server.service.backplane.stats()["connected"]), what="connected")
        yield server


def token_server(
    backend: Backend, app: App, secret: str
) -> contextlib.AbstractContextManager[RunningServer]:
    """A server on C{backend} whose streams open with tokens only (C{authorize} refuses)."""
    return serve(app, backplane_url=backend.url, token_secret=secret, authorize=lambda r: False)


def disconnect_seen(by: RunningServer, seen_by: RunningServer, before: int, **kwargs: Any) -> None:
    """
    C{wsgi_sse.disconnect(**kwargs)} in C{by}, until C{seen_by} has read a
    revocation (past C{before}): a control reader connected but not yet
    subscribed misses what is sent meanwhile, as pub/sub does.
    """
    hub = seen_by.service.hub
    for _ in range(20):
        wsgi_sse.disconnect(hub=by.service.hub, **kwargs)
        try:
            wait_until(lambda: seen_by.call(lambda: hub.revocation_mark) > before, timeout=1.0)
            return
        except AssertionError:
            continue
    raise AssertionError("the revocation never reached the other process")


def _ada(server: RunningServer, path: str) -> StreamClient:
    return StreamClient(server.port, path, headers={"Cookie": "user=ada"})


def test_disconnect_in_one_process_ends_sse_and_held_streams_in_both(
    shared_backend: Backend,
) -> None:
    """disconnect(identity=) ends the /sse and held streams of that user in both processes."""
    app = App()
    with server_on(shared_backend, app) as a, server_on(shared_backend, app) as b:
        ada = [_ada(s, p) for s in (a, b) for p in ("/sse?channel=room", "/held")]
        bob = StreamClient(b.port, "/held", headers={"Cookie": "user=bob"})
        guest = b.stream("/sse?channel=room")
        a.wait_clients(2)
        b.wait_clients(4)
        disconnect_seen(a, b, b.call(lambda: b.service.hub.revocation_mark), identity="ada")
        for client in ada:
            client.read_to_end()
            client.close()
        a.wait_clients(0)
        b.wait_clients(2)
        b.service.broadcaster.broadcast_and_wait("still here", channel="room")
        for client in (bob, guest):
            client.wait_for(lambda c: [e.data for e in c.events][-1:] == ["still here"])
            client.close()


def test_disconnect_from_another_process_while_a_view_holds_reaches_its_stream(
    shared_backend: Backend,
) -> None:
    """A revocation read from the backplane while a view runs keeps its stream from opening."""
    app = App()
    with server_on(shared_backend, app) as a, server_on(shared_backend, app) as b:
        app.gate.clear()
        hub = b.service.hub
        before = b.call(lambda: hub.revocation_mark)
        with ThreadPoolExecutor(1) as pool:
            opening = pool.submit(_ada, b, "/held")
            assert app.decided.wait(10)
            disconnect_seen(a, b, before, identity="ada")
            app.gate.set()
            with opening.result(10) as client:
                client.read_to_end()
        assert client.body.startswith(b": stream revoked while opening\nretry: ")
        assert client.events == []
        b.wait_clients(0)


def test_disconnect_while_a_resuming_stream_waits_for_its_replay(
    shared_backend: Backend,
) -> None:
    """
    A stream that resumes (Last-Event-ID) in a process that must fetch what
    it missed from the backplane, revoked while the fetch runs, ends; the
    replay arriving afterwards is sent to no one.
    """
    app = App()
    with server_on(shared_backend, app) as a:
        with _ada(a, "/sse?channel=room") as first:
            a.wait_clients(1)
            a.service.broadcaster.broadcast_and_wait("seen", channel="room")
            last = first.wait_events(1)[0].last_event_id
        a.service.broadcaster.broadcast_and_wait("missed", channel="room")
        with server_on(shared_backend, app) as late:
            hub = late.service.hub
            backplane = hub.backplane
            fetches: list[tuple[Deferred[Any], Deferred[Any]]] = []

            def stalled(position: int, event_id: str) -> Deferred[Any]:
                # The real fetch, handed over only when the test says so.
                handed: Deferred[Any] = Deferred()
                fetches.append((backplane.fetch_after(position, event_id), handed))
                return handed

            late.call(setattr, hub, "backplane", _Stalling(backplane, stalled))
            try:
                client = StreamClient(
                    late.port,
                    "/sse?channel=room",
                    headers={"Cookie": "user=ada", "Last-Event-ID": last},
                )
                wait_until(lambda: late.call(hub.held_count) == 1, what="held")
                wsgi_sse.disconnect(identity="ada", hub=hub)
                client.read_to_end()
                assert client.events == []
                late.wait_clients(0)
                assert late.call(hub.held_count) == 0

                def hand_over() -> None:
                    real, handed = fetches[0]
                    real.chainDeferred(handed)

                late.call(hand_over)
                late.service.broadcaster.broadcast_and_wait("after", channel="room")
                assert late.call(lambda: hub.stats.replays_fetched) == 0
                assert late.call(late.service.sse_resource.snapshot)["replays"] == 1
            finally:
                late.call(setattr, hub, "backplane", backplane)
                client.close()


class _Stalling:
    """A backplane whose fetches go through C{fetch_after}; the rest is the real one's."""

    def __init__(self, real: Any, fetch_after: Any) -> None:
        self._real = real
        self.fetch_after = fetch_after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_disconnect_of_a_long_channel_reaches_the_other_process(shared_backend: Backend) -> None:
    """disconnect(channel=) of the longest name allowed ends its streams in both processes."""
    app = App()
    channel = "c" * 1000
    with contextlib.ExitStack() as stack:
        a, b = (
            stack.enter_context(
                serve(app, backplane_url=shared_backend.url, max_channel_length=1000)
            )
            for _ in range(2)
        )
        for server in (a, b):
            wait_until(lambda s=server: bool(s.service.backplane.stats()["connected"]))
        streams = [stack.enter_context(s.stream(f"/sse?channel={channel}")) for s in (a, b)]
        a.wait_clients(1)
        b.wait_clients(1)
        disconnect_seen(a, b, b.call(lambda: b.service.hub.revocation_mark), channel=channel)
        for stream in streams:
            stream.read_to_end()
        b.wait_clients(0)
        assert b.call(lambda: b.service.hub.presence.malformed) == 0


def test_disconnect_in_another_process_refuses_older_stream_tokens_here(
    shared_backend: Backend,
) -> None:
    """
    A revocation read from the backplane refuses here the tokens made before
    it arrived (403, as expired ones); a token made after it opens.
    """
    secret = "k" * 40
    app = App()
    with contextlib.ExitStack() as stack:
        a, b = (stack.enter_context(token_server(shared_backend, app, secret)) for _ in range(2))
        for server in (a, b):
            wait_until(lambda s=server: bool(s.service.backplane.stats()["connected"]))
        old = stream_token(["room"], identity="ada", secret=secret)
        hub = b.service.hub
        before = b.call(lambda: hub.revocation_mark)
        disconnect_seen(a, b, before, identity="ada")
        with StreamClient(b.port, f"/sse?token={old}", headers={"Connection": "close"}) as refused:
            refused.read_to_end()
        assert (refused.status, refused.body) == (403, b"stream token revoked\n")
        time.sleep(0.005)  # the next millisecond: made after the revocation arrived
        fresh = stream_token(["room"], identity="ada", secret=secret)
        with b.stream(f"/sse?token={fresh}") as opened:
            assert opened.status == 200
            b.wait_clients(1)


def test_a_disconnect_made_while_the_server_is_down_reaches_the_others_once_it_is_back(
    shared_backend: Backend,
) -> None:
    """
    disconnect() in one process while the backplane's server is unreachable
    is sent again once it is back (each process listening anew asks for
    it): the other process ends the user's stream and refuses the token
    made before the disconnect(), and still opens one made after it, during
    the outage (the revocation keeps its time, not its late arrival's).
    """
    secret = "k" * 40
    app = App()
    with contextlib.ExitStack() as stack:
        a, b = (stack.enter_context(token_server(shared_backend, app, secret)) for _ in range(2))

        def connected(server: RunningServer) -> bool:
            return bool(server.service.backplane.stats()["connected"])

        wait_until(lambda: connected(a) and connected(b), what="connected")
        old = stream_token(["room"], identity="ada", ttl=3600, secret=secret)
        with StreamClient(b.port, f"/sse?token={old}") as ada:
            assert ada.status == 200
            b.wait_clients(1)
            shared_backend.stop()
            try:
                wait_until(lambda: not connected(a), what="the outage seen")
                wsgi_sse.disconnect(identity="ada", hub=a.service.hub)
                a.call(lambda: None)
                time.sleep(0.005)  # the next millisecond: made after the revocation
                during = stream_token(["room"], identity="ada", ttl=3600, secret=secret)
                assert b.call(lambda: b.service.hub.revocation_mark) == 0
            finally:
                shared_backend.start()
            ada.read_to_end(timeout=30)
        b.wait_clients(0)
        with StreamClient(b.port, f"/sse?token={old}", headers={"Connection": "close"}) as refused:
            refused.read_to_end()
        assert (refused.status, refused.body) == (403, b"stream token revoked\n")
        with b.stream(f"/sse?token={during}") as opened:
            assert opened.status == 200
            b.wait_clients(1)


def test_a_process_started_after_a_disconnect_learns_it_from_the_others(
    shared_backend: Backend,
) -> None:
    """
    A process started (or restarted) after a disconnect() made in another
    one asks the others for what it missed: it refuses the token made
    before the disconnect(), and opens one made after it.
    """
    secret = "k" * 40
    app = App()
    with token_server(shared_backend, app, secret) as a:
        wait_until(lambda: bool(a.service.backplane.stats()["connected"]), what="connected")
        old = stream_token(["room"], identity="ada", ttl=3600, secret=secret)
        wsgi_sse.disconnect(identity="ada", hub=a.service.hub)
        a.call(lambda: None)
        time.sleep(0.005)  # the next millisecond: made after the revocation
        fresh = stream_token(["room"], identity="ada", ttl=3600, secret=secret)
        with token_server(shared_backend, app, secret) as b:
            hub = b.service.hub
            wait_until(lambda: b.call(lambda: hub.revocation_mark) > 0, what="the revocation")
            with StreamClient(b.port, f"/sse?token={old}", headers={"Connection": "close"}) as no:
                no.read_to_end()
            assert (no.status, no.body) == (403, b"stream token revoked\n")
            with b.stream(f"/sse?token={fresh}") as opened:
                assert opened.status == 200
                b.wait_clients(1)


def test_a_disconnect_outlives_its_process_in_a_rolling_restart(shared_backend: Backend) -> None:
    """
    A rolling restart: the process that called disconnect() stops, a new
    one starts, then the other old one stops and a second new one starts.
    Each new process learns the revocation from a process that heard it
    (none of them made it): the old token is refused, a fresh one opens.
    """
    secret = "k" * 40
    app = App()
    with contextlib.ExitStack() as stack:
        # Each old process in a stack of its own, to stop it on its own.
        old_a, old_b = contextlib.ExitStack(), contextlib.ExitStack()
        stack.callback(old_a.close)
        stack.callback(old_b.close)
        a = old_a.enter_context(token_server(shared_backend, app, secret))
        b = old_b.enter_context(token_server(shared_backend, app, secret))
        for server in (a, b):
            wait_until(lambda s=server: bool(s.service.backplane.stats()["connected"]))
        old = stream_token(["room"], identity="ada", ttl=3600, secret=secret)
        time.sleep(0.005)  # the next millisecond: the revocation is made after the token
        disconnect_seen(a, b, 0, identity="ada")
        time.sleep(0.005)
        fresh = stream_token(["room"], identity="ada", ttl=3600, secret=secret)
        old_a.close()
        c = stack.enter_context(token_server(shared_backend, app, secret))
        wait_until(lambda: c.call(lambda: c.service.hub.revocation_mark) > 0, what="c learns it")
        old_b.close()
        d = stack.enter_context(token_server(shared_backend, app, secret))
        wait_until(lambda: d.call(lambda: d.service.hub.revocation_mark) > 0, what="d learns it")
        with StreamClient(d.port, f"/sse?token={old}", headers={"Connection": "close"}) as no:
            no.read_to_end()
        assert (no.status, no.body) == (403, b"stream token revoked\n")
        with d.stream(f"/sse?token={fresh}") as opened:
            assert opened.status == 200
            d.wait_clients(1)
