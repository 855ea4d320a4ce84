"""
Run rel_app with wsgi-sse in this process, for the suite's memory figures.

    python rel_server.py PORT '{"max_pause": 1.0, ...}' '{"history_size": 10}'

The second argument holds make_service keywords, the third Hub keywords.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import json
import resource
import sys
import time
from typing import Any

import psutil
import rel_app
from twisted.internet import reactor
from twisted.internet.task import LoopingCall
from twisted.logger import globalLogBeginner

from wsgi_sse import Hub, make_service


def _live_objects() -> dict[str, int]:
    """How many of the objects a connection creates are alive now."""
    watched = {"StreamClient", "Request", "HTTPChannel", "Server", "_HeaderDeadlineChannel"}
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in watched:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _malloc_trim() -> None:
    """Ask glibc to return free heap memory to the kernel (a no-op elsewhere)."""
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def main() -> None:
    """Serve until killed."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    port = int(sys.argv[1])
    kwargs = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    hub_kwargs = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    hub = Hub(clock=reactor, **hub_kwargs)
    service = make_service(
        rel_app.app, listen=f"tcp:{port}:interface=127.0.0.1", hub=hub, reactor=reactor, **kwargs
    )
    process = psutil.Process()
    peak = [0]

    # The reactor's worst lateness: how much later than due a 10 ms timer ran.
    lag = {"last": 0.0, "max": 0.0}

    def sample() -> None:
        peak[0] = max(peak[0], process.memory_info().rss)

    def tick() -> None:
        now = time.monotonic()
        if lag["last"]:
            lag["max"] = max(lag["max"], now - lag["last"] - 0.01)
        lag["last"] = now

    def state(reset: bool) -> dict[str, Any]:
        gc.collect()
        resource_ = service.sse_resource
        sample()  # the peak includes what the allocator still holds
        # Hand freed memory back to the kernel first, so that RSS measures
        # what is live rather than the allocator's high-water mark (glibc
        # keeps freed buffers mapped, e.g. after a burst of held events).
        _malloc_trim()
        rss = process.memory_info().rss
        result = {
            "clients": len(resource_.clients),
            "subscribers": hub.subscriber_count(),
            "per_address": dict(resource_._per_address),
            "pending": resource_._pending,
            "channels": len(hub._channels),
            "published": hub.stats.events_published,
            "dropped_slow": resource_.stats.dropped_slow,
            "dropped_by_reason": dict(resource_.stats.dropped_by_reason),
            "connects": resource_.stats.connects,
            "disconnects": resource_.stats.disconnects,
            "rss": rss,
            "peak_rss": peak[0],
            "max_lag": lag["max"],
            "fds": process.num_fds(),
            "blocks": sys.getallocatedblocks(),
            "objects": _live_objects(),
        }
        if reset:
            peak[0] = rss
            lag["max"] = lag["last"] = 0.0  # not counting this call's own time
        return result

    rel_app.STATE = state
    # Start logging as twistd and crochet do: until something does, Twisted
    # keeps the last 65,536 log events (and every object they refer to) in
    # memory, which would look like a leak here.
    globalLogBeginner.beginLoggingTo([lambda event: None], redirectStandardIO=False)
    LoopingCall(sample).start(0.05)
    LoopingCall(tick).start(0.01)
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    reactor.run()


if __name__ == "__main__":
    main()
