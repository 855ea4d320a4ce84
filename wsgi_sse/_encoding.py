"""
The event-stream wire format: pure functions from Python values to bytes.

Nothing here knows about Twisted or threads; every function may be called in
any thread.  The output follows the WHATWG "event stream interpretation"
(https://html.spec.whatwg.org/multipage/server-sent-events.html):

- data is split on CRLF, CR and LF, and every line becomes one ``data:``
  field, so a line ending inside the data can never end the event early;
- ``event`` and ``id`` values may not contain CR, LF or NUL, and ``retry`` must
  be a non-negative integer: anything else raises instead of being silently
  altered;
- the result is UTF-8.
"""

from __future__ import annotations

import json
import re

__all__ = [
    "encode_body",
    "encode_comment",
    "encode_data",
    "encode_event",
    "encode_opening",
    "encode_retry",
    "frame",
    "prepare_data",
    "validate_event_name",
    "validate_id",
    "validate_retry",
]

# Every line terminator the spec recognises: CRLF first so it counts as one.
_LINE_SPLIT = re.compile(r"\r\n|\r|\n")
_FORBIDDEN_IN_FIELD = re.compile(r"[\r\n\x00]")


def prepare_data(data: object) -> str:
    """
    Turn a broadcast payload into the text sent as the event's data.

    ``str`` is sent as it is; every other value is encoded as compact JSON.

    @raise TypeError: if C{data} is neither a string nor JSON-serialisable.
    @raise ValueError: if C{data} contains a float that JSON cannot represent
        (NaN or infinity) or a circular reference.
    """
    if isinstance(data, str):
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            "broadcast data must be str or a JSON-serialisable value, not bytes; decode it first"
        )
    try:
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except TypeError as e:
        raise TypeError(f"broadcast data is not JSON-serialisable: {e}") from None
    except ValueError as e:
        raise ValueError(f"broadcast data cannot be encoded as JSON: {e}") from None


def _check_field(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    bad = _FORBIDDEN_IN_FIELD.search(value)
    if bad is not None:
        raise ValueError(
            f"{name} must not contain CR, LF or NUL (found {bad.group()!r} "
            f"at position {bad.start()})"
        )
    return value


def validate_event_name(event: object) -> str:
    """
    Check an event name, returning it.

    @raise TypeError: if it is not a str.
    @raise ValueError: if it is empty or contains CR, LF or NUL.
    """
    return _check_field("event", event)


def validate_id(event_id: object) -> str:
    """
    Check an event id, returning it.

    @raise TypeError: if it is not a str.
    @raise ValueError: if it is empty or contains CR, LF or NUL.
    """
    return _check_field("id", event_id)


def validate_retry(retry: object) -> int:
    """
    Check a reconnection time in milliseconds, returning it.

    @raise TypeError: if it is not an int (``bool`` is refused too).
    @raise ValueError: if it is negative.
    """
    if isinstance(retry, bool) or not isinstance(retry, int):
        raise TypeError(f"retry must be an int (milliseconds), not {type(retry).__name__}")
    if retry < 0:
        raise ValueError(f"retry must not be negative, got {retry}")
    return retry


def encode_data(text: str) -> bytes:
    """
    Encode C{text} as ``data:`` lines, one per line of the text.

    An empty string becomes a single empty ``data:`` line, which a browser
    delivers as an event whose data is the empty string.

    @raise ValueError: if C{text} cannot be encoded as UTF-8 (lone
        surrogates).
    """
    try:
        encoded = [line.encode("utf-8") for line in _LINE_SPLIT.split(text)]
    except UnicodeEncodeError as e:
        raise ValueError(f"data cannot be encoded as UTF-8: {e}") from None
    return b"".join([b"data: " + line + b"\n" for line in encoded])


def encode_retry(retry: int) -> bytes:
    """Encode a ``retry:`` field line."""
    return b"retry: %d\n" % (validate_retry(retry),)


def encode_body(data: object, *, event: str | None = None, retry: int | None = None) -> bytes:
    """
    Encode everything of an event except its ``id:`` line and final blank line.

    The result is what a publisher prepares once, in its own thread; the hub
    then adds the id (see L{frame}).  Validation happens before anything is
    encoded, so a refused value never produces partial output.
    """
    parts = []
    if event is not None:
        parts.append(b"event: " + validate_event_name(event).encode("utf-8") + b"\n")
    if retry is not None:
        parts.append(encode_retry(retry))
    parts.append(encode_data(prepare_data(data)))
    return b"".join(parts)


def frame(event_id: str | None, body: bytes) -> bytes:
    """
    Complete an event: prefix the ``id:`` line (if any) and end the event.

    C{event_id} is trusted: ids come from the hub, which makes them valid.
    """
    if event_id is None:
        return body + b"\n"
    return b"id: " + event_id.encode("ascii") + b"\n" + body + b"\n"


def encode_event(
    data: object,
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """
    Encode one complete event.

    >>> encode_event("a\\nb", event="greeting", id="7")
    b'id: 7\\nevent: greeting\\ndata: a\\ndata: b\\n\\n'
    """
    if id is not None:
        validate_id(id)
    return frame(id, encode_body(data, event=event, retry=retry))


def encode_comment(text: str = "") -> bytes:
    """
    Encode comment lines: ignored by clients, they keep connections alive.

    Multi-line text becomes one comment line per line.  No blank line
    follows: a comment line is ignored wherever it falls, even inside the
    next event, whereas a blank line after a block of comments, though the
    spec dispatches nothing for it (the data buffer is empty), reaches some
    clients as an empty message (httpx-sse, once an event id was seen).

    >>> encode_comment()
    b':\\n'
    """
    try:
        lines = [line.encode("utf-8") for line in _LINE_SPLIT.split(text)]
    except UnicodeEncodeError as e:
        raise ValueError(f"comment cannot be encoded as UTF-8: {e}") from None
    return b"".join([(b": " + line if line else b":") + b"\n" for line in lines])


def encode_opening(retry: int) -> bytes:
    """
    Encode the lines that open a stream: a comment (sent at once, so that
    the response starts) and the C{retry:} field, with no blank line after.

    A browser's EventSource (and npm C{eventsource}) applies C{retry:} as
    soon as it reads the line.  Leaving the block open attaches the field to
    the stream's first event, which is where the clients that only honour
    C{retry:} on a dispatched event read it (htmx 4, httpx-sse); a block of
    its own would reach httpx-sse as an empty message, and htmx 4 would
    ignore it.

    >>> encode_opening(3000)
    b': connected\\nretry: 3000\\n'
    """
    return b": connected\n" + encode_retry(retry)
