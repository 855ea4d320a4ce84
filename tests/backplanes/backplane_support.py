"""The backplane under test: its kind, its URL and hands on its server."""

from __future__ import annotations

from typing import Any


class Backend:
    """One kind of backplane for a test: its URL and hands on its server."""

    def __init__(self, kind: str, server: Any) -> None:
        self.kind = kind
        self.server = server

    @property
    def shared(self) -> bool:
        return self.kind != "local"

    @property
    def url(self) -> str:
        return "" if self.server is None else str(self.server.url)

    def clean(self) -> None:
        if self.server is not None and self.server.proc is None:
            self.server.start()  # left stopped by a failed outage test
        if self.kind == "redis":
            self.server.client().flushall()
        elif self.kind == "postgres":
            with self.server.connect(autocommit=True) as conn:
                conn.execute("DROP TABLE IF EXISTS wsgi_sse_events, wsgi_sse_events_head")

    def forget_up_to(self, event_id: str) -> None:
        """Drop the shared history up to and including C{event_id}."""
        if self.kind == "redis":
            key = "wsgi-sse:default:events"
            entry = event_id.split("_")[0]
            client = self.server.client()
            for raw_id, _ in client.xrange(key, "-", entry):
                client.xdel(key, raw_id)
        elif self.kind == "postgres":
            with self.server.connect(autocommit=True) as conn:
                conn.execute("DELETE FROM wsgi_sse_events WHERE pos <= %s", (int(event_id),))

    def stop(self) -> None:
        if self.kind == "redis":
            self.server.kill()
        else:
            self.server.stop()

    def start(self) -> None:
        self.server.start()
