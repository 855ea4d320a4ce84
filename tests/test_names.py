"""The identity and channel-name rules every module shares, at their edges."""

from __future__ import annotations

import pytest

from wsgi_sse._names import (
    CONTROL_CHANNEL,
    CONTROL_CHARACTERS,
    MAX_CHANNEL,
    MAX_IDENTITY,
    SHORT_CHANNEL,
    channel_too_long,
    check_identity,
    valid_identity,
    validate_channel,
)


@pytest.mark.parametrize("char", [chr(c) for c in (*range(0x20), 0x7F)])
def test_control_characters_are_c0_and_del(char: str) -> None:
    """Every C0 control and DEL is a control character."""
    assert CONTROL_CHARACTERS.search(f"a{char}b")


@pytest.mark.parametrize("char", [" ", "~", "\x80", "\x9f", "\u00a0", "\u2028", "\U0001f600"])
def test_other_characters_are_not(char: str) -> None:
    """Space, printable ASCII and everything above DEL (C1 controls too) are not."""
    assert CONTROL_CHARACTERS.search(char) is None


@pytest.mark.parametrize(
    ("identity", "valid"),
    [
        ("a", True),
        ("x" * MAX_IDENTITY, True),
        ("\U0001f600" * MAX_IDENTITY, True),  # characters, not bytes
        ("x" * (MAX_IDENTITY + 1), False),
        ("", False),
        ("a\nb", False),
        ("a\x7f", False),
        ("tab\t", False),
    ],
)
def test_identity_rule(identity: str, valid: bool) -> None:
    """An identity is 1 to 256 characters without control characters; both checks agree."""
    assert valid_identity(identity) is valid
    if valid:
        assert check_identity(identity) == identity
    else:
        with pytest.raises(ValueError, match="1-256 characters without control characters"):
            check_identity(identity)


def test_identity_none_and_wrong_type() -> None:
    """None is a guest; anything but a str or None is a TypeError."""
    assert check_identity(None) is None
    with pytest.raises(TypeError, match="not bytes"):
        check_identity(b"ada")


@pytest.mark.parametrize(
    ("name", "too_long"),
    [
        ("x" * MAX_CHANNEL, False),
        ("x" * (MAX_CHANNEL + 1), True),
        ("\U0001f600" * SHORT_CHANNEL, False),  # exactly MAX_CHANNEL bytes
        ("\U0001f600" * SHORT_CHANNEL + "x", True),
        ("\u00e9" * (MAX_CHANNEL // 2), False),
        ("\u00e9" * (MAX_CHANNEL // 2) + "x", True),
        ("\ud800" * 333 + "x", False),  # a lone surrogate counts 3 bytes
        ("\ud800" * 334, True),
    ],
)
def test_channel_size_counts_utf8_bytes(name: str, too_long: bool) -> None:
    """A channel name's size is its UTF-8 bytes, at most 1,000."""
    assert channel_too_long(name) is too_long


def test_short_names_cannot_be_too_long() -> None:
    """No name of SHORT_CHANNEL characters exceeds MAX_CHANNEL bytes, whatever it holds."""
    assert len(("\U0010ffff" * SHORT_CHANNEL).encode("utf-8")) == MAX_CHANNEL


@pytest.mark.parametrize(
    ("channel", "error", "message"),
    [
        (7, TypeError, "channel must be a str, not int"),
        ("", ValueError, "must not be empty"),
        ("a\x00b", ValueError, "control characters"),
        ("\ud800", ValueError, "encodable as UTF-8"),
        ("\u00e9" * (MAX_CHANNEL // 2) + "x", ValueError, "at most 1000 bytes"),
        (CONTROL_CHANNEL, ValueError, "reserved"),
    ],
)
def test_validate_channel_refuses(channel: object, error: type[Exception], message: str) -> None:
    """broadcast()'s channel rule refuses each malformed name with its reason."""
    with pytest.raises(error, match=message):
        validate_channel(channel)


def test_validate_channel_accepts_the_largest_name() -> None:
    """A name of exactly 1,000 bytes of UTF-8 is accepted as given."""
    name = "\u00e9" * (MAX_CHANNEL // 2)
    assert validate_channel(name) is name
