"""
The stream's counters over HTTP: as JSON, and as Prometheus text.

Neither is served unless asked for (C{stats_path=} and C{metrics_path=} of
L{make_application<wsgi_sse.make_application>}).  All methods: call in the
reactor thread (twisted.web does).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from twisted.web.resource import Resource

if TYPE_CHECKING:
    from twisted.web.server import Request

    from ._publish import PublishResource
    from ._resource import SSEResource

__all__ = ["MetricsResource", "StatsResource", "prometheus_text"]

PROMETHEUS_CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"


class BackplaneStats(Protocol):
    """A shared backplane that reports its counters (Redis, PostgreSQL)."""

    def stats(self) -> dict[str, Any]:
        """Counters and state, as JSON-able values."""


def _collect(
    stream: SSEResource, publish: PublishResource | None, backplane: BackplaneStats | None
) -> dict[str, Any]:
    snapshot = stream.snapshot()
    if publish is not None:
        snapshot["publish"] = publish.snapshot()
    if backplane is not None:
        snapshot["backplane"] = backplane.stats()
    return snapshot


class _CounterResource(Resource):
    isLeaf = True

    def __init__(
        self,
        stream: SSEResource,
        *,
        publish: PublishResource | None = None,
        backplane: BackplaneStats | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.stream = stream
        self.publish = publish
        self.backplane = backplane

    def render(self, request: Request) -> bytes:
        """Answer GET and HEAD; anything else gets 405."""
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"Allow", b"GET, HEAD")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"only GET and HEAD\n"
        request.setHeader(b"Cache-Control", b"no-store")
        return self.body(request, _collect(self.stream, self.publish, self.backplane))

    def body(self, request: Request, snapshot: dict[str, Any]) -> bytes:
        raise NotImplementedError  # pragma: no cover


class StatsResource(_CounterResource):
    """
    Serve the stream's counters as a JSON object (see
    L{SSEResource.snapshot<wsgi_sse.SSEResource.snapshot>}).

    @param stream: the L{SSEResource} whose counters are shown.
    @param publish: the publish endpoint, if one is mounted: its counters
        are added under C{"publish"}.
    @param backplane: the backplane shared with other processes, if any: its
        counters are added under C{"backplane"}.
    """

    def body(self, request: Request, snapshot: dict[str, Any]) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return json.dumps(snapshot, indent=2).encode("utf-8") + b"\n"


class MetricsResource(_CounterResource):
    """
    Serve the stream's counters in the Prometheus text exposition format
    (see L{prometheus_text}).

    @param stream: the L{SSEResource} whose counters are shown.
    @param publish: the publish endpoint, if one is mounted.
    @param backplane: the backplane shared with other processes, if any.
    """

    def body(self, request: Request, snapshot: dict[str, Any]) -> bytes:
        request.setHeader(b"Content-Type", PROMETHEUS_CONTENT_TYPE)
        return prometheus_text(snapshot).encode("utf-8")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(snapshot: dict[str, Any]) -> str:
    """
    Render a stats snapshot in the Prometheus text exposition format 0.0.4.

    Metric names start with C{wsgi_sse_}; counters end in C{_total}.  One
    C{wsgi_sse_channel_clients} series per channel that the snapshot lists
    (those with the most clients, at most 1,000: with per-user channels
    one series per connected user would grow without bound), and
    C{wsgi_sse_channels}, how many channels have clients.
    May be called in any thread.
    """
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value}")

    def one(name: str, kind: str, help_text: str, value: Any) -> None:
        family(name, kind, help_text, [("", value)])

    one("wsgi_sse_clients", "gauge", "Open event streams.", snapshot["clients"])
    family(
        "wsgi_sse_channel_clients",
        "gauge",
        "Open event streams subscribed to each channel (the 1,000 channels with the most).",
        [(f'{{channel="{_label(ch)}"}}', n) for ch, n in snapshot["channels"].items()],
    )
    one(
        "wsgi_sse_channels",
        "gauge",
        "Channels with open event streams.",
        snapshot["channels_total"],
    )
    one(
        "wsgi_sse_events_published_total",
        "counter",
        "Events published.",
        snapshot["events_published"],
    )
    one(
        "wsgi_sse_deliveries_total",
        "counter",
        "Events queued for a client (one per event and subscriber).",
        snapshot["deliveries"],
    )
    one(
        "wsgi_sse_bytes_sent_total",
        "counter",
        "Bytes written to event streams.",
        snapshot["bytes_sent"],
    )
    one("wsgi_sse_connects_total", "counter", "Event streams opened.", snapshot["connects"])
    one("wsgi_sse_disconnects_total", "counter", "Event streams closed.", snapshot["disconnects"])
    reasons = {"buffer": 0, "stalled": 0, **snapshot["dropped_by_reason"]}
    family(
        "wsgi_sse_dropped_slow_total",
        "counter",
        "Event streams aborted because the reader fell behind, by reason.",
        [(f'{{reason="{_label(r)}"}}', n) for r, n in sorted(reasons.items())],
    )
    one(
        "wsgi_sse_replays_total",
        "counter",
        "Streams that resumed exactly from a Last-Event-ID.",
        snapshot["replays"],
    )
    one(
        "wsgi_sse_resets_total",
        "counter",
        "Streams sent a reset event instead of a replay.",
        snapshot["resets"],
    )
    one(
        "wsgi_sse_held_total",
        "counter",
        "Event streams opened by a WSGI view's hold instruction.",
        snapshot["held"],
    )
    one(
        "wsgi_sse_ended_total",
        "counter",
        "Event streams ended cleanly by close(channel).",
        snapshot["ended"],
    )
    family(
        "wsgi_sse_refused_total",
        "counter",
        "Stream requests answered with an HTTP error, by status.",
        [(f'{{status="{code}"}}', n) for code, n in snapshot["refused"].items()],
    )
    publish = snapshot.get("publish")
    if publish is not None:
        family(
            "wsgi_sse_publish_requests_total",
            "counter",
            "Requests to the HTTP publish endpoint, by status.",
            [(f'{{status="{code}"}}', n) for code, n in publish["requests"].items()],
        )
    backplane = snapshot.get("backplane")
    if backplane is not None:
        one(
            "wsgi_sse_backplane_connected",
            "gauge",
            "1 while the backplane is connected to the shared broker.",
            int(bool(backplane.get("connected"))),
        )
        one(
            "wsgi_sse_backplane_queued",
            "gauge",
            "Events waiting to be sent to the shared broker.",
            backplane.get("queued", 0),
        )
        for key, value in sorted(backplane.items()):
            if key in ("connected", "queued") or isinstance(value, bool):
                continue
            if isinstance(value, int):
                one(
                    f"wsgi_sse_backplane_{key}_total",
                    "counter",
                    f"Backplane counter {key!r} (see the scaling guide).",
                    value,
                )
    return "\n".join(lines) + "\n"
