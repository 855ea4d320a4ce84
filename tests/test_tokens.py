"""Signed stream tokens: signing, verification, and /sse?token= over real sockets."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import http_request, logged, serve

import wsgi_sse
import wsgi_sse._tokens as tokens_module
from wsgi_sse import (
    InvalidStreamToken,
    StreamGrant,
    StreamOptions,
    StreamRequest,
    stream_token,
    verify_stream_token,
)
from wsgi_sse._tokens import granted_channels

SECRET = "s" * 40
KEY = SECRET.encode()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with 'hello'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def refuse_all(request: StreamRequest) -> bool:
    """An authorize hook that lets nobody in."""
    return False


@pytest.fixture(autouse=True)
def no_configured_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts with no secret from the environment or an earlier server."""
    monkeypatch.delenv("WSGI_SSE_TOKEN_SECRET", raising=False)
    tokens_module.set_token_secret(None)
    yield
    tokens_module.set_token_secret(None)


def _claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))  # type: ignore[no-any-return]


# -- the pure functions ---------------------------------------------------------


def test_token_round_trip() -> None:
    """A token verifies to its channels, identity, expiry and when it was made."""
    token = stream_token(["a", "b"], ttl=60, identity="user-7", secret=SECRET, now=1000.0125)
    grant = verify_stream_token(token, secret=KEY, now=1059)
    assert grant == StreamGrant(("a", "b"), "user-7", 1060, 1000.012)


def test_token_is_compact_and_url_safe() -> None:
    """A token needs no escaping in a query string and stays short."""
    token = stream_token("news", secret=SECRET)
    assert all(c.isalnum() or c in "-_." for c in token)
    assert len(token) < 120


def test_expired_token_refused() -> None:
    """At its expiry time a token stops verifying."""
    token = stream_token("a", ttl=30, secret=SECRET, now=1000)
    with pytest.raises(InvalidStreamToken, match="expired"):
        verify_stream_token(token, secret=KEY, now=1030)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature
        lambda t: t.replace(".", ".x", 1),  # signature length
        lambda t: t.split(".")[0],  # no signature
        lambda t: "x" + t,  # payload
        lambda t: t + "!",  # not base64url
        lambda t: "a" * 5000,  # oversized
    ],
)
def test_tampered_token_refused(tamper: Any) -> None:
    """Any change to a token, or garbage, fails verification."""
    token = stream_token("a", secret=SECRET)
    with pytest.raises(InvalidStreamToken):
        verify_stream_token(tamper(token), secret=KEY)


def test_reforged_payload_refused() -> None:
    """A payload rewritten to grant more channels and a later expiry fails the signature."""
    token = stream_token("a", secret=SECRET, now=1000)
    claims = _claims(token)
    claims["c"], claims["x"] = ["a", "admin"], claims["x"] + 10_000
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidStreamToken, match="signature"):
        verify_stream_token(forged + "." + token.split(".")[1], secret=KEY, now=1000)


def test_other_secret_refused() -> None:
    """A token signed with another secret does not verify."""
    token = stream_token("a", secret="o" * 40)
    with pytest.raises(InvalidStreamToken, match="signature"):
        verify_stream_token(token, secret=KEY)


def test_no_secret_is_a_clear_error() -> None:
    """Signing without any configured secret says how to configure one."""
    with pytest.raises(RuntimeError, match=r"token_secret=.*WSGI_SSE_TOKEN_SECRET"):
        stream_token("a")


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """stream_token() signs with $WSGI_SSE_TOKEN_SECRET when given no secret."""
    monkeypatch.setenv("WSGI_SSE_TOKEN_SECRET", SECRET)
    assert verify_stream_token(stream_token("a"), secret=KEY).channels == ("a",)


def test_server_secret_used_by_stream_token() -> None:
    """stream_token() in the app's views signs with the token_secret of the server built."""
    with serve(app, token_secret=SECRET):
        assert verify_stream_token(stream_token("a"), secret=KEY).channels == ("a",)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"secret": "short"}, ValueError),
        ({"secret": SECRET, "ttl": 0}, ValueError),
        ({"secret": SECRET, "identity": "x" * 300}, ValueError),
        ({"secret": SECRET, "identity": 7}, TypeError),
        # Identities a stream could not carry (Allowed(identity=...) refuses them too).
        ({"secret": SECRET, "identity": ""}, ValueError),
        ({"secret": SECRET, "identity": "ada\nid: 1"}, ValueError),
        ({"secret": SECRET, "identity": "ada\x00"}, ValueError),
    ],
)
def test_bad_arguments_raise(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """A short secret, a non-positive ttl or a bad identity raise at the API."""
    with pytest.raises(error):
        stream_token("a", **kwargs)


def test_empty_channels_raise() -> None:
    """A token must open at least one channel."""
    with pytest.raises(ValueError, match="at least one channel"):
        stream_token([], secret=SECRET)


def test_short_server_secret_refused_at_start() -> None:
    """A token_secret shorter than 32 characters fails at start-up, naming the minimum."""
    with pytest.raises(ValueError, match="at least 32"):
        StreamOptions(token_secret="too-short")


def test_granted_channels() -> None:
    """A grant opens all its channels, or the named ones among them; any other is refused."""
    grant = StreamGrant(("a", "b"), None, 0)
    assert granted_channels(grant, None) == ("a", "b")
    assert granted_channels(grant, ["b", "b"]) == ("b",)
    with pytest.raises(InvalidStreamToken, match="does not open: c"):
        granted_channels(grant, ["a", "c"])


# -- over real sockets ----------------------------------------------------------


def test_token_opens_its_channels_despite_authorize() -> None:
    """A valid token opens its channels where the authorize hook refuses everyone."""
    with serve(app, authorize=refuse_all, token_secret=SECRET) as server:
        status, _, _ = http_request(server.port, "GET", "/sse?channel=a")
        assert status == 403
        token = stream_token(["a", "b"], identity="ada", secret=SECRET)
        with server.stream(f"/sse?token={token}") as client:
            assert client.status == 200
            server.wait_clients(1)
            channels = server.call(lambda: dict(server.service.hub.channel_counts()))
            assert channels == {"a": 1, "b": 1}
            identities = server.call(
                lambda: [c.identity for c in server.service.sse_resource.clients]
            )
            assert identities == ["ada"]
            bc = server.service.broadcaster
            bc.broadcast_and_wait("on b", channel="b")
            assert [e.data for e in client.wait_events(1)] == ["on b"]


@pytest.mark.parametrize("tagged", ["", "&channelInId=1"])
def test_token_identity_counts_in_presence_and_disconnect_ends_it(tagged: str) -> None:
    """A token's identity is in presence() (channel-tagged streams too) and disconnect() ends it."""
    with serve(app, token_secret=SECRET) as server:
        token = stream_token(["a", "b"], identity="ada", secret=SECRET)
        with server.stream(f"/sse?token={token}{tagged}") as client:
            assert client.status == 200
            server.wait_clients(1)
            assert [dict(wsgi_sse.presence(c).identities) for c in "ab"] == [{"ada": 1}] * 2
            wsgi_sse.disconnect(identity="ada")
            client.read_to_end()
        server.wait_clients(0)
        assert wsgi_sse.presence("a").connections == 0


def test_token_with_a_subset_of_its_channels() -> None:
    """Naming some of the token's channels opens only those."""
    with serve(app, authorize=refuse_all, token_secret=SECRET) as server:
        token = stream_token(["a", "b"], secret=SECRET)
        with server.stream(f"/sse?channel=b&token={token}") as client:
            assert client.status == 200
            server.wait_clients(1)
            assert server.call(lambda: dict(server.service.hub.channel_counts())) == {"b": 1}


def test_token_identity_reaches_initial_hook() -> None:
    """The initial hook sees the token's identity on the StreamRequest."""
    with serve(app, initial=lambda r: {"me": r.identity}, token_secret=SECRET) as server:
        token = stream_token("a", identity="grace", secret=SECRET)
        with server.stream(f"/sse?token={token}") as client:
            (init,) = client.wait_events(1)
            assert (init.type, init.data) == ("init", '{"me":"grace"}')


@pytest.mark.parametrize(
    ("make_path", "why"),
    [
        (lambda t: f"/sse?channel=c&token={t}", b"the token does not open: c"),
        (lambda t: f"/sse?channel=a&channel=c&token={t}", b"does not open: c"),
        (lambda t: f"/sse?token={t[:-3]}xyz", b"signature does not match"),
        (
            lambda t: f"/sse?token={stream_token('a', secret=SECRET, now=time.time() - 120)}",
            b"expired",
        ),
        (lambda t: f"/sse?token={stream_token('a', secret='z' * 40)}", b"signature"),
    ],
)
def test_bad_token_is_403(make_path: Any, why: bytes) -> None:
    """Other-channel use, tampering, expiry (issued 2 minutes ago) and a foreign secret: 403."""
    with serve(app, token_secret=SECRET) as server:
        token = stream_token(["a", "b"], secret=SECRET)
        status, _, body = http_request(server.port, "GET", make_path(token))
        assert status == 403 and why in body
        assert server.client_count() == 0
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0


def test_token_checked_on_head_and_given_once() -> None:
    """HEAD checks the token as GET does; two tokens in one URL are a 400."""
    with serve(app, token_secret=SECRET) as server:
        token = stream_token("a", secret=SECRET)
        assert http_request(server.port, "HEAD", f"/sse?token={token}")[0] == 200
        assert http_request(server.port, "HEAD", f"/sse?token={token}x")[0] == 403
        assert http_request(server.port, "HEAD", f"/sse?channel=b&token={token}")[0] == 403
        status, _, body = http_request(server.port, "GET", f"/sse?token={token}&token={token}")
        assert status == 400 and b"more than once" in body


def test_token_channels_obey_the_channel_rules() -> None:
    """A token's channels are held to max_channels and the channel pattern, as a URL's are."""
    with serve(app, token_secret=SECRET, max_channels=2) as server:
        many = stream_token(["a", "b", "c"], secret=SECRET)
        status, _, body = http_request(server.port, "GET", f"/sse?token={many}")
        assert status == 400 and b"too many channels" in body
        odd = stream_token(["a b"], secret=SECRET)
        status, _, body = http_request(server.port, "GET", f"/sse?token={odd}")
        assert status == 400 and b"characters outside" in body


def test_without_server_secret_token_is_left_to_authorize() -> None:
    """A server with no token secret leaves ?token= to the authorize hook, as a plain parameter."""
    seen: list[tuple[str, ...]] = []

    def authorize(request: StreamRequest) -> bool:
        seen.append(request.query["token"])
        return False

    with serve(app, authorize=authorize) as server:
        token = stream_token("a", secret=SECRET)
        status, _, body = http_request(server.port, "GET", f"/sse?token={token}")
        assert status == 403 and b"not allowed to join: default" in body
        assert seen == [(token,)]


def test_token_never_logged() -> None:
    """Neither the access log nor the stream's log lines contain a token, valid or not."""
    with logged(fields=True) as lines:
        with serve(app, token_secret=SECRET, log_streams=True) as server:
            token = stream_token("a", secret=SECRET)
            bad = stream_token("a", secret=SECRET, now=0)
            http_request(server.port, "GET", f"/sse?channel=a&token={bad}")
            http_request(server.port, "GET", f"/hello?x=1&token={token}")
            # A stream still open at shutdown is finished, and then logged.
            client = server.stream(f"/sse?token={token}")
            server.wait_clients(1)
            assert client.status == 200
        client.close()
    log = "\n".join(lines)
    # The access log lines, redacted.
    assert '"GET /sse?token=*** HTTP/1.1" 200' in log
    assert '"GET /sse?channel=a&token=*** HTTP/1.0" 403' in log
    assert '"GET /hello?x=1&token=*** HTTP/1.0" 200' in log
    assert "refused stream" in log and "stream opened" in log
    for secret_part in (token, bad, token.split(".")[1], bad.split(".")[1]):
        assert secret_part not in log


def test_token_under_an_encoded_name_never_logged() -> None:
    """A token whose parameter name is percent-encoded opens the stream, and is redacted too."""
    with logged(fields=True) as lines:
        with serve(app, token_secret=SECRET) as server:
            token = stream_token("a", secret=SECRET)
            http_request(server.port, "GET", f"/hello?x=1&t%6Fken={token}")
            client = server.stream(f"/sse?%74oken={token}")
            server.wait_clients(1)
            assert client.status == 200
        client.close()
    log = "\n".join(lines)
    assert '"GET /sse?%74oken=*** HTTP/1.1" 200' in log
    assert '"GET /hello?x=1&t%6Fken=*** HTTP/1.0" 200' in log
    assert token.split(".")[1] not in log


def test_stream_request_repr_leaves_out_cookies_headers_and_query() -> None:
    """A hook that logs the request logs no session cookie, credential or token."""
    request = StreamRequest(
        channels=("news",),
        last_event_id=None,
        headers={"authorization": "Bearer header-secret"},
        cookies={"sessionid": "cookie-secret"},
        query={"token": ("token-secret",)},
        client_address="127.0.0.1",
        path="/sse",
    )
    text = repr(request)
    assert "news" in text and "/sse" in text
    for secret in ("header-secret", "cookie-secret", "token-secret"):
        assert secret not in text
    assert request.cookies["sessionid"] == "cookie-secret"
