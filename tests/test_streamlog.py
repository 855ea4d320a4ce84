"""The stream log: a summary per busy interval by default, a line per stream when asked."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock
from twisted.logger import Logger

from wsgi_sse._streamlog import StreamLog


def _log() -> tuple[Logger, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    return Logger(observer=events.append), events


def test_summary_counts_streams_once_per_interval() -> None:
    """Streams opening within an interval are counted into one line, logged when it ends."""
    clock = Clock()
    log, events = _log()
    open_now = [0]
    stream_log = StreamLog(
        log, per_stream=False, clock=lambda: clock, open_count=lambda: open_now[0]
    )
    for _ in range(500):
        open_now[0] += 1
        stream_log.opened("127.0.0.1", ("a",), None, 0, False)
    open_now[0] -= 1
    stream_log.closed("127.0.0.1", ("a",), "gone")
    assert events == []
    clock.advance(10)
    assert [(e["opened"], e["closed"], e["open"]) for e in events] == [(500, 1, 499)]
    clock.advance(60)
    assert len(events) == 1 and clock.getDelayedCalls() == []


def test_last_stream_closing_logs_the_summary_at_once() -> None:
    """When no stream is left open the pending summary is logged at once, leaving no timer."""
    clock = Clock()
    log, events = _log()
    open_now = [1]
    stream_log = StreamLog(
        log, per_stream=False, clock=lambda: clock, open_count=lambda: open_now[0]
    )
    stream_log.opened("127.0.0.1", ("a",), None, 0, False)
    open_now[0] = 0
    stream_log.closed("127.0.0.1", ("a",), "gone")
    assert [(e["opened"], e["closed"], e["open"]) for e in events] == [(1, 1, 0)]
    assert clock.getDelayedCalls() == []


def test_per_stream_lines_carry_their_fields() -> None:
    """per_stream=True logs each opening and closing with its fields, and schedules nothing."""
    clock = Clock()
    log, events = _log()
    stream_log = StreamLog(log, per_stream=True, clock=lambda: clock, open_count=lambda: 1)
    stream_log.opened("10.0.0.1", ("a", "b"), "x-3", 2, False)
    stream_log.closed("10.0.0.1", ("a", "b"), "Connection was closed cleanly.")
    assert [e["log_format"].split(" ")[1] for e in events] == ["opened", "closed"]
    assert events[0]["channels"] == ["a", "b"] and events[0]["replayed"] == 2
    assert events[1]["reason"] == "Connection was closed cleanly."
    assert clock.getDelayedCalls() == []
