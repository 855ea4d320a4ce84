"""
Signed, short-lived stream tokens: C{/sse?token=...} opens exactly the
channels a view granted, without a cookie or a session.

A token is C{<payload>.<signature>}, both base64url without padding: the
payload is compact JSON (C{{"c": [channels], "x": expiry, "t": issued,
"i": identity}}: C{x} in seconds, C{t} in milliseconds since the epoch),
the signature an HMAC-SHA256 of the payload under the server's secret.
Nothing here knows about Twisted or threads: every function may be called in
any thread.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import math
import re
import time
from dataclasses import dataclass
from hashlib import sha256
from typing import Iterable, Union
from urllib.parse import unquote_to_bytes

from ._names import check_identity

__all__ = [
    "MAX_TOKEN_TTL",
    "MIN_TOKEN_SECRET_LENGTH",
    "TOKEN_SECRET_ENV",
    "InvalidStreamToken",
    "StreamGrant",
    "check_token_secret",
    "granted_channels",
    "may_hold_token",
    "redact_tokens",
    "resolve_token_secret",
    "set_token_secret",
    "stream_token",
    "verify_stream_token",
]

TOKEN_SECRET_ENV = "WSGI_SSE_TOKEN_SECRET"  # noqa: S105 - a variable name
"""The environment variable read for the secret when none is configured."""

MIN_TOKEN_SECRET_LENGTH = 32
"""Characters (or bytes) a token secret must have at least."""

MAX_TOKEN_LENGTH = 4096
"""Characters of a token read at most: a longer one is refused unread."""

MAX_TOKEN_TTL = 86400
"""Seconds a stream token may be valid for at most (a day)."""

_DOMAIN = b"wsgi-sse stream token v1\n"
_B64 = re.compile(r"[A-Za-z0-9_-]+")

Secret = Union[str, bytes]

# The secret of the server built by make_application()/make_service() in this
# process, used by stream_token() when no secret is passed.
_configured_secret: bytes | None = None


class InvalidStreamToken(ValueError):  # noqa: N818 - reads as a sentence
    """A stream token that is malformed, tampered with, or expired."""


@dataclass(frozen=True, slots=True)
class StreamGrant:
    """
    What a valid stream token grants.

    @ivar channels: the channels it opens, in the order they were granted.
    @ivar identity: who it was issued to (a user id, a device name), or
        L{None}.
    @ivar expires: when it stops being accepted, in seconds since the epoch.
    @ivar issued: when it was made, in seconds since the epoch (to the
        millisecond), or L{None} for a token made before tokens carried it.
    """

    channels: tuple[str, ...]
    identity: str | None
    expires: int
    issued: float | None = None


def check_token_secret(secret: object) -> bytes:
    """
    Return C{secret} as bytes if it can sign tokens.

    @raise TypeError: if it is neither C{str} nor C{bytes}.
    @raise ValueError: if it is shorter than L{MIN_TOKEN_SECRET_LENGTH}.
    """
    if isinstance(secret, str):
        raw = secret.encode("utf-8")
    elif isinstance(secret, bytes):
        raw = secret
    else:
        raise TypeError(f"token_secret must be a str or bytes, not {type(secret).__name__}")
    if len(raw) < MIN_TOKEN_SECRET_LENGTH:
        raise ValueError(
            f"token_secret must have at least {MIN_TOKEN_SECRET_LENGTH} characters "
            "(for example secrets.token_urlsafe(32))"
        )
    return raw


def resolve_token_secret(secret: Secret | None) -> bytes | None:
    """
    The secret a server verifies tokens with: C{secret}, else
    C{$WSGI_SSE_TOKEN_SECRET}, else L{None} (tokens are refused).

    @raise ValueError: if the one found is too short.
    """
    if secret is None:
        from ._config import environment_value

        secret = environment_value("token_secret") or None
        if secret is None:
            return None
    return check_token_secret(secret)


def set_token_secret(secret: bytes | None) -> None:
    """Make C{secret} the one L{stream_token} uses when given none (may be L{None})."""
    global _configured_secret
    _configured_secret = secret


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _B64.fullmatch(text):
        raise InvalidStreamToken("malformed stream token")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidStreamToken("malformed stream token") from None


def _sign(secret: bytes, payload: str) -> bytes:
    return hmac.new(secret, _DOMAIN + payload.encode("ascii"), sha256).digest()


def stream_token(
    channels: Iterable[str] | str,
    *,
    ttl: float = 60,
    identity: str | None = None,
    secret: Secret | None = None,
    now: float | None = None,
) -> str:
    """
    Sign a token that opens C{channels} for C{ttl} seconds.

    Put it in the stream's URL (C{/sse?token=...}): the server subscribes the
    connection to exactly those channels (or the ones it names among them)
    without running the C{authorize} hook.  The token is URL-safe.  Call it
    in any thread, typically in the view that renders the page.

    @param channels: a channel name or several.
    @param ttl: seconds the token is accepted (for opening a stream; an open
        stream is not cut when it expires), at most L{MAX_TOKEN_TTL}.
    @param identity: who the token is for; the server carries it with the
        stream (C{StreamRequest.identity}).
    @param secret: the signing secret; default: the C{token_secret} of the
        server built in this process, else C{$WSGI_SSE_TOKEN_SECRET}.
    @param now: the current time (seconds since the epoch); default: the
        system clock.
    @raise RuntimeError: if no secret is configured.
    @raise ValueError: for an empty channel list, a C{ttl} not positive or
        above L{MAX_TOKEN_TTL}, a too short secret, or an identity that is
        empty, longer than L{MAX_IDENTITY<wsgi_sse._names.MAX_IDENTITY>}
        or has control characters.
    @raise TypeError: for an identity that is not a str.
    """
    if secret is None:
        key = _configured_secret or resolve_token_secret(None)
        if key is None:
            raise RuntimeError(
                "no stream token secret: pass token_secret= to make_application() "
                f"or set ${TOKEN_SECRET_ENV}"
            )
    else:
        key = check_token_secret(secret)
    names = [channels] if isinstance(channels, str) else list(channels)
    if not names:
        raise ValueError("a stream token needs at least one channel")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"channel names must be non-empty str, got {name!r}")
    if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    if ttl > MAX_TOKEN_TTL:
        raise ValueError(f"ttl must be at most {MAX_TOKEN_TTL} seconds, got {ttl!r}")
    issued = time.time() if now is None else now
    claims: dict[str, object] = {
        "c": list(dict.fromkeys(names)),
        "x": int(issued + ttl),
        # Milliseconds, rounded down: a token made just after a revocation
        # may be taken for one made at the same moment (and be refused).
        "t": math.floor(issued * 1000),
    }
    if identity is not None:
        claims["i"] = check_identity(identity)
    payload = _b64encode(
        json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    )
    token = payload + "." + _b64encode(_sign(key, payload))
    if len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"stream token longer than {MAX_TOKEN_LENGTH} characters")
    return token


def verify_stream_token(token: str, *, secret: bytes, now: float | None = None) -> StreamGrant:
    """
    Check a stream token and return what it grants.

    Pure: no I/O besides reading the clock when C{now} is not given.  The
    signature is compared in constant time before the payload is parsed.

    @param token: the token as it came in (hostile input).
    @param secret: the server's secret (see L{resolve_token_secret}).
    @param now: the current time (seconds since the epoch).
    @raise InvalidStreamToken: if the token is malformed, its signature does
        not match, or it has expired.  (Whether a L{wsgi_sse.disconnect}
        revoked it is the server's to check: see L{StreamGrant.issued}.)
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidStreamToken("malformed stream token")
    payload, dot, signature = token.partition(".")
    if not dot:
        raise InvalidStreamToken("malformed stream token")
    given = _b64decode(signature)
    if not _B64.fullmatch(payload):
        raise InvalidStreamToken("malformed stream token")
    if not hmac.compare_digest(given, _sign(secret, payload)):
        raise InvalidStreamToken("stream token signature does not match")
    # Signed by us from here on: the shape is still checked, cheaply.
    try:
        claims = json.loads(_b64decode(payload))
        channels = tuple(claims["c"])
        expires = claims["x"]
        issued = claims.get("t")
        identity = claims.get("i")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise InvalidStreamToken("malformed stream token") from None
    if (
        not channels
        or not all(isinstance(c, str) and c for c in channels)
        or isinstance(expires, bool)
        or not isinstance(expires, int)
        or not (issued is None or (isinstance(issued, int) and not isinstance(issued, bool)))
        or not (identity is None or isinstance(identity, str))
    ):
        raise InvalidStreamToken("malformed stream token")
    if (time.time() if now is None else now) >= expires:
        raise InvalidStreamToken("stream token expired")
    return StreamGrant(channels, identity, expires, None if issued is None else issued / 1000)


def granted_channels(grant: StreamGrant, requested: Iterable[str] | None) -> tuple[str, ...]:
    """
    The channels a stream opened with C{grant} subscribes to: those
    C{requested} (none: all of the grant's), each of which the grant must name.

    @raise InvalidStreamToken: naming the requested channels it does not open.
    """
    if requested is None:
        return grant.channels
    names = tuple(dict.fromkeys(requested))
    outside = [c for c in names if c not in grant.channels]
    if outside:
        raise InvalidStreamToken(f"the token does not open: {', '.join(outside)}")
    return names or grant.channels


_TOKEN_IN_QUERY = re.compile(rb"([?&;]token=)[^&;#\s]*")
_QUERY_PARAM = re.compile(rb"([?&;])([^=&;#\s]*)=[^&;#\s]*")


def may_hold_token(uri: bytes) -> bool:
    """Whether C{uri} may carry a C{token} query parameter (see L{redact_tokens})."""
    return b"token=" in uri or (b"%" in uri and b"?" in uri)


def _hide_token(match: re.Match[bytes]) -> bytes:
    name = match.group(2)
    if unquote_to_bytes(name.replace(b"+", b" ")) != b"token":
        return match.group(0)
    return match.group(1) + name + b"=***"


def redact_tokens(uri: bytes) -> bytes:
    """
    Replace the value of every C{token} query parameter of C{uri} by
    C{***}: every parameter whose name decodes to C{token}, as the stream
    reads it (C{%74oken=} included).
    """
    if b"%" in uri:
        return _QUERY_PARAM.sub(_hide_token, uri)
    if b"token=" not in uri:
        return uri
    return _TOKEN_IN_QUERY.sub(rb"\1***", uri)
