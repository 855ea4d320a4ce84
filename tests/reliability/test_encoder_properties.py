"""Property-based tests of the wire encoder against the independent spec parser."""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support import parse_stream

from wsgi_sse import encode_comment, encode_event
from wsgi_sse._encoding import encode_body, frame

settings.register_profile(
    "reliability", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("reliability")

# Text a caller may pass: anything encodable as UTF-8 (no lone surrogates).
texts = st.text(st.characters(blacklist_categories=("Cs",)))
# Line-terminator-heavy text, where framing bugs live.
nasty = st.lists(
    st.sampled_from(["\r", "\n", "\r\n", "\x00", ":", " ", "data:", "id:", "event:", "retry:", "a"])
).map("".join)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(texts, children, max_size=5),
    max_leaves=20,
)
names = texts.filter(lambda s: s != "" and not re.search(r"[\r\n\x00]", s))


def _normalise(text: str) -> str:
    """What a browser gives back for data sent as C{text}: line ends become LF."""
    return re.sub(r"\r\n|\r", "\n", text)


def _decode(wire: bytes) -> Any:
    return parse_stream(wire.decode("utf-8"))


@given(st.one_of(texts, nasty))
@example("")
@example("\r\n\r\n")
@example("a\r\rb\n\nc")
@example("\ndata: forged\n\nid: 9\nevent: x")
def test_any_string_round_trips_as_one_event(data: str) -> None:
    """Any str is delivered as exactly one message event with that data (line ends as LF)."""
    parser = _decode(encode_event(data))
    assert len(parser.events) == 1
    (event,) = parser.events
    assert (event.type, event.data, event.last_event_id) == ("message", _normalise(data), "")
    assert set(parser.fields_seen) == {"data"}
    assert parser.retry is None and parser.comments == []


@given(json_values)
def test_any_json_value_round_trips(value: Any) -> None:
    """Any JSON value is delivered as one event whose data parses back to it."""
    if isinstance(value, str):
        value = [value]  # a bare str is sent as text, not JSON
    parser = _decode(encode_event(value))
    (event,) = parser.events
    decoded = json.loads(event.data)
    assert decoded == value or _same_floats(decoded, value)
    assert set(parser.fields_seen) == {"data"}


def _same_floats(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same_floats, a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_floats(a[k], b[k]) for k in a)
    return bool(a == b)


@given(
    st.one_of(texts, nasty), st.one_of(st.none(), texts, nasty), st.one_of(st.none(), st.integers())
)
def test_event_names_and_retry_are_exact_or_refused(
    data: str, event: str | None, retry: int | None
) -> None:
    """An event name or retry either arrives exactly as given, with no other field, or raises."""
    try:
        wire = encode_event(data, event=event, retry=retry)
    except (ValueError, TypeError):
        bad_name = event is not None and (event == "" or re.search(r"[\r\n\x00]", event))
        assert bad_name or (retry is not None and retry < 0)
        return
    parser = _decode(wire)
    (dispatched,) = parser.events
    assert dispatched.type == (event or "message")
    assert dispatched.data == _normalise(data)
    assert parser.retry == retry
    expected = {"data"} | ({"event"} if event is not None else set())
    expected |= {"retry"} if retry is not None else set()
    assert set(parser.fields_seen) == expected


@given(names, st.lists(st.one_of(texts, nasty), min_size=1, max_size=5))
def test_concatenated_events_never_merge_or_split(event: str, datas: list[str]) -> None:
    """A stream of encoded events (with ids and comments between) parses to exactly those events."""
    wire = b"".join(
        encode_comment(text) + frame(f"i-{n}", encode_body(data, event=event))
        for n, (data, text) in enumerate(zip(datas, reversed(datas), strict=True))
    )
    parser = _decode(wire)
    assert [(e.type, e.data, e.last_event_id) for e in parser.events] == [
        (event, _normalise(d), f"i-{n}") for n, d in enumerate(datas)
    ]


@given(texts)
def test_comments_never_produce_events_or_fields(text: str) -> None:
    """A comment of any text dispatches nothing and sets no field."""
    parser = _decode(encode_comment(text) + encode_event("next"))
    assert [e.data for e in parser.events] == ["next"]
    assert parser.fields_seen == ["data"]
