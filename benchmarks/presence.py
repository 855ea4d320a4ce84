"""
What presence costs: memory per tracked identity, and the messages and bytes
one join sends to the other processes through a shared backplane.

    python benchmarks/presence.py

Runs in one process on a fake clock with a recording backplane; prints
figures, asserts nothing.
"""

from __future__ import annotations

import tracemalloc
from typing import Any

from twisted.internet.task import Clock

from wsgi_sse import Hub
from wsgi_sse._backplane import LocalBackplane


class Recording(LocalBackplane):
    """The in-process backplane posing as shared, counting the control messages sent."""

    shared = True

    def __init__(self, instance_id: str, max_control_body: int = 256 * 1024) -> None:
        super().__init__(instance_id)
        self.max_control_body = max_control_body
        self.sent: list[bytes] = []
        self.messages = 0
        self.bytes = 0

    def send_control(self, body: bytes) -> None:
        self.sent.append(body)
        self.messages += 1
        self.bytes += len(body)


class Tab:
    """A stream as the hub sees it."""

    __slots__ = ("identity",)

    def __init__(self, identity: str | None) -> None:
        self.identity = identity

    def send(self, wire: bytes) -> None:
        pass


def main(n: int = 10_000) -> None:
    clock = Clock()
    backplane = Recording("bench")
    hub = Hub(clock=clock, backplane=backplane, instance_id="bench")
    tabs = [Tab(f"user-{i:06d}") for i in range(n)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for tab in tabs:
        hub.presence.add(("room",), tab.identity)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    print(
        f"presence memory: {(after - before) / n:.0f} bytes per identity on a channel "
        f"({n} identities)"
    )

    hub.presence.start()  # one full report at once
    clock.advance(1)
    full = backplane.messages, backplane.bytes
    print(f"full report of {n} identities: {full[0]} messages, {full[1]} bytes")
    backplane.messages = backplane.bytes = 0
    subscriber: Any = Tab("newcomer")
    hub.subscribe(subscriber, ["room"])
    clock.advance(1)
    print(
        f"one join on a channel of {n} identities: {backplane.messages} message(s), "
        f"{backplane.bytes} bytes"
    )
    other = Hub(clock=clock, instance_id="other")
    backplane.sent.clear()
    hub.presence._refresh()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for body in backplane.sent:
        other.deliver_control(body)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    shared = len(other.presence.get("room").identities)
    print(
        f"another process's report: {(after - before) / shared:.0f} bytes per identity "
        f"({shared} identities shared of {n + 1}; the rest count as guests)"
    )
    pg = Hub(clock=clock, backplane=Recording("pg", 7900), instance_id="pg")
    for tab in tabs[:2000]:
        pg.presence.add(("room",), tab.identity)
    pg.presence.start()
    clock.advance(1)
    pb: Any = pg.backplane
    print(
        f"full report of 2000 identities in PostgreSQL NOTIFYs (7,900 bytes at most): "
        f"{pb.messages} messages, {pb.bytes} bytes"
    )
    small = Hub(clock=clock, backplane=Recording("small"), instance_id="small")
    small.presence.start()
    clock.advance(1)
    sb: Any = small.backplane
    sb.messages = sb.bytes = 0
    small.subscribe(Tab("ada"), ["ticket-7"])
    clock.advance(1)
    print(f"one join on a channel of 1 identity: {sb.messages} message(s), {sb.bytes} bytes")
    for _ in range(3):
        small.subscribe(Tab("ada"), ["ticket-7"])
    sb.messages = sb.bytes = 0
    clock.advance(1)
    print(f"three more tabs of that identity: {sb.messages} message(s) (coalesced)")


if __name__ == "__main__":
    main()
