"""
disconnect() refuses the stream tokens made before it, over real sockets: a
page reconnecting with the same URL does not get its stream back.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import RunningServer, StreamClient, http_request, serve

import wsgi_sse
import wsgi_sse._tokens as tokens_module
from wsgi_sse import StreamRequest, stream_token
from wsgi_sse._revoked import RevokedTokens
from wsgi_sse._tokens import MAX_TOKEN_TTL

SECRET = "r" * 40


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture(autouse=True)
def no_configured_secret() -> Iterator[None]:
    """The servers here leave no token secret configured behind them."""
    yield
    tokens_module.set_token_secret(None)


@pytest.fixture
def server() -> Iterator[RunningServer]:
    """A server that reads stream tokens (and refuses streams without one)."""
    with serve(app, token_secret=SECRET, authorize=lambda request: False) as running:
        yield running


def token(channels: list[str], identity: str | None = None, *, at: float | None = None) -> str:
    """A token made now (or at C{at})."""
    return stream_token(channels, identity=identity, secret=SECRET, now=at)


def opened(server: RunningServer, token: str, channels: str = "") -> tuple[int, bytes]:
    """Open /sse with C{token} (and C{channels}, a query): the status, a refusal's body."""
    path = f"/sse?token={token}{channels}"
    with StreamClient(server.port, path, headers={"Connection": "close"}) as client:
        if client.status != 200:
            client.read_to_end()
            return client.status, client.body
        server.wait_clients(1)
    server.wait_clients(0)
    return 200, b""


def disconnect(server: RunningServer, **kwargs: Any) -> None:
    """disconnect() from this (non-reactor) thread, once it has reached the hub."""
    hub = server.service.hub
    wsgi_sse.disconnect(hub=hub, **kwargs)
    server.call(lambda: None)  # after the revocation, handed over first


def after_now() -> float:
    """A moment surely later than the revocations made so far, to the millisecond."""
    time.sleep(0.005)
    return time.time()


def test_a_token_reconnecting_after_disconnect_is_refused_as_if_expired(
    server: RunningServer,
) -> None:
    """
    A stream opened with a token, ended by disconnect(identity=), cannot
    reopen with that token: 403, like an expired token; a token made after
    the revocation opens.
    """
    old = token(["a"], "ada")
    with server.stream(f"/sse?token={old}") as client:
        assert client.status == 200
        server.wait_clients(1)
        disconnect(server, identity="ada")
        client.read_to_end()
    server.wait_clients(0)
    assert opened(server, old) == (403, b"stream token revoked\n")
    status, headers, _ = http_request(server.port, "HEAD", f"/sse?token={old}")
    assert status == 403
    assert headers["content-type"] == "text/plain; charset=utf-8"
    expired = token(["a"], "ada", at=time.time() - 120)
    assert opened(server, expired) == (403, b"stream token expired\n")
    assert opened(server, token(["a"], "ada", at=after_now())) == (200, b"")
    snapshot = server.call(server.service.sse_resource.snapshot)
    assert snapshot["refused"] == {"403": 3}


def test_tokens_of_others_open_after_a_disconnect_of_an_identity(server: RunningServer) -> None:
    """A disconnect(identity=) refuses none of another identity's tokens, nor a guest's."""
    before = time.time() - 1
    disconnect(server, identity="ada")
    assert opened(server, token(["a"], "bob", at=before)) == (200, b"")
    assert opened(server, token(["a"], at=before)) == (200, b"")
    assert opened(server, token(["a"], "ada", at=before))[0] == 403


def test_disconnect_of_a_channel_refuses_older_tokens_opening_it(server: RunningServer) -> None:
    """
    disconnect(channel=) refuses the tokens made before it that would open
    that channel, whoever they are for; a token opening only other channels
    (or asked for only those) opens.
    """
    before = time.time() - 1
    disconnect(server, channel="b")
    for who in ("ada", None):
        assert opened(server, token(["a", "b"], who, at=before))[0] == 403
        assert opened(server, token(["b"], who, at=before), "&channel=b")[0] == 403
    assert opened(server, token(["a"], "ada", at=before)) == (200, b"")
    assert opened(server, token(["a", "b"], "ada", at=before), "&channel=a") == (200, b"")
    assert opened(server, token(["a", "b"], "ada", at=after_now())) == (200, b"")


def test_disconnect_of_an_identity_on_a_channel(server: RunningServer) -> None:
    """disconnect(identity=, channel=) refuses that identity's older tokens opening that channel."""
    before = time.time() - 1
    disconnect(server, identity="ada", channel="b")
    assert opened(server, token(["b"], "ada", at=before))[0] == 403
    assert opened(server, token(["a"], "ada", at=before)) == (200, b"")
    assert opened(server, token(["b"], "bob", at=before)) == (200, b"")


def _legacy_token(channels: list[str], identity: str) -> str:
    """A token as made before tokens said when they were made (no "t")."""
    claims = {"c": channels, "x": int(time.time() + 60), "i": identity}
    raw = json.dumps(claims, separators=(",", ":")).encode()
    payload = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    signature = tokens_module._sign(SECRET.encode(), payload)
    return payload + "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()


def test_a_token_without_its_making_time_is_refused_by_a_revocation_remembered(
    server: RunningServer,
) -> None:
    """A token not saying when it was made opens unless a revocation matching it is remembered."""
    assert opened(server, _legacy_token(["a"], "ada")) == (200, b"")
    disconnect(server, identity="ada")
    assert opened(server, _legacy_token(["a"], "ada"))[0] == 403
    assert opened(server, _legacy_token(["a"], "bob")) == (200, b"")


def test_disconnect_while_the_initial_hook_runs_refuses_the_token() -> None:
    """
    A token stream whose initial hook is still running when disconnect()
    matches it is refused (403) as on a reconnect, not opened.
    """
    calls: list[str] = []

    def initial(request: StreamRequest) -> str:
        calls.append("initial")
        wsgi_sse.disconnect(identity="ada")
        return "state"

    with serve(app, token_secret=SECRET, initial=initial) as server:
        assert opened(server, token(["a"], "ada")) == (403, b"stream token revoked\n")
        assert calls == ["initial"]
        server.wait_clients(0)


def test_revocations_remembered_are_bounded_and_fail_closed(server: RunningServer) -> None:
    """
    Past the limit of revocations remembered, the oldest is forgotten and
    every token made at or before it is refused, whoever it is for; tokens
    made after it open.
    """
    hub = server.service.hub
    server.call(setattr, hub.revoked_tokens, "limit", 3)
    before = time.time() - 1
    disconnect(server, identity="u1")
    between = after_now()
    for n in range(2, 5):
        disconnect(server, identity=f"u{n}")
    assert server.call(lambda: len(hub.revoked_tokens)) == 3
    assert opened(server, token(["a"], "zed", at=before))[0] == 403
    assert opened(server, token(["a"], "u1", at=before))[0] == 403
    assert opened(server, token(["a"], "zed", at=between)) == (200, b"")
    assert opened(server, token(["a"], "u4", at=between))[0] == 403


def test_revocations_are_forgotten_once_no_token_made_before_them_is_valid() -> None:
    """After the longest a token lives, a revocation (or the limit's floor) refuses nothing."""
    revoked = RevokedTokens(limit=1)
    revoked.record("ada", None, at=1000.0, now=1000.0)
    revoked.record("bob", None, at=1001.0, now=1001.0)
    assert len(revoked) == 1
    assert revoked.refused("zed", ["a"], 999.0, now=1002.0)
    assert revoked.refused("bob", ["a"], None, now=1002.0)
    assert not revoked.refused("zed", ["a"], 1000.5, now=1002.0)
    later = 1001.0 + MAX_TOKEN_TTL
    assert not revoked.refused("zed", ["a"], 999.0, now=later)
    assert not revoked.refused("bob", ["a"], None, now=later)
    assert len(revoked) == 0


def test_a_token_lives_a_day_at_most() -> None:
    """stream_token() refuses a ttl longer than revocations are remembered for."""
    assert stream_token("a", ttl=MAX_TOKEN_TTL, secret=SECRET)
    with pytest.raises(ValueError, match="at most 86400"):
        stream_token("a", ttl=MAX_TOKEN_TTL + 1, secret=SECRET)


def test_a_token_made_after_disconnect_returns_opens(server: RunningServer) -> None:
    """
    A token made once disconnect() has returned (a new login, in the same
    view) opens, even though the revocation reaches the server after it was made.
    """
    busy = threading.Event()
    release = threading.Event()

    def hold_the_reactor() -> None:
        busy.set()
        assert release.wait(10)

    server.service.reactor.callFromThread(hold_the_reactor)
    assert busy.wait(10)
    wsgi_sse.disconnect(hub=server.service.hub, identity="ada")
    fresh = token(["a"], "ada", at=after_now())
    time.sleep(0.005)
    release.set()
    server.call(lambda: None)
    assert opened(server, fresh) == (200, b"")
