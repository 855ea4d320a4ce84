"""
What channel-tagged ids (?channelInId=1, asked for by the browser client)
cost the hub's fan-out, per subscriber and event, beside a plain subscriber.

    python benchmarks/bench_channel_ids.py [--subscribers 10000] [--events 200]

The subscribers discard what they receive, so the figures are the tagging
alone, not the socket write it comes before (about 4.5 µs per client-event).
"""

from __future__ import annotations

import argparse
import time

from twisted.internet.task import Clock

from wsgi_sse import Hub
from wsgi_sse._browser import _ChannelTagger
from wsgi_sse._encoding import encode_body


class Sink:
    """A subscriber that drops what it is sent."""

    def send(self, wire: bytes) -> None:
        pass


def fan_out(subscribers: int, events: int, tagged: bool) -> float:
    """Seconds per subscriber and event for publishing to C{subscribers}."""
    hub = Hub(clock=Clock(), history_size=10)
    for _ in range(subscribers):
        sink = Sink()
        hub.subscribe(_ChannelTagger(sink, "news") if tagged else sink, ["news"])  # type: ignore[arg-type]
    body = encode_body({"title": "hello", "n": 1}, event="headline")
    start = time.perf_counter()
    for _ in range(events):
        hub.publish("news", body)
    return (time.perf_counter() - start) / (subscribers * events)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    plain = fan_out(args.subscribers, args.events, tagged=False)
    tagged = fan_out(args.subscribers, args.events, tagged=True)
    print(f"plain subscriber:  {plain * 1e6:.3f} µs per subscriber-event")
    print(f"tagged subscriber: {tagged * 1e6:.3f} µs per subscriber-event")
    print(f"tagging adds:      {(tagged - plain) * 1e6:.3f} µs per subscriber-event")


if __name__ == "__main__":
    main()
