"""
Any body sent to the publish endpoint gets a JSON answer: 4xx for what it
refuses, never a 500 page, and nothing it refuses is published.
"""

from __future__ import annotations

import json
from typing import Any

from support import http_request, serve

SECRET = "s3cret-s3cret-s3cret"
LIMIT = 64 * 1024


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Answer hello."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def deep(depth: int, inner: bytes = b"1") -> bytes:
    """A JSON document nested C{depth} arrays deep."""
    return b"[" * depth + inner + b"]" * depth


HOSTILE = [
    # (name, body, content type)
    ("nested arrays filling the limit", b"[" * (LIMIT - 1), "application/json"),
    ("balanced nesting 20,000 deep", deep(20_000), "application/json"),
    ("data nested 20,000 deep", b'{"data": ' + deep(20_000) + b"}", "application/json"),
    (
        "objects nested 10,000 deep",
        b'{"data": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001,
        "application/json",
    ),
    ("data nested just past the limit", b'{"data": ' + deep(64) + b"}", "application/json"),
    ("an integer of 5,000 digits", b'{"data": 1' + b"0" * 5_000 + b"}", "application/json"),
    ("a float overflowing to infinity", b'{"data": 1e999}', "application/json"),
    ("NaN", b'{"data": NaN}', "application/json"),
    ("-Infinity", b'{"data": -Infinity}', "application/json"),
    ("invalid UTF-8", b'{"data": "\xff\xfe"}', "application/json"),
    ("UTF-16", '{"data": "x"}'.encode("utf-16"), "application/json"),
    ("a lone surrogate", b'{"data": "\\ud800"}', "application/json"),
    ("a surrogate as the event name", b'{"data": 1, "event": "\\udfff"}', "application/json"),
    ("a NUL in the event name", b'{"data": 1, "event": "a\\u0000b"}', "application/json"),
    ("a non-object", b"[1, 2]", "application/json"),
    ("an empty body", b"", "application/json"),
    ("a truncated body", b'{"data": "abc', "application/json"),
    # (A string never closed, full of escaped quotes: the nesting check
    # once scanned it again from each quote, 20 s of reactor for 64 KiB.)
    (
        "an unclosed string of escaped quotes filling the limit",
        b'{"data":"' + b'\\"' * ((LIMIT - 9) // 2),
        "application/json",
    ),
    ("an unclosed string holding deep nesting", b'{"data":"' + b"[" * 60_000, "application/json"),
    ("garbage", b"\x00\x01\x02", "application/json"),
    ("form with invalid UTF-8", b"data=%ff%fe", "application/x-www-form-urlencoded"),
    ("form with a lone surrogate escape", b"data=%ed%a0%80", "application/x-www-form-urlencoded"),
    ("form fields repeated", b"data=a&data=b", "application/x-www-form-urlencoded"),
    ("JSON keys repeated", b'{"data": 1, "channel": "a", "channel": "b"}', "application/json"),
    ("JSON data repeated", b'{"data": 1, "data": 2}', "application/json"),
    ("form garbage", b"&&&===", "application/x-www-form-urlencoded"),
]


def test_hostile_publish_bodies_get_a_json_4xx() -> None:
    """Deep nesting, huge numbers, non-finite floats, bad encodings: a JSON 4xx, none published."""
    with serve(app, publish_path="/publish", publish_secret=SECRET) as server:
        results = []
        for name, body, ctype in HOSTILE:
            assert len(body) <= LIMIT, name
            status, headers, answer = http_request(
                server.port,
                "POST",
                "/publish",
                body=body,
                headers={"Authorization": f"Bearer {SECRET}", "Content-Type": ctype},
            )
            results.append(f"{name}: {status} {answer[:80]!r}")
            assert 400 <= status < 500, results[-1]
            assert headers["content-type"] == "application/json", results[-1]
            assert "error" in json.loads(answer), results[-1]
        assert server.call(lambda: server.service.hub.stats.events_published) == 0
        print("\n  " + "\n  ".join(results))


def test_reasonable_nesting_is_published() -> None:
    """Data nested 32 deep, and brackets inside strings, are accepted and delivered intact."""
    nested: Any = 1
    for i in range(16):
        nested = [{"level": i, "inner": nested}]
    brackets = {"text": '[[[{{{ \\" ' * 2000, "quote": '"]]]'}
    with serve(app, publish_path="/publish", publish_secret=SECRET) as server:
        with server.stream("/sse?channel=deep") as client:
            server.wait_clients(1)
            for data in (nested, brackets):
                status, _, answer = http_request(
                    server.port,
                    "POST",
                    "/publish",
                    body=json.dumps({"channel": "deep", "data": data}).encode(),
                    headers={
                        "Authorization": f"Bearer {SECRET}",
                        "Content-Type": "application/json",
                    },
                )
                assert status == 200, answer
            events = client.wait_events(2)
            assert [json.loads(e.data) for e in events] == [nested, brackets]


def test_field_names_reach_the_log_escaped() -> None:
    """Unknown or repeated field names are quoted in the answer and the log: no raw CR or ESC."""
    from twisted.logger import formatEvent, globalLogPublisher

    seen: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        seen.append(formatEvent(event))

    bodies = [
        (b'{"data": 1, "x\\r\\u001b[2Jforged": 1}', "application/json"),
        (b"data=1&x%0D%1B[2J=1&x%0D%1B[2J=2", "application/x-www-form-urlencoded"),
    ]
    with serve(app, publish_path="/publish", publish_secret=SECRET) as server:
        globalLogPublisher.addObserver(observe)
        try:
            for body, ctype in bodies:
                status, _, answer = http_request(
                    server.port,
                    "POST",
                    "/publish",
                    body=body,
                    headers={"Authorization": f"Bearer {SECRET}", "Content-Type": ctype},
                )
                error = json.loads(answer)["error"]
                assert status == 400 and "'x\\r\\x1b[2J" in error, error
        finally:
            globalLogPublisher.removeObserver(observe)
    refusals = [line for line in seen if line.startswith("publish refused")]
    assert len(refusals) == 2, seen
    assert not any(c in line for line in refusals for c in "\r\x1b"), refusals
