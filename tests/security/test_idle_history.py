"""
History of channels nobody listens to expires on its own timer and is
bounded in count, whatever the clients do.

Attack (or just a busy app): publish to 15,000 channels that no client
listens to.  Figures printed: the server's RSS (allocator trimmed first)
before, after publishing, and after the history expired, twice in a row.
"""

from __future__ import annotations

from typing import Any

from relkit import MB, ChildServer, child_server
from support import http_request
from twisted.internet.task import Clock

from wsgi_sse import Hub

CHANNELS = 15_000


def spray(server: ChildServer, n: int, prefix: str) -> dict[str, Any]:
    """Publish one 100-byte event to each of C{n} new channels; wait until all are published."""
    published = server.state()["published"]
    status, _, _ = http_request(server.port, "POST", f"/spray?n={n}&prefix={prefix}&size=100")
    assert status == 202
    return server.wait_state(lambda s: s["published"] >= published + n)


def test_idle_history_expires_without_clients_and_its_memory_returns() -> None:
    """With no client (so no heartbeat), history past history_age is forgotten and RSS returns."""
    rows = []
    with child_server({"heartbeat": 0}, {"history_age": 2}) as server:
        base = server.state()
        rows.append(("start", base))
        for round_ in (1, 2):
            rows.append(
                (f"published {CHANNELS:,} channels", spray(server, CHANNELS, f"r{round_}-"))
            )
            # Expired (2 s) and pruned (every 0.5 s): every channel forgotten.
            rows.append(("history expired", server.wait_state(lambda s: s["channels"] == 0)))
        print()
        for label, state in rows:
            print(
                f"  {label:28} channels {state['channels']:6,}  "
                f"RSS {state['rss'] / MB:6.1f} MiB ({(state['rss'] - base['rss']) / MB:+5.1f})  "
                f"allocated blocks {state['blocks'] - base['blocks']:+8,}"
            )
        published, first, second = rows[1][1], rows[2][1], rows[4][1]
        # Every object of the expired history is freed (a leak of 10,000
        # channels would leave tens of thousands of blocks behind) ...
        assert published["blocks"] - base["blocks"] > 50_000, rows
        for expired in (first, second):
            assert expired["blocks"] - base["blocks"] < 2_000, rows
        # ... and the memory is reused: the second round leaves no more behind
        # than the first (the allocator keeps some of it mapped for reuse).
        growth = published["rss"] - base["rss"]
        assert second["rss"] - first["rss"] < growth / 2, rows


def test_channel_count_is_capped_on_the_real_server() -> None:
    """Publishing to 5,000 channels keeps history_channels (1,000) of them."""
    with child_server({}, {"history_channels": 1000}) as server:
        state = spray(server, 5000, "cap-")
        assert state["channels"] == 1000, state


def test_cap_forgets_the_least_recently_published_idle_channel() -> None:
    """Past the cap the channel published to longest ago goes; listened-to channels stay."""
    clock = Clock()
    hub = Hub(history_channels=3, clock=clock, instance_id="t")
    received: list[bytes] = []

    class Listener:
        def send(self, wire: bytes) -> None:
            received.append(wire)

    listener = Listener()
    hub.subscribe(listener, ["listened"])
    hub.publish("listened", b"data: 0\n")  # oldest, but listened to
    hub.publish("a", b"data: 1\n")
    mark = hub.last_id
    hub.publish("b", b"data: 2\n")
    hub.publish("a", b"data: 3\n")  # "a" is now more recent than "b"
    hub.publish("c", b"data: 4\n")  # one too many: "b" goes
    assert set(hub._channels) == {"listened", "a", "c"}
    # Resuming where "b" was lost is a reset; "a" and "c" still replay.
    assert hub.replay(["b"], mark) is None
    assert [e.id for e in hub.replay(["a", "c"], mark) or []] == ["t-4", "t-5"]
    hub.publish("d", b"data: 5\n")  # "a" goes; the listened channel never does
    assert set(hub._channels) == {"listened", "c", "d"}
    assert len(received) == 1


def test_prune_forgets_expired_channels() -> None:
    """prune() after history_age forgets channels with no listener and no history left."""
    clock = Clock()
    hub = Hub(history_age=10, clock=clock, instance_id="t")
    for i in range(100):
        hub.publish(f"c{i}", b"data: x\n")
    clock.advance(5)
    hub.prune()
    assert len(hub._channels) == 100
    clock.advance(6)
    hub.prune()
    assert hub._channels == {}
