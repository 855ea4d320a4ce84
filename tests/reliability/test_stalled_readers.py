"""Stalled readers: 50 clients that never read, beside 1,000 that do."""

from __future__ import annotations

import json
import os

from relkit import MB, Crowd, child_server

STALLED = 50
READERS = int(os.environ.get("WSGI_SSE_STALLED_READERS", "1000"))
LIVE_EVENTS = 300
SAMPLED = 25


def test_stalled_readers_are_dropped_and_others_get_everything() -> None:
    """Never-reading clients are cut at their cap; 1,000 readers still get every event in order."""
    max_buffer = 256 * 1024
    options = {"max_pause": 2.0, "max_buffer": max_buffer, "heartbeat": 60.0}
    with child_server(options, {"history_size": 50}) as server:
        crowd = Crowd(server.port, path="/sse?channel=live")
        readers = crowd.open(READERS)
        sampled = set(map(id, readers[:SAMPLED]))
        for conn in readers:
            conn.keep_body = id(conn) in sampled
        # Stalled: tiny receive buffer, never read; subscribed to the live
        # channel too, so they sit in the same fan-out loop as the readers.
        stalled_crowd = Crowd(server.port, path="/sse?channel=live&channel=bulk")
        stalled = stalled_crowd.open(STALLED, rcvbuf=1024, read=False)
        crowd.run_until(lambda: all(c.status == 200 for c in readers), 30)
        before = server.wait_state(lambda s: s["clients"] == READERS + STALLED)
        baseline = server.reset_peak()["rss"]

        # Bulk events only the stalled clients get fill their pipes; live
        # events go to everyone while that happens.
        _pump(server, "bulk", n=3000, size=2000, pause=0.0005)
        _pump(server, "live", n=LIVE_EVENTS, size=100, pause=0.01)
        state = {}

        def settled() -> bool:
            nonlocal state
            state = server.state()
            return state["dropped_slow"] >= STALLED and all(
                c.received >= expected_tail for c in readers
            )

        expected_tail = 0
        crowd.run_until(lambda: server.state()["published"] >= 3000 + LIVE_EVENTS, 120)
        sample = readers[0]
        crowd.run_until(lambda: len(sample.events()) >= LIVE_EVENTS, 30)
        expected_tail = sample.received
        crowd.run_until(settled, 60)
        after = server.state()

        # Every stalled client was dropped at its cap, none of the readers.
        assert after["dropped_slow"] == STALLED
        assert after["clients"] == READERS
        assert after["connects"] == before["connects"]
        # Readers: identical byte streams (each event is one write), and the
        # sampled ones parse to every live event, in order, once.
        assert {c.received for c in readers} == {expected_tail}
        assert all(not c.eof for c in readers)
        for conn in readers:
            if id(conn) in sampled:
                numbers = [json.loads(e.data)["i"] for e in conn.events()]
                assert numbers == list(range(LIVE_EVENTS))
        peak = after["peak_rss"] - baseline
        print(
            f"\nstalled readers: {STALLED} stalled + {READERS} readers, rss baseline "
            f"{baseline / MB:.1f} MB, peak +{peak / MB:.1f} MB, final {after['rss'] / MB:.1f} MB; "
            f"dropped {after['dropped_by_reason']}"
        )
        # Bounded: at most what the caps allow per stalled client, plus slack.
        assert peak < STALLED * max_buffer * 2 + 32 * MB
        stalled_crowd.close_all()
        crowd.close_all()
        server.wait_state(lambda s: s["clients"] == 0)
    assert len(stalled) == STALLED


def _pump(server: object, channel: str, *, n: int, size: int, pause: float) -> None:
    from support import http_request

    port = server.port  # type: ignore[attr-defined]
    status, _, _ = http_request(
        port, "POST", f"/pump?n={n}&size={size}&pause={pause}&channel={channel}"
    )
    assert status == 202
