"""
What one append to a shared backplane carries, against a real redis-server
and a real PostgreSQL: a burst of large events is split into runs and
appends of bounded size, and every process still gets every event, in
order, once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from backplane_support import Backend
from test_contract import server_on

from wsgi_sse._encoding import encode_body
from wsgi_sse._shared import split_runs

BODY = 900_000  # bytes of data per event, under the 1 MiB an event may have
EVENTS = 8
BOUND = 2_500_000  # bytes per append in this test (16 MiB by default)


@contextlib.contextmanager
def redis_bulk_limit(backend: Backend, limit: int) -> Iterator[None]:
    """
    Redis refuses a value longer than C{limit} bytes (C{proto-max-bulk-len},
    512 MB by default) while the block lasts, closing the connection.
    """
    if backend.kind != "redis":
        yield
        return
    raw = backend.server.client()
    before = raw.config_get("proto-max-bulk-len")["proto-max-bulk-len"]
    raw.config_set("proto-max-bulk-len", limit)
    try:
        yield
    finally:
        raw.config_set("proto-max-bulk-len", before)


def test_a_burst_of_large_events_is_appended_in_bounded_pieces(shared_backend: Backend) -> None:
    """
    Eight events of 900 kB published at once (7.2 MB, one run) reach the
    other process whole and in order, though the publisher's appends may
    carry 2.5 MB each: the run is split, each append stays under the bound.
    With Redis refusing values over 3 MB, the run as one entry would be
    refused and these events shared with no other process.
    """
    bodies = [encode_body(f"{i}:" + "x" * BODY) for i in range(EVENTS)]
    with (
        redis_bulk_limit(shared_backend, 3_000_000),
        server_on(shared_backend, max_buffer=64 << 20) as a,
        server_on(shared_backend, max_buffer=64 << 20) as b,
    ):
        backplane = a.service.backplane
        backplane.max_publish_bytes = BOUND
        appended: list[int] = []
        append = backplane._append

        def counting(batch: Any) -> int:
            appended.append(sum(len(body) for _, _, run in batch for body in run))
            return int(append(batch))

        backplane._append = counting
        with a.stream() as here, b.stream() as there:
            a.wait_clients(1)
            b.wait_clients(1)
            a.call(a.service.hub.publish_many, "default", bodies)
            got_here = [(e.data[:2], e.last_event_id) for e in here.wait_events(EVENTS)]
            got_there = [(e.data[:2], e.last_event_id) for e in there.wait_events(EVENTS)]
        stats = backplane.stats()
    assert [d for d, _ in got_there] == [f"{i}:" for i in range(EVENTS)]
    assert got_there == got_here
    assert (stats["refused"], stats["local_only"]) == (0, 0)
    assert sum(appended) == sum(map(len, bodies))
    assert len(appended) >= 3 and max(appended) <= BOUND, appended


def test_split_runs_keeps_order_and_bounds() -> None:
    """Runs hold at most the count and the bytes; a larger body is a run alone."""
    bodies = [b"a" * 3, b"b" * 3, b"c" * 10, b"d", b"e", b"f"]
    assert split_runs(bodies, 100, 7) == [[b"aaa", b"bbb"], [b"c" * 10], [b"d", b"e", b"f"]]
    assert split_runs(bodies, 2, 100) == [bodies[0:2], bodies[2:4], bodies[4:6]]
    assert split_runs([b"x"], 1, 0) == [[b"x"]]
