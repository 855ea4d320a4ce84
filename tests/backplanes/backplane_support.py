"""The backplane under test: its kind, its URL and hands on its server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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


@contextlib.contextmanager
def redis_user(server: Any, *, scripts: bool = False) -> Iterator[str]:
    """
    An ACL user of redis C{server} that may run every command but, unless
    C{scripts}, none of the scripting ones (C{-@scripting}), for as long as
    the block lasts: the URL that logs in as it.
    """
    raw = server.client()
    raw.acl_setuser(
        "noscript",
        enabled=True,
        passwords=["+pw"],
        keys=["*"],
        channels=["*"],
        commands=["+@all"] if scripts else ["+@all", "-@scripting"],
    )
    try:
        yield server.url.replace("redis://", "redis://noscript:pw@")
    finally:
        raw.acl_deluser("noscript")


class GatedProxy:
    """
    A TCP proxy in front of a backplane server, in a thread: it takes
    connections at once but forwards nothing until C{open()} (a server
    that is slow to answer), then forwards both ways.  A context manager.
    """

    def __init__(self, upstream_port: int) -> None:
        import socket
        import threading

        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.gate = threading.Event()
        self._sockets: list[Any] = []
        # Bytes forwarded from the upstream server to its clients.
        self.received = 0
        # The most bytes forwarded to one client between two of its sends:
        # the longest answer to one request (a client that waits for each
        # answer before sending again, as psycopg does without a pipeline).
        self.largest_answer = 0
        self._count = threading.Lock()
        # Guards _sockets against close(): a connection accepted while the
        # proxy closes is closed at once, not left for the garbage collector.
        self._closing = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url_for(self, url: str) -> str:
        """C{url} (a backplane URL naming the upstream port) through this proxy."""
        upstream = f"127.0.0.1:{self.upstream_port}"
        assert upstream in url, url
        return url.replace(upstream, f"127.0.0.1:{self.port}")

    def open(self) -> None:
        """Forward from now on, what was sent meanwhile first."""
        self.gate.set()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            with self._closing:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
            answer = [0]
            for a, b, down in ((client, upstream, False), (upstream, client, True)):
                threading.Thread(target=self._pump, args=(a, b, down, answer), daemon=True).start()

    def _pump(self, source: Any, sink: Any, down: bool, answer: list[int]) -> None:
        import socket

        self.gate.wait()
        try:
            while data := source.recv(65536):
                with self._count:
                    if down:
                        self.received += len(data)
                        answer[0] += len(data)
                        self.largest_answer = max(self.largest_answer, answer[0])
                    else:
                        answer[0] = 0
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.gate.set()
        with self._closing:
            self._closed = True
        self.listener.close()
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> GatedProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
