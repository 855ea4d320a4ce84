"""
Helpers of the reliability suite: a server in a child process, a crowd of
raw-socket clients driven by one selector, and a proxy that stalls.
"""

from __future__ import annotations

import contextlib
import errno
import json
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support import free_port, http_request, parse_stream, subprocess_env, wait_for_port

HERE = Path(__file__).resolve().parent
MB = 1024 * 1024


def raise_fd_limit_in_child() -> None:
    """preexec_fn: give a child process the hard open-file limit."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# -- a server in a child process ----------------------------------------------------


@dataclass
class ChildServer:
    """rel_server.py running in a child process."""

    proc: subprocess.Popen[str]
    port: int

    def state(self) -> dict[str, Any]:
        """What the server holds now (after a gc.collect() in the server)."""
        status, _, body = http_request(self.port, "GET", "/state")
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    def reset_peak(self) -> dict[str, Any]:
        """Return the state and restart the peak-RSS measurement from now."""
        status, _, body = http_request(self.port, "GET", "/state?reset=1")
        assert status == 200, body
        return json.loads(body)  # type: ignore[no-any-return]

    def pump(self, n: int, size: int = 10, pause: float = 0.0) -> None:
        """Have the server broadcast C{n} numbered events from a worker thread."""
        status, _, _ = http_request(self.port, "POST", f"/pump?n={n}&size={size}&pause={pause}")
        assert status == 202

    def wait_state(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the state until C{predicate(state)} holds."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state()
            if predicate(state):
                return state
            if time.monotonic() > deadline:
                raise AssertionError(f"state never matched: {state}")
            time.sleep(0.1)


@contextlib.contextmanager
def child_server(
    stream_options: dict[str, Any] | None = None, hub_options: dict[str, Any] | None = None
) -> Iterator[ChildServer]:
    """Run rel_server.py on a free port for the duration of the block."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "rel_server.py"),
            str(port),
            json.dumps(stream_options or {}),
            json.dumps(hub_options or {}),
        ],
        cwd=HERE,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=raise_fd_limit_in_child,
    )
    try:
        wait_for_port(port, proc)
        yield ChildServer(proc, port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()


# -- many clients, one selector ----------------------------------------------------------


@dataclass(eq=False)
class Conn:
    """One raw HTTP/1.1 stream connection of a L{Crowd}."""

    sock: socket.socket
    request: bytes
    read: bool = True
    status: int | None = None
    head: bytes = b""
    body: bytes = b""
    keep_body: bool = False
    tail: bytes = b""
    received: int = 0
    eof: bool = False
    reset: bool = False
    error: str | None = None

    def events(self) -> list[Any]:
        """The events in the (chunked) body received so far."""
        return parse_stream(dechunk(self.body).decode("utf-8")).events


def dechunk(raw: bytes) -> bytes:
    """Decode a chunked body (a partial last chunk is ignored)."""
    out = []
    while b"\r\n" in raw:
        size_line, rest = raw.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        if size == 0 or len(rest) < size + 2:
            break
        out.append(rest[:size])
        raw = rest[size + 2 :]
    return b"".join(out)


@dataclass
class Crowd:
    """
    Thousands of stream clients in one thread: non-blocking sockets and a
    selector.  Connections are opened a window at a time so the server's
    listen backlog never overflows.
    """

    port: int
    path: str = "/sse"
    conns: list[Conn] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.selector = selectors.DefaultSelector()

    def _new(self, headers: dict[str, str], rcvbuf: int | None, read: bool) -> Conn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        lines = [f"GET {self.path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        conn = Conn(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), read=read)
        err = sock.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            raise OSError(err, "connect failed")
        self.selector.register(sock, selectors.EVENT_WRITE, conn)
        return conn

    def open(
        self,
        n: int,
        *,
        headers: dict[str, str] | None = None,
        rcvbuf: int | None = None,
        read: bool = True,
        keep_body: bool = False,
        window: int = 40,
        timeout: float = 120.0,
    ) -> list[Conn]:
        """
        Open C{n} streams and wait for their response heads.  With
        C{read=False} the connection sends its request and never reads.
        """
        opened: list[Conn] = []
        waiting: set[Conn] = set()
        deadline = time.monotonic() + timeout
        while len(opened) < n or waiting:
            while len(opened) < n and len(waiting) < window:
                conn = self._new(headers or {}, rcvbuf, read)
                conn.keep_body = keep_body
                opened.append(conn)
                self.conns.append(conn)
                waiting.add(conn)
            self.poll(0.05)
            waiting = {c for c in waiting if c.status is None and not c.eof and c.read}
            waiting |= {c for c in opened if not c.read and c.error is None and not c.head}
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(waiting)} connections still opening")
        return opened

    def poll(self, timeout: float) -> None:
        """Handle whatever the sockets have ready within C{timeout}."""
        for key, mask in self.selector.select(timeout):
            conn: Conn = key.data
            if mask & selectors.EVENT_WRITE:
                err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    conn.error = errno.errorcode.get(err, str(err))
                    self.selector.unregister(conn.sock)
                    continue
                conn.sock.send(conn.request)
                if conn.read:
                    self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
                else:
                    conn.head = b"(not read)"
                    self.selector.unregister(conn.sock)
                continue
            self._read(conn)

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(262144)
        except ConnectionResetError:
            conn.reset = conn.eof = True
            self.selector.unregister(conn.sock)
            return
        except BlockingIOError:
            return
        if not data:
            conn.eof = True
            self.selector.unregister(conn.sock)
            return
        conn.received += len(data)
        conn.tail = (conn.tail + data)[-64:]
        if conn.status is None:
            conn.head += data
            if b"\r\n\r\n" in conn.head:
                head, rest = conn.head.split(b"\r\n\r\n", 1)
                conn.head = head
                conn.status = int(head.split(b" ", 2)[1])
                if conn.keep_body:
                    conn.body += rest
        elif conn.keep_body:
            conn.body += data

    def run(self, seconds: float) -> None:
        """Read from every open stream for C{seconds}."""
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            self.poll(min(remaining, 0.1))

    def run_until(self, predicate: Any, timeout: float) -> None:
        """Read from every open stream until C{predicate()} holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError("crowd: condition not reached in time")
            self.poll(0.05)

    def close(self, conns: list[Conn] | None = None, *, how: str = "clean") -> None:
        """
        Close connections: C{"clean"} (FIN, after reading what is pending)
        or C{"reset"} (SO_LINGER 0: an RST).
        """
        targets = self.conns if conns is None else conns
        for conn in targets:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn.sock)
            with contextlib.suppress(OSError):
                if how == "reset":
                    conn.sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
                else:
                    with contextlib.suppress(BlockingIOError):
                        while conn.sock.recv(65536):
                            pass
                    conn.sock.shutdown(socket.SHUT_WR)
            conn.sock.close()
        ids = {id(c) for c in targets}
        self.conns = [c for c in self.conns if id(c) not in ids]

    def close_all(self) -> None:
        """Close every connection and the selector."""
        self.close(how="clean")
        self.selector.close()


# -- a proxy that stops forwarding ---------------------------------------------------------


class StallingProxy:
    """
    A TCP proxy in a thread.  After C{stall()} it stops reading from the
    server and closes the client side: the server is left with a reader that
    never reads again and never closes (a half-open connection, as the server
    experiences one).
    """

    def __init__(self, upstream_port: int, *, upstream_rcvbuf: int = 4096) -> None:
        self.upstream_port = upstream_port
        self.rcvbuf = upstream_rcvbuf
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        self.port = self.listener.getsockname()[1]
        self.stalled = threading.Event()
        self.stopping = threading.Event()
        self.upstreams: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        sel = selectors.DefaultSelector()
        self.listener.setblocking(False)
        sel.register(self.listener, selectors.EVENT_READ, None)
        pairs: dict[socket.socket, socket.socket] = {}
        while not self.stopping.is_set():
            if self.stalled.is_set() and pairs:
                # Stop forwarding: forget the server side (still open), close ours.
                for sock in list(pairs):
                    with contextlib.suppress(KeyError, ValueError):
                        sel.unregister(sock)
                    if sock not in self.upstreams:
                        sock.close()
                pairs.clear()
            for key, _ in sel.select(0.05):
                if key.data is None:
                    with contextlib.suppress(BlockingIOError):
                        client, _ = self.listener.accept()
                        upstream = socket.socket()
                        upstream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
                        upstream.connect(("127.0.0.1", self.upstream_port))
                        self.upstreams.append(upstream)
                        client.setblocking(False)
                        upstream.setblocking(False)
                        pairs[client], pairs[upstream] = upstream, client
                        sel.register(client, selectors.EVENT_READ, "c")
                        sel.register(upstream, selectors.EVENT_READ, "u")
                    continue
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                other = pairs.get(sock)
                if other is None:
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    for s in (sock, other):
                        with contextlib.suppress(KeyError, ValueError):
                            sel.unregister(s)
                        pairs.pop(s, None)
                        if s not in self.upstreams:
                            s.close()
                    continue
                with contextlib.suppress(OSError):
                    other.setblocking(True)
                    other.sendall(data)
                    other.setblocking(False)
        sel.close()

    def close(self) -> None:
        """Stop the proxy and close every socket it holds."""
        self.stopping.set()
        self.thread.join(5)
        self.listener.close()
        for sock in self.upstreams:
            sock.close()
