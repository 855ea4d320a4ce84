"""
Request bodies are never parsed in the reactor, and paths that take no body
(or a small one) refuse it before reading it.

Attack: a 30 MB C{application/x-www-form-urlencoded} body, unauthenticated,
to the stream, to the publish endpoint and to a WSGI page, while another
client loads a page.  Figures printed: the worst page latency during each
attack and the server's peak RSS growth.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from dataclasses import dataclass, field

import psutil
from relkit import MB, child_server
from support import http_request

SECRET = "s3cret-s3cret-s3cret"
PIECE = b"field=value&" * (256 * 1024 // 12)
FORM_SIZE = 30 * MB // len(PIECE) * len(PIECE)  # about 30 MB, whole pieces
FORM = "application/x-www-form-urlencoded"
SERVER_OPTIONS = {"publish_path": "/publish", "publish_secret": SECRET}


def _head(path: str, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _status(raw: bytes) -> int | None:
    if b"\r\n" not in raw:
        return None
    return int(raw.split(b"\r\n", 1)[0].split(b" ", 2)[1])


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    """Read until the server closes or C{timeout} passes; return what came."""
    sock.settimeout(timeout)
    raw = b""
    try:
        while data := sock.recv(65536):
            raw += data
    except (TimeoutError, ConnectionResetError):
        pass
    return raw


@dataclass
class Attack:
    """One body sent to one path, and what came back."""

    path: str
    chunked: bool = False
    content_type: str = "application/x-www-form-urlencoded"
    status: int | None = None
    answer: bytes = b""
    sent: int = 0
    seconds: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)

    def run(self, port: int) -> None:
        """Send the head, then the body until it is all sent or answered; read the answer."""
        piece = PIECE
        headers = {"Content-Type": self.content_type}
        if self.path == "/publish":
            headers["Authorization"] = f"Bearer {SECRET}"
        if self.chunked:
            headers["Transfer-Encoding"] = "chunked"
        else:
            headers["Content-Length"] = str(FORM_SIZE)
        start = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(_head(self.path, headers))
                try:
                    while self.sent < FORM_SIZE:
                        readable, _, _ = select.select([sock], [], [], 0)
                        if readable:
                            break  # answered before the end of the body
                        data = b"%x\r\n%s\r\n" % (len(piece), piece) if self.chunked else piece
                        sock.sendall(data)
                        self.sent += len(piece)
                        if self.sent % MB < len(piece):
                            # Spread the body over about a second, so that the
                            # page loads sample the whole time it arrives.
                            time.sleep(0.03)
                    else:
                        if self.chunked:
                            sock.sendall(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.answer = _read_answer(sock, 30)
                self.status = _status(self.answer)
        finally:
            self.seconds = time.monotonic() - start
            self.done.set()


class PeakRSS:
    """Sample a process's RSS from this process every 5 ms (the server's reactor may be busy)."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.start = self.peak = self.process.memory_info().rss
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while not self.stopping.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def growth(self) -> float:
        """Stop sampling; return the peak growth in MiB."""
        self.stopping.set()
        self.thread.join()
        return (self.peak - self.start) / MB


def _page_latencies(port: int, done: threading.Event) -> list[float]:
    """Load a page again and again until C{done} is set; return each latency."""
    latencies: list[float] = []
    while not latencies or not done.is_set():
        start = time.monotonic()
        status, _, body = http_request(port, "GET", "/", timeout=60)
        latencies.append(time.monotonic() - start)
        assert (status, body) == (200, b"hello")
    return latencies


def test_stream_and_publish_paths_refuse_a_body_before_it_is_sent() -> None:
    """A body declared to the stream or publish path is answered 413 before a byte of it arrives."""
    with child_server(SERVER_OPTIONS) as server:
        for path, headers, code in [
            ("/sse", {"Content-Length": str(FORM_SIZE)}, 413),
            ("/sse", {"Content-Length": "1"}, 413),
            ("/sse", {"Transfer-Encoding": "chunked"}, 413),
            ("/%73se", {"Content-Length": str(FORM_SIZE)}, 413),
            ("/publish", {"Content-Length": str(FORM_SIZE)}, 413),
            ("/publish", {"Content-Length": str(64 * 1024 + 1)}, 413),
        ]:
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
                sock.sendall(
                    _head(path, {"Content-Type": "application/x-www-form-urlencoded", **headers})
                )
                # Nothing of the body is sent: the answer must not wait for it.
                answer = _read_answer(sock, 5)
            assert _status(answer) == code, (path, headers, answer[:200])
        # GET and HEAD without a body, and a publish within its limit, still work.
        assert http_request(server.port, "HEAD", "/sse")[0] == 200
        status, _, body = http_request(
            server.port,
            "POST",
            "/publish",
            body=b'{"data": "ok"}',
            headers={"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"},
        )
        assert status == 200, body


def test_chunked_body_to_publish_is_cut_at_its_limit() -> None:
    """A chunked body to the publish path is refused once it passes publish_max_body."""
    with child_server(SERVER_OPTIONS) as server:
        attack = Attack("/publish", chunked=True)
        attack.run(server.port)
        assert attack.status == 413, attack.answer[:200]
        assert attack.sent < 8 * MB


def test_thirty_megabyte_form_bodies_leave_the_reactor_free() -> None:
    """
    30 MB form bodies to the stream, publish and WSGI paths: the first two
    are refused, the WSGI app receives its body whole, and the server never
    parses it (peak RSS grows by far less than the body).
    """
    figures = []
    with child_server(SERVER_OPTIONS) as server:
        # The same measurement with no body: what this machine's load alone costs.
        server.reset_peak()
        quiet = threading.Event()
        threading.Timer(1.0, quiet.set).start()
        latencies = _page_latencies(server.port, quiet)
        figures.append(
            f"{'(no body, 1 s)':36} {len(latencies):4} page loads, "
            f"worst {max(latencies) * 1000:6.1f} ms, "
            f"reactor late by {server.state()['max_lag'] * 1000:6.1f} ms at worst"
        )
        multipart = "multipart/form-data; boundary=field"
        for path, chunked, ctype, expected in [
            ("/sse", False, FORM, 413),
            ("/sse", True, FORM, 413),
            ("/publish", False, FORM, 413),
            ("/form", False, FORM, 200),
            ("/form", True, FORM, 200),
            ("/form", False, multipart, 200),
        ]:
            server.reset_peak()  # collect and trim: start from live memory
            rss = PeakRSS(server.proc.pid)
            attack = Attack(path, chunked=chunked, content_type=ctype)
            sender = threading.Thread(target=attack.run, args=(server.port,))
            sender.start()
            latencies = _page_latencies(server.port, attack.done)
            sender.join()
            growth = rss.growth()
            lag = server.state()["max_lag"]
            figures.append(
                f"{path:9} {'chunked' if chunked else 'length ':8} "
                f"{'multipart' if ctype == multipart else 'form':9} "
                f"-> {attack.status}: "
                f"{attack.sent / MB:5.1f} MB sent in {attack.seconds:5.2f} s, "
                f"{len(latencies):4} page loads, worst {max(latencies) * 1000:6.1f} ms, "
                f"reactor late by {lag * 1000:6.1f} ms at worst, peak RSS +{growth:5.1f} MiB"
            )
            assert attack.status == expected, attack.answer[:300]
            if path == "/form":
                body = attack.answer.split(b"\r\n\r\n", 1)[1]
                fields = FORM_SIZE // 12 + 1  # the app counts "&" + 1
                assert body == b'{"length": %d, "fields": %d}' % (FORM_SIZE, fields), body
            else:
                assert attack.sent < 8 * MB
            # Parsing 30 MB of fields costs hundreds of MiB; spooling it, none.
            assert growth < 64, figures[-1]
    print("\n30 MB form body while a page is loaded in a loop:\n  " + "\n  ".join(figures))
