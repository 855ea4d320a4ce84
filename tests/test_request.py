"""What a stream request asks for, decided on plain values (wsgi_sse._request)."""

from __future__ import annotations

import pytest

from wsgi_sse import StreamOptions, hold_body, hold_headers
from wsgi_sse._request import (
    GripHold,
    Refused,
    cors_for_preflight,
    cors_for_stream,
    parse_channels,
    parse_grip,
    parse_last_event_id,
)

OPTIONS = StreamOptions()


def test_channels_are_checked_deduplicated_and_default() -> None:
    """Channel values keep their order without duplicates; none gives the default channel."""
    assert parse_channels([b"b", b"a", b"b"], OPTIONS) == ("b", "a")
    assert parse_channels([], OPTIONS) == ("default",)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([b"x"] * 17, "too many channels"),
        ([b"\xff"], "UTF-8"),
        ([b"a b"], "characters outside"),
        ([b""], "empty"),
    ],
)
def test_bad_channels_are_a_400(values: list[bytes], message: str) -> None:
    """Too many, non-UTF-8, empty or ill-formed channel names are refused with 400."""
    with pytest.raises(Refused) as refused:
        parse_channels(values, OPTIONS)
    assert refused.value.code == 400 and message in refused.value.message


def test_last_event_id_from_header_then_query() -> None:
    """The header wins over the query parameter; an empty header means none."""
    assert parse_last_event_id(b"h-1", [b"q-1"]) == "h-1"
    assert parse_last_event_id(None, [b"q-1"]) == "q-1"
    assert parse_last_event_id(b"  ", []) is None
    assert parse_last_event_id(None, []) is None
    # A channel-tagged id (the browser client's): the event id before the space.
    assert parse_last_event_id(b"mi4d0q2k-17 news", []) == "mi4d0q2k-17"
    # Its channel may be long, or UTF-8 (a custom channel_pattern).
    assert parse_last_event_id(b"mi4d0q2k-17 " + b"c" * 200, []) == "mi4d0q2k-17"
    assert parse_last_event_id(None, ["mi4d0q2k-17 café".encode()]) == "mi4d0q2k-17"


@pytest.mark.parametrize(
    ("header", "query", "message"),
    [
        (b"x" * 129, [], "longer than 128"),
        ("é".encode(), [], "ASCII"),
        (b"a\x01", [], "control characters"),
        (None, [b"1", b"2"], "more than once"),
    ],
)
def test_bad_last_event_ids_are_a_400(
    header: bytes | None, query: list[bytes], message: str
) -> None:
    """Over-long, non-ASCII, control-character or repeated ids are refused with 400."""
    with pytest.raises(Refused) as refused:
        parse_last_event_id(header, query)
    assert refused.value.code == 400 and message in refused.value.message


def test_no_grip_hold_is_not_a_hold() -> None:
    """A response without Grip-Hold is served as it is (even with Grip-Channel)."""
    assert parse_grip([("Content-Type", "text/html"), ("Grip-Channel", "a")], OPTIONS) is None


def test_grip_hold_parses_channels_and_strips_grip_headers() -> None:
    """Channels come from every Grip-Channel header, parameters dropped; Grip-* and length go."""
    hold = parse_grip(
        [
            ("Content-Type", "text/event-stream"),
            ("GRIP-HOLD", " Stream "),
            ("Grip-Channel", "a; prev-id=1, b ,a"),
            ("grip-channel", "c"),
            ("Grip-Keep-Alive", "x; format=cstring; timeout=20"),
            ("Content-Length", "10"),
            ("X-Mine", "1"),
        ],
        OPTIONS,
    )
    assert hold == GripHold(
        ("a", "b", "c"), (("Content-Type", "text/event-stream"), ("X-Mine", "1"))
    )


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ([("Grip-Hold", "response"), ("Grip-Channel", "a")], "not supported"),
        ([("Grip-Hold", "stream")], "without a Grip-Channel"),
        ([("Grip-Hold", "stream"), ("Grip-Channel", " , ;x=1")], "without a Grip-Channel"),
        ([("Grip-Hold", "stream"), ("Grip-Channel", "a b")], "characters outside"),
        (
            [("Grip-Hold", "stream"), ("Grip-Channel", ",".join(f"c{i}" for i in range(17)))],
            "too many channels",
        ),
        ([("Grip-Hold", "stream"), ("Grip-Channel", "a" * 9000)], "too long"),
        (
            [("Grip-Hold", "stream"), ("Grip-Channel", "a"), ("Content-Encoding", "br")],
            "cannot be compressed",
        ),
    ],
)
def test_grip_holds_that_cannot_be_followed_raise(
    headers: list[tuple[str, str]], message: str
) -> None:
    """Another hold mode, no channel, bad or too many channels, compression: ValueError says why."""
    with pytest.raises(ValueError, match=message):
        parse_grip(headers, OPTIONS)


def test_grip_channels_follow_the_servers_channel_rules() -> None:
    """A server's own channel pattern and length apply to held channels."""
    strict = StreamOptions(channel_pattern=r"job-\d+", max_channel_length=8)
    assert parse_grip([("Grip-Hold", "stream"), ("Grip-Channel", "job-1")], strict) is not None
    with pytest.raises(ValueError, match="outside"):
        parse_grip([("Grip-Hold", "stream"), ("Grip-Channel", "user-1")], strict)
    with pytest.raises(ValueError, match="longer"):
        parse_grip([("Grip-Hold", "stream"), ("Grip-Channel", "job-12345")], strict)


def test_hold_headers_round_trip_through_parse_grip() -> None:
    """hold_headers() makes exactly the hold parse_grip() reads back."""
    headers = hold_headers("job-1", "jobs", "job-1")
    hold = parse_grip(headers, OPTIONS)
    assert hold is not None and hold.channels == ("job-1", "jobs")
    assert ("Content-Type", "text/event-stream; charset=utf-8") in hold.headers


@pytest.mark.parametrize(
    ("channels", "error"),
    [
        ((), ValueError),
        (("a,b",), ValueError),
        (("a;b",), ValueError),
        ((" a",), ValueError),
        (("",), ValueError),
        ((3,), TypeError),
    ],
)
def test_hold_headers_refuses_what_grip_cannot_carry(
    channels: tuple[object, ...], error: type[Exception]
) -> None:
    """No channel, GRIP separators, padding, empty or non-str names raise at the call."""
    with pytest.raises(error):
        hold_headers(*channels)  # type: ignore[arg-type]


def test_hold_body_is_an_init_event_or_nothing() -> None:
    """hold_body() encodes an init event (JSON for non-str), or nothing for None."""
    assert hold_body({"a": 1}) == b'event: init\ndata: {"a":1}\n\n'
    assert hold_body(None) == b""


def test_cors_for_stream_decisions() -> None:
    """No origin and the same origin pass; listed origins are granted; others refused."""
    listed = StreamOptions(cors_origins=("https://app.example.com",))
    assert cors_for_stream(None, "h", listed).allowed
    same = cors_for_stream("http://h:80", "h:80", listed)
    assert same.allowed and same.headers == ()
    granted = cors_for_stream("https://APP.example.com", "h", listed)
    assert granted.allowed
    assert dict(granted.headers)[b"Access-Control-Allow-Origin"] == b"https://APP.example.com"
    assert not cors_for_stream("https://evil.example", "h", listed).allowed
    anyone = cors_for_stream("https://x.example", "h", StreamOptions(cors_origins=("*",)))
    assert dict(anyone.headers)[b"Access-Control-Allow-Origin"] == b"*"
    creds = StreamOptions(cors_origins=("https://a.example",), cors_credentials=True)
    assert (b"Access-Control-Allow-Credentials", b"true") in cors_for_stream(
        "https://a.example", "h", creds
    ).headers


def test_cors_for_preflight_decisions() -> None:
    """Preflights: listed origins get methods and headers, others are refused."""
    listed = StreamOptions(cors_origins=("https://app.example.com",))
    ok = dict(cors_for_preflight("https://app.example.com", listed).headers)
    assert ok[b"Access-Control-Allow-Methods"] == b"GET, HEAD, OPTIONS"
    assert b"Last-Event-ID" in ok[b"Access-Control-Allow-Headers"]
    assert not cors_for_preflight("https://evil.example", listed).allowed
    assert cors_for_preflight(None, listed).headers == ()
