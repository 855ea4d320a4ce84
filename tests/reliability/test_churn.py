"""Churn: 10,000 connect/disconnect cycles leave nothing behind."""

from __future__ import annotations

import os

from relkit import MB, ChildServer, Crowd, StallingProxy, child_server
from support import http_request

CYCLES = int(os.environ.get("WSGI_SSE_CHURN_CYCLES", "10000"))
HALF_OPEN = 100  # per round; two rounds
WARMUP = 1000
WAVE = 250


def _cycles(server_port: int, n: int) -> int:
    """Open and close C{n} streams in waves, half closed cleanly (FIN), half reset (RST)."""
    done = 0
    crowd = Crowd(server_port, path="/sse?channel=churn")
    try:
        while done < n:
            wave = crowd.open(min(WAVE, n - done))
            assert all(c.status == 200 for c in wave)
            half = len(wave) // 2
            crowd.close(wave[:half], how="clean")
            crowd.close(wave[half:], how="reset")
            done += len(wave)
    finally:
        crowd.close_all()
    return done


def _half_open(server: ChildServer, n: int, churn: int) -> int:
    """
    Open C{n} streams through a proxy that then stops reading and vanishes,
    while events flow to them and C{churn} ordinary cycles run; only the
    slow-client caps can notice these.
    """
    dropped_before = server.state()["dropped_slow"]
    proxy = StallingProxy(server.port)
    try:
        crowd = Crowd(proxy.port, path="/sse?channel=bulk")
        crowd.open(n)
        server.wait_state(lambda s: s["clients"] == n)
        proxy.stalled.set()
        crowd.close_all()
        status, _, _ = http_request(
            server.port, "POST", "/pump?n=3000&size=2000&pause=0.0005&channel=bulk"
        )
        assert status == 202
        done = _cycles(server.port, churn)
        server.wait_state(lambda s: s["dropped_slow"] >= dropped_before + n, timeout=60)
        server.wait_state(lambda s: s["published"] % 3000 == 0)
    finally:
        proxy.close()
    return n + done


def test_churn_leaves_no_listener_and_no_memory_behind() -> None:
    """Clean closes, resets and half-open connections: no listener, counter or memory left."""
    options = {"max_pause": 1.0, "max_buffer": 65536, "heartbeat": 0.5}
    with child_server(options, {"history_size": 10}) as server:
        start = server.state()
        done = _cycles(server.port, WARMUP)
        warm = server.wait_state(lambda s: s["clients"] == 0)
        # The same round twice: half-open connections, with events flowing to
        # them, while thousands of ordinary cycles run.  Whatever the first
        # round leaves in the allocator is its high-water mark; a leak grows
        # again in the second.
        per_round = (CYCLES - WARMUP) // 2
        done += _half_open(server, HALF_OPEN, per_round - HALF_OPEN)
        first = server.wait_state(lambda s: s["clients"] == 0 and s["pending"] == 0)
        done += _half_open(server, HALF_OPEN, CYCLES - done - HALF_OPEN)
        end = server.wait_state(lambda s: s["clients"] == 0 and s["pending"] == 0)

        print(
            f"\nchurn: {done} cycles ({2 * HALF_OPEN} half-open); listeners left "
            f"{end['subscribers']}; rss at start {start['rss'] / MB:.1f} MB, after "
            f"{warm['connects']} cycles {warm['rss'] / MB:.1f} MB, after {first['connects']} "
            f"{first['rss'] / MB:.1f} MB, after {end['connects']} {end['rss'] / MB:.1f} MB; "
            f"fds {warm['fds']} -> {end['fds']}; dropped as slow {end['dropped_slow']}; "
            f"live connection objects {end['objects']}; Python heap blocks "
            f"{first['blocks']} -> {end['blocks']}"
        )
        assert done == CYCLES
        assert end["dropped_slow"] == 2 * HALF_OPEN
        assert end["clients"] == 0
        assert end["subscribers"] == 0
        assert end["per_address"] == {}
        assert end["connects"] == end["disconnects"] == CYCLES
        assert end["fds"] <= warm["fds"]
        # No object a connection creates survives it (the /state request is one).
        assert end["objects"].get("StreamClient", 0) == 0
        assert end["objects"].get("Request", 0) <= 1
        assert end["objects"].get("Server", 0) <= 1
        # Memory: the second round (4,500 cycles) leaves the Python heap where
        # the first did -- fewer new allocated blocks than one per 10 cycles --
        # and RSS within the allocator's noise (a few MB, depending on how
        # much was buffered at the busiest moment).
        assert end["blocks"] - first["blocks"] < per_round // 10
        assert end["rss"] - first["rss"] < 8 * MB
