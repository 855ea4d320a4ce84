"""
The rules every identity and channel name follows, wherever it comes from:
an application's call, a stream request, a token, another process.

Pure: no Twisted, no other module of the package, so that any module may
import it at load time.  Every function: may be called in any thread.
"""

from __future__ import annotations

import re

__all__ = [
    "CONTROL_CHANNEL",
    "CONTROL_CHARACTERS",
    "MAX_CHANNEL",
    "MAX_IDENTITY",
    "SHORT_CHANNEL",
    "channel_too_long",
    "check_identity",
    "valid_identity",
    "validate_channel",
]

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
"""What no identity, channel name or secret may hold: C0 controls and DEL."""

MAX_IDENTITY = 256
"""The longest identity (in characters) a stream may carry."""

MAX_CHANNEL = 1000
"""The longest channel name, in bytes of UTF-8."""

SHORT_CHANNEL = MAX_CHANNEL // 4
"""
Characters a channel name may have without being able to exceed
L{MAX_CHANNEL} bytes (UTF-8 takes at most 4 bytes a character): callers on
a hot path test C{len(name) > SHORT_CHANNEL} before L{channel_too_long}.
"""

CONTROL_CHANNEL = "#wsgi-sse"
"""
The reserved channel carrying presence and revocation messages between
processes.  Browsers cannot join it (C{#} is outside every accepted channel
name) and the hub keeps no history of it.
"""


def valid_identity(identity: str) -> bool:
    """
    Whether the str C{identity} may be carried by a stream: 1 to
    L{MAX_IDENTITY} characters, no control characters.
    """
    return 0 < len(identity) <= MAX_IDENTITY and CONTROL_CHARACTERS.search(identity) is None


def check_identity(identity: object) -> str | None:
    """
    Return C{identity} if a stream may carry it (L{None}: a guest).

    @raise TypeError: if it is neither a str nor L{None}.
    @raise ValueError: if it is empty, longer than L{MAX_IDENTITY}, or has
        control characters.
    """
    if identity is None:
        return None
    if not isinstance(identity, str):
        raise TypeError(f"identity must be a str or None, not {type(identity).__name__}")
    # valid_identity()'s rule, inline: every stream open with an identity
    # comes here.
    if not identity or len(identity) > MAX_IDENTITY or CONTROL_CHARACTERS.search(identity):
        raise ValueError(f"identity must be 1-{MAX_IDENTITY} characters without control characters")
    return identity


def channel_too_long(name: str) -> bool:
    """
    Whether C{name} takes more than L{MAX_CHANNEL} bytes in UTF-8 (a lone
    surrogate, which UTF-8 cannot encode, counted as the 3 bytes it would
    take).
    """
    return len(name) > SHORT_CHANNEL and len(name.encode("utf-8", "surrogatepass")) > MAX_CHANNEL


def validate_channel(channel: object) -> str:
    """
    Check a channel name given to C{broadcast()}, returning it.

    @raise TypeError: if it is not a str.
    @raise ValueError: if it is empty, contains control characters, cannot
        be encoded as UTF-8, is longer than L{MAX_CHANNEL} bytes in it, or
        is L{CONTROL_CHANNEL}.
    """
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a str, not {type(channel).__name__}")
    if not channel:
        raise ValueError("channel must not be empty")
    if CONTROL_CHARACTERS.search(channel):
        raise ValueError("channel must not contain control characters")
    try:
        size = len(channel.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("channel must be encodable as UTF-8") from None
    if size > MAX_CHANNEL:
        raise ValueError(f"channel must be at most {MAX_CHANNEL} bytes in UTF-8")
    if channel == CONTROL_CHANNEL:
        raise ValueError(f"channel {CONTROL_CHANNEL!r} is reserved for presence and revocation")
    return channel
