"""Exact bytes of the wire encoder, and every value it refuses."""

from __future__ import annotations

import math

import pytest
from support import parse_stream

from wsgi_sse._encoding import (
    encode_body,
    encode_comment,
    encode_event,
    frame,
    prepare_data,
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("hello", b"data: hello\n\n"),
        ("", b"data: \n\n"),
        ("a\nb", b"data: a\ndata: b\n\n"),
        ("a\r\nb", b"data: a\ndata: b\n\n"),
        ("a\rb", b"data: a\ndata: b\n\n"),
        ("a\r\rb", b"data: a\ndata: \ndata: b\n\n"),
        ("a\n\r\nb", b"data: a\ndata: \ndata: b\n\n"),
        ("trailing\n", b"data: trailing\ndata: \n\n"),
        ("\n", b"data: \ndata: \n\n"),
        (" leading space", b"data:  leading space\n\n"),
        ("a: colon", b"data: a: colon\n\n"),
        (":starts with colon", b"data: :starts with colon\n\n"),
        ("caf\u00e9 \U0001f600", "data: caf\u00e9 \U0001f600\n\n".encode()),
        ("nul\x00inside", b"data: nul\x00inside\n\n"),
    ],
)
def test_data_lines(data: str, expected: bytes) -> None:
    """Data is split on CRLF, CR and LF, one data field per line, UTF-8."""
    assert encode_event(data) == expected


@pytest.mark.parametrize(
    "data", ["a\nb", "a\r\nb", "a\rb", "", "\n\n", " x", "x\r", "\r\n\r\n", "\U0001f600"]
)
def test_data_round_trips_through_spec_parser(data: str) -> None:
    """A spec parser reads back exactly one event with the data (line ends as LF)."""
    parsed = parse_stream(encode_event(data, event="e", id="1").decode("utf-8"))
    expected = data.replace("\r\n", "\n").replace("\r", "\n")
    assert [(e.type, e.data, e.last_event_id) for e in parsed.events] == [("e", expected, "1")]


def test_all_fields_in_order() -> None:
    """id, event, retry and data come out in that order, ending with a blank line."""
    assert encode_event("x", event="update", id="k-7", retry=2500) == (
        b"id: k-7\nevent: update\nretry: 2500\ndata: x\n\n"
    )


def test_body_and_frame() -> None:
    """encode_body leaves out the id and the end; frame adds both."""
    body = encode_body({"a": 1}, event="json")
    assert body == b'event: json\ndata: {"a":1}\n'
    assert frame("7", body) == b'id: 7\nevent: json\ndata: {"a":1}\n\n'
    assert frame(None, body) == body + b"\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": [1, 2], "a": None}, '{"b":[1,2],"a":null}'),
        ([1, "two", 3.5, True], '[1,"two",3.5,true]'),
        (42, "42"),
        (None, "null"),
        ({"name": "Zoë"}, '{"name":"Zoë"}'),
    ],
)
def test_non_str_data_is_json(value: object, expected: str) -> None:
    """Anything but str is sent as compact JSON (non-ASCII kept as UTF-8)."""
    assert prepare_data(value) == expected
    assert encode_event(value) == b"data: " + expected.encode("utf-8") + b"\n\n"


def test_large_data() -> None:
    """A megabyte of data with many lines keeps every line."""
    lines = [f"line {i} " + "x" * 100 for i in range(10_000)]
    encoded = encode_event("\n".join(lines))
    assert encoded.count(b"\ndata: ") == len(lines) - 1
    assert parse_stream(encoded.decode()).events[0].data == "\n".join(lines)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"event": "a\nb"}, ValueError),
        ({"event": "a\rb"}, ValueError),
        ({"event": "a\x00b"}, ValueError),
        ({"event": ""}, ValueError),
        ({"event": 5}, TypeError),
        ({"event": b"bytes"}, TypeError),
        ({"id": "1\n2"}, ValueError),
        ({"id": "1\r"}, ValueError),
        ({"id": "\x00"}, ValueError),
        ({"id": 7}, TypeError),
        ({"retry": "1000"}, TypeError),
        ({"retry": 1.5}, TypeError),
        ({"retry": True}, TypeError),
        ({"retry": -1}, ValueError),
    ],
)
def test_refused_fields(kwargs: dict[str, object], error: type[Exception]) -> None:
    """Fields that would break the stream raise; nothing is stripped silently."""
    with pytest.raises(error):
        encode_event("data", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (object(), TypeError),
        (b"bytes", TypeError),
        ({1, 2}, TypeError),
        (math.nan, ValueError),
        ({"x": math.inf}, ValueError),
        ("lone \ud800 surrogate", ValueError),
    ],
)
def test_refused_data(data: object, error: type[Exception]) -> None:
    """Data that cannot be sent faithfully raises a clear error."""
    with pytest.raises(error):
        encode_event(data)


def test_circular_data_refused() -> None:
    """A self-referencing structure raises ValueError."""
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="JSON"):
        encode_event(loop)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", b":\n"),
        ("hi", b": hi\n"),
        ("a\nb", b": a\n: b\n"),
        ("a\r\nb\rc", b": a\n: b\n: c\n"),
    ],
)
def test_comments(text: str, expected: bytes) -> None:
    """Comments never produce a field, whatever their line ends."""
    assert encode_comment(text) == expected
    parsed = parse_stream(expected.decode())
    assert parsed.events == [] and parsed.fields_seen == []
