"""
Test helpers shared by the suites: an independent event-stream parser, a
raw-socket stream client, and a real server run in crochet's reactor thread.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


# -- an independent parser of the WHATWG event stream format ---------------------


@dataclass
class ParsedEvent:
    """One event as a browser would dispatch it."""

    type: str
    data: str
    last_event_id: str


@dataclass
class SpecParser:
    """
    Incremental event-stream parser written from the WHATWG spec text
    ("9.2.6 Interpreting an event stream"), independently of wsgi_sse.

    Feed it decoded text; it collects dispatched events, comments and the
    last seen retry value.
    """

    events: list[ParsedEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    retry: int | None = None
    fields_seen: list[str] = field(default_factory=list)
    _buffer: str = ""
    _data: str = ""
    _type: str = ""
    _last_id_buffer: str = ""
    last_event_id: str = ""
    _started: bool = False
    _pending_cr: bool = False

    def feed(self, text: str) -> None:
        if not self._started and text:
            self._started = True
            if text.startswith("\ufeff"):
                text = text[1:]
        self._buffer += text
        while True:
            m = re.search(r"\r\n|\r|\n", self._buffer)
            if m is None:
                return
            # A lone CR at the very end may be the first half of a CRLF.
            if m.group() == "\r" and m.end() == len(self._buffer):
                return
            line, self._buffer = self._buffer[: m.start()], self._buffer[m.end() :]
            self._line(line)

    def _line(self, line: str) -> None:
        if line == "":
            self._dispatch()
            return
        if line.startswith(":"):
            self.comments.append(line[1:])
            return
        if ":" in line:
            name, value = line.split(":", 1)
            if value.startswith(" "):
                value = value[1:]
        else:
            name, value = line, ""
        self.fields_seen.append(name)
        if name == "event":
            self._type = value
        elif name == "data":
            self._data += value + "\n"
        elif name == "id":
            if "\x00" not in value:
                self._last_id_buffer = value
        elif name == "retry":
            if value and all(c in "0123456789" for c in value):
                self.retry = int(value)

    def _dispatch(self) -> None:
        self.last_event_id = self._last_id_buffer
        if self._data == "":
            self._type = ""
            return
        data = self._data[:-1] if self._data.endswith("\n") else self._data
        self.events.append(ParsedEvent(self._type or "message", data, self.last_event_id))
        self._data = ""
        self._type = ""


def parse_stream(text: str) -> SpecParser:
    """Parse a whole stream's text."""
    parser = SpecParser()
    parser.feed(text)
    return parser


# -- a raw-socket client ---------------------------------------------------------


class HTTPError(Exception):
    pass


class StreamClient:
    """
    Open an event stream over a plain socket and read it with L{SpecParser}.

    It speaks HTTP/1.1 (chunked responses decoded here) so tests see exactly
    the bytes the server sent.
    """

    def __init__(
        self,
        port: int,
        path: str = "/sse",
        *,
        headers: dict[str, str] | None = None,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        method: str = "GET",
        body: bytes = b"",
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Accept: text/event-stream"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        self._raw = b""
        self.status, self.headers = self._read_head()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        self.body = b""  # decoded body bytes received so far
        self.parser = SpecParser()
        self._decoder_pending = b""
        self.eof = False

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
        return data

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._raw:
            data = self._recv()
            if not data:
                raise HTTPError(f"connection closed before headers: {self._raw!r}")
            self._raw += data
        head, self._raw = self._raw.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split()[1])
        headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def _decode_available(self) -> None:
        if not self.chunked:
            self._append(self._raw)
            self._raw = b""
            return
        while True:
            if b"\r\n" not in self._raw:
                return
            size_line, rest = self._raw.split(b"\r\n", 1)
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                self.eof = True
                self._raw = b""
                return
            if len(rest) < size + 2:
                return
            self._append(rest[:size])
            assert rest[size : size + 2] == b"\r\n", "bad chunk framing"
            self._raw = rest[size + 2 :]

    def _append(self, data: bytes) -> None:
        if not data:
            return
        self.body += data
        self._decoder_pending += data
        try:
            text = self._decoder_pending.decode("utf-8")
            self._decoder_pending = b""
        except UnicodeDecodeError as e:
            text = self._decoder_pending[: e.start].decode("utf-8")
            self._decoder_pending = self._decoder_pending[e.start :]
        self.parser.feed(text)

    def read_some(self, timeout: float = 5.0) -> bool:
        """Read what arrives within C{timeout}; return False at EOF."""
        self._decode_available()
        if self.eof:
            return False
        self.sock.settimeout(timeout)
        try:
            data = self._recv()
        except TimeoutError:
            return True
        except ConnectionResetError:
            self.eof = True
            return False
        self._raw += data
        self._decode_available()
        return not self.eof

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> None:
        """Read until C{predicate(self)} is true, or fail after C{timeout}."""
        deadline = time.monotonic() + timeout
        # What arrived with the response head may satisfy it already.
        self._decode_available()
        while not predicate(self):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"timed out; got {len(self.events)} events, body tail {self.body[-300:]!r}"
                )
            if not self.read_some(min(remaining, 0.5)) and not predicate(self):
                raise AssertionError(f"stream ended; body tail {self.body[-300:]!r}")

    def wait_events(self, n: int, timeout: float = 10.0) -> list[ParsedEvent]:
        """Read until at least C{n} events arrived; return them all."""
        self.wait_for(lambda c: len(c.events) >= n, timeout)
        return self.events

    def read_to_end(self, timeout: float = 10.0) -> None:
        """Read until the server ends the response."""
        deadline = time.monotonic() + timeout
        while self.read_some(0.5):
            if time.monotonic() > deadline:
                raise AssertionError("stream did not end")

    @property
    def events(self) -> list[ParsedEvent]:
        return self.parser.events

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http_request(
    port: int,
    method: str,
    path: str,
    *,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """A minimal HTTP/1.0 request on a raw socket: status, headers, body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        lines = [f"{method} {path} HTTP/1.0", f"Host: 127.0.0.1:{port}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body:
            lines.append(f"Content-Length: {len(body)}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        raw = b""
        while True:
            data = sock.recv(65536)
            if not data:
                break
            raw += data
    head, _, content = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, content


# -- a real server in crochet's reactor thread -----------------------------------


def _crochet() -> Any:
    import crochet

    crochet.setup()
    return crochet


@dataclass
class RunningServer:
    """A started L{SSEServerService} on a loopback ephemeral port."""

    service: Any
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, fn: Any, *args: Any, timeout: float = 10.0, **kwargs: Any) -> Any:
        """Run C{fn} in the reactor thread and return its (Deferred's) result."""
        crochet = _crochet()
        return crochet.run_in_reactor(fn)(*args, **kwargs).wait(timeout)

    def stream(self, path: str | None = None, **kwargs: Any) -> StreamClient:
        return StreamClient(self.port, path or self.service.sse_path, **kwargs)

    def client_count(self) -> int:
        return int(self.call(lambda: len(self.service.sse_resource.clients)))

    def wait_clients(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.client_count() != n:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {n} clients, have {self.client_count()}")
            time.sleep(0.01)


@contextlib.contextmanager
def serve(wsgi_app: Any, **kwargs: Any) -> Iterator[RunningServer]:
    """
    Run C{wsgi_app} with wsgi-sse on 127.0.0.1 and an ephemeral port, in
    crochet's reactor thread, for the duration of the block.  Keyword
    arguments go to L{wsgi_sse.make_service}.
    """
    crochet = _crochet()
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred

    from wsgi_sse import make_service, set_broadcaster

    kwargs.setdefault("listen", "tcp:0:interface=127.0.0.1")

    @crochet.run_in_reactor
    def start() -> Any:
        service = make_service(wsgi_app, reactor=reactor, **kwargs)
        service.startService()
        started: Any = Deferred()

        def listening(port: Any) -> Any:
            started.callback((service, port))
            return port  # the service stops listening on it when stopped

        service.listening._waitingForPort.addCallback(listening)
        return started

    service, port = start().wait(10)
    try:
        yield RunningServer(service, getattr(port.getHost(), "port", 0))
    finally:
        crochet.run_in_reactor(service.stopService)().wait(15)
        set_broadcaster(None)


# -- one-pass request reading: raw exchanges compared byte for byte --------------


def set_lean(server: RunningServer, on: bool) -> None:
    """
    Turn the one-pass reading of simple requests (stream GETs and any other)
    and the one-write WSGI answer on or off for new connections: off, every
    request takes twisted.web's line parser and every answer its writing.
    """
    from wsgi_sse import _lean, _wsgi

    site = server.service.site

    def change() -> None:
        site._lean_path = b"/sse" if on else None
        site._lean_requests = on
        _wsgi.finish_response = _lean.finish_response if on else _write_and_finish  # type: ignore[assignment]

    server.call(change)


def _write_and_finish(request: Any, body: bytes) -> None:
    """A WSGI response's end, as twisted.web writes it: C{write}, then C{finish}."""
    if body:
        request.write(body)
    request.finish()


def record_one_pass(monkeypatch: Any, method: str) -> list[bool]:
    """
    Record, for every read the site's channel hands to its one-pass reader
    C{method} (C{_serve_simple_get}, C{_serve_simple_request}), whether that
    reader served it.
    """
    from wsgi_sse._site import _HeaderDeadlineChannel

    calls: list[bool] = []
    original = getattr(_HeaderDeadlineChannel, method)

    def recording(self: Any, data: bytes) -> bool:
        served: bool = original(self, data)
        calls.append(served)
        return served

    monkeypatch.setattr(_HeaderDeadlineChannel, method, recording)
    return calls


def both_ways(
    server: RunningServer, calls: list[bool], request: bytes, done: Any
) -> tuple[bytes, bytes]:
    """
    The answers to C{request} (Date blanked) read in one pass and by
    twisted.web's line parser; C{calls} records the one-pass reader's
    answers (L{record_one_pass}), which must have served the first.
    """
    set_lean(server, True)
    del calls[:]
    fast = exchange(server.port, request, done)
    server.call(lambda: None)  # the reactor is done with that read
    assert calls == [True], "the one pass did not serve the request"
    set_lean(server, False)
    slow = exchange(server.port, request, done)
    server.call(lambda: None)
    assert calls == [True], "the one pass served a request it was turned off for"
    set_lean(server, True)
    return without_date(fast), without_date(slow)


def head_end(data: bytes) -> int:
    """Where the response head ends in C{data} (-1 if not yet)."""
    end = data.find(b"\r\n\r\n")
    return end + 4 if end >= 0 else -1


def exchange(port: int, request: bytes, done: Any, timeout: float = 10.0) -> bytes:
    """Send C{request} in one write on a new connection; read until C{done(data)} or EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        data = b""
        deadline = time.monotonic() + timeout
        while not done(data):
            assert time.monotonic() < deadline, f"timed out with {data!r}"
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def without_date(data: bytes) -> bytes:
    """C{data} with its (first) Date header's value blanked out."""
    return re.sub(rb"\r\nDate: [^\r]*\r\n", b"\r\nDate: -\r\n", data, count=1)


def end_streams(server: RunningServer) -> int:
    """
    End every open stream cleanly, as a restarting server would (clients
    reconnect); return how many streams were ever opened.
    """
    resource = server.service.sse_resource

    def end() -> int:
        for client in tuple(resource.clients):
            resource.hub.unsubscribe(client)
            client.finish()
        return int(resource.stats.connects)

    return int(server.call(end))


def end_streams_until_reconnected(server: RunningServer, times: int, timeout: float) -> int:
    """
    End every open stream again and again until clients have reconnected
    C{times} times; return how many times they did (fewer if C{timeout}
    seconds ran out first).
    """
    first = end_streams(server)
    deadline = time.monotonic() + timeout
    reconnects = 0
    while reconnects < times and time.monotonic() < deadline:
        time.sleep(0.02)
        reconnects = end_streams(server) - first
    return reconnects


# -- subprocesses ------------------------------------------------------------------


def wait_until(predicate: Any, timeout: float = 20.0, what: str = "condition") -> None:
    """Poll C{predicate} until true."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def dechunk(data: bytes) -> bytes:
    """Decode a complete HTTP/1.1 chunked body (chunk extensions ignored)."""
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment for a child process that must import this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def wait_for_port(
    port: int, proc: subprocess.Popen[Any] | None = None, timeout: float = 20.0
) -> None:
    """Wait until something listens on 127.0.0.1:C{port}."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode}: {out}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on port {port}")


def start_cli(app: str, *flags: str, cwd: Path) -> tuple[subprocess.Popen[str], int]:
    """
    Start C{python -m wsgi_sse app --listen tcp:PORT:interface=127.0.0.1
    *flags} in C{cwd} on a free port and wait until it listens; return the
    process (its output in C{stdout}) and the port.
    """
    port = free_port()
    listen = f"tcp:{port}:interface=127.0.0.1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wsgi_sse", app, "--listen", listen, *flags],
        cwd=cwd,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, proc)
    except BaseException:
        proc.kill()
        proc.communicate(timeout=15)
        raise
    return proc, port


def cli_page(app_source: str, *flags: str, tmp_path: Path) -> tuple[int, bytes, str]:
    """
    Serve C{app_source} (a module defining the WSGI C{app}) with C{python -m
    wsgi_sse} and C{flags}, C{GET /} once, and stop the server with
    C{SIGTERM}; return the answer's status and body, and the server's output.
    """
    (tmp_path / "page_app.py").write_text(app_source)
    proc, port = start_cli("page_app:app", *flags, cwd=tmp_path)
    try:
        status, _, body = http_request(port, "GET", "/")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    return status, body, output


PYTHON = sys.executable


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """
    Write a fresh self-signed certificate for localhost and 127.0.0.1 (and
    its key) into C{directory}; return (certificate, key) paths.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def tls_listen(cert: Path, key: Path, port: int = 0) -> str:
    """The endpoint string serving TLS (and HTTP/2, when h2 is installed) on 127.0.0.1."""
    return f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"


@contextlib.contextmanager
def logged(*, fields: bool = False) -> Iterator[list[str]]:
    """
    The text of every log event emitted in the block; with C{fields},
    followed by all its fields.
    """
    from twisted.logger import formatEvent, globalLogPublisher

    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        text = formatEvent(event) or ""
        lines.append(text + repr(sorted(event.items(), key=str)) if fields else text)

    globalLogPublisher.addObserver(observe)
    try:
        yield lines
    finally:
        globalLogPublisher.removeObserver(observe)
