"""
The access log and the per-stream lines: the same text as twistd's log
observer writes for their events, written directly when that observer is
alone, and as events otherwise.
"""

from __future__ import annotations

import io
import json
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from example_server import EXAMPLES, run_example, twistd
from support import (
    StreamClient,
    exchange,
    free_port,
    http_request,
    serve,
    subprocess_env,
    wait_for_port,
    wait_until,
)
from twisted.internet.address import IPv6Address, UNIXAddress
from twisted.logger import (
    Logger,
    LogLevel,
    LogPublisher,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.web import server
from twisted.web.http import combinedLogFormatter
from twisted.web.test.requesthelper import DummyChannel

from wsgi_sse._accesslog import combined_line, redacting
from wsgi_sse._textlog import TextLog, direct_target

NOW = 1_764_560_000.25

# What twistd's text observer puts before a message, and an access line.
PREFIX = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[twisted\.python\.log#info\] "
STAMP = r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\]"


def _request(
    uri: bytes = b"/hello/",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    *,
    method: bytes = b"GET",
    code: int = 200,
    length: int = 12,
    address: Any = None,
) -> server.Request:
    channel = DummyChannel()
    if address is not None:
        channel.transport.getPeer = lambda: address
    request = server.Request(channel)
    request.method, request.uri, request.clientproto = method, uri, b"HTTP/1.1"
    request.code, request.sentLength = code, length
    for name, value in headers:
        request.requestHeaders.addRawHeader(name, value)
    return request


REQUESTS = {
    "plain": _request(),
    "escaped": _request(
        b"/a b\"'\\?x=\xff",
        ((b"referer", b"http://x/\"q'\\"), (b"user-agent", b"w\xffrk\x01\t")),
        method=b"P\x00ST",
    ),
    "empty headers": _request(headers=((b"referer", b""), (b"user-agent", b""))),
    "repeated header": _request(headers=((b"referer", b"a"), (b"referer", b"b"))),
    "no length": _request(length=0, code=404),
    "token": _request(b"/sse?channel=a&token=abc.def&x=1"),
    "ipv6": _request(address=IPv6Address("TCP", "::1", 5)),
    "unix": _request(address=UNIXAddress(b"/tmp/s")),
}


@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_combined_line_is_twisted_line(name: str) -> None:
    """The access line is twisted.web's combined log line, tokens redacted, to the character."""
    request = REQUESTS[name]
    stamp = "[01/Dec/2026:03:30:00 +0000]"
    assert combined_line(stamp, request) == redacting(combinedLogFormatter)(stamp, request)
    assert "abc.def" not in combined_line(stamp, request)


def _publisher(*observers: Any) -> LogPublisher:
    return LogPublisher(*observers)


def test_direct_line_is_the_observers_line() -> None:
    """With a text observer alone, a line is written directly, as the observer writes its event."""
    out = io.StringIO()
    observer = textFileLogObserver(out)
    publisher = _publisher(observer)
    logger = Logger(namespace="wsgi_sse.test", observer=publisher)
    text_log = TextLog(logger, clock=lambda: NOW)
    assert direct_target(publisher) is not None
    fields = {"peer": "10.0.0.1", "channels": ["a", "b"], "last_event_id": None}
    text_log.emit("stream opened for {peer}: {channels} from {last_event_id!r}", **fields)
    assert text_log.write('"127.0.0.1" - - [x] "GET / HTTP/1.1" 200 1 "-" "a\nb"')
    expected = io.StringIO()
    reference = textFileLogObserver(expected)
    for event_format, event_fields in (
        ("stream opened for {peer}: {channels} from {last_event_id!r}", fields),
        ("{log_io}", {"log_io": '"127.0.0.1" - - [x] "GET / HTTP/1.1" 200 1 "-" "a\nb"'}),
    ):
        reference(
            {
                "log_format": event_format,
                "log_namespace": "wsgi_sse.test",
                "log_level": LogLevel.info,
                "log_time": NOW,
                **event_fields,
            }
        )
    assert out.getvalue() == expected.getvalue()
    assert out.getvalue().count("\n\t") == 1  # a line break continues as the observer's does


def test_binary_file_gets_utf8() -> None:
    """A text observer on a binary file gets the line in UTF-8, as its events are."""
    out = io.BytesIO()
    publisher = _publisher(textFileLogObserver(out))
    text_log = TextLog(Logger(namespace="n", observer=publisher), clock=lambda: NOW)
    assert text_log.write("caf\u00e9")
    assert out.getvalue().endswith(" [n#info] caf\u00e9\n".encode())


@pytest.mark.parametrize("setup", ["second observer", "json observer", "no observer"])
def test_other_observers_get_events(setup: str) -> None:
    """Unless a text observer is alone, each line is a log event with its fields."""
    events: list[dict[str, Any]] = []
    out = io.StringIO()
    observers: list[Any] = {
        "second observer": [textFileLogObserver(out), events.append],
        "json observer": [jsonFileLogObserver(out), events.append],
        "no observer": [events.append],
    }[setup]
    publisher = _publisher(*observers)
    text_log = TextLog(Logger(namespace="n", observer=publisher), clock=lambda: NOW)
    text_log.emit("stream closed for {peer}: {reason}", peer="p", reason="gone")
    assert not text_log.write("an access line")
    assert [(e["log_format"], e.get("peer"), e["log_namespace"]) for e in events] == [
        ("stream closed for {peer}: {reason}", "p", "n")
    ]
    if setup == "second observer":
        assert out.getvalue().endswith(" [n#info] stream closed for p: gone\n")
    if setup == "json observer":
        assert json.loads(out.getvalue().strip("\x1e\n"))["peer"] == "p"


def test_observer_change_is_followed() -> None:
    """Adding an observer later turns the direct writes into events, and back."""
    out = io.StringIO()
    observer = textFileLogObserver(out)
    publisher = _publisher(observer)
    text_log = TextLog(Logger(namespace="n", observer=publisher), clock=lambda: NOW)
    assert text_log.write("one")
    events: list[dict[str, Any]] = []
    publisher.addObserver(events.append)
    assert not text_log.write("two")
    publisher.removeObserver(events.append)
    assert text_log.write("three")
    assert [line.split("] ", 1)[1] for line in out.getvalue().splitlines()] == ["one", "three"]


def test_failing_file_and_call_fields_fall_back_to_events() -> None:
    """A file that fails, or a format calling a field, turn the line into an event."""

    class Broken(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError("disk full")

    broken = Broken()
    publisher = _publisher(textFileLogObserver(broken))
    text_log = TextLog(Logger(namespace="n", observer=publisher), clock=lambda: NOW)
    assert not text_log.write("lost?")  # the caller logs it as an event
    out = io.StringIO()
    publisher = _publisher(textFileLogObserver(out))
    text_log = TextLog(Logger(namespace="n", observer=publisher), clock=lambda: NOW)
    text_log.emit("value: {f()}", f=lambda: "called")
    assert out.getvalue().endswith(" [n#info] value: called\n")


def _access_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "[twisted.python.log#info] " in line]


def test_twistd_logfile_has_every_request_line_even_after_a_crash(tmp_path: Path) -> None:
    """Under twistd --logfile each request's line is in the file at once: kill -9 loses none."""
    port = free_port()
    logfile = tmp_path / "twistd.log"
    proc = subprocess.Popen(
        [twistd(), "-n", "--pidfile=", f"--logfile={logfile}", "-y", "server.py"],
        cwd=EXAMPLES / "bottle_app",
        env=subprocess_env(WSGI_SSE_LISTEN=f"tcp:{port}:interface=127.0.0.1"),
    )
    try:
        wait_for_port(port, proc)
        sizes = []
        for n in range(5):
            status, _, body = http_request(
                port, "GET", f"/hello/?n={n}&token=s3cret", headers={"User-Agent": 'a "b" c'}
            )
            assert status == 200
            sizes.append(len(body))
        status, _, body = http_request(port, "POST", "/knock", body=b"name=x")
        assert status == 200
        sizes.append(len(body))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    lines = _access_lines(logfile.read_text())
    expected = [
        rf'{PREFIX}"127\.0\.0\.1" - - {STAMP} "GET /hello/\?n={n}&token=\*\*\* HTTP/1\.0" 200 '
        rf'{sizes[n]} "-" "a \\"b\\" c"'
        for n in range(5)
    ] + [rf'{PREFIX}"127\.0\.0\.1" - - {STAMP} "POST /knock HTTP/1\.0" 200 {sizes[5]} "-" "-"']
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), line
    assert "s3cret" not in logfile.read_text()


TAC = """
import sys
sys.path.insert(0, {examples!r})
from app import app
from twisted.internet import reactor
from wsgi_sse import make_application
from wsgi_sse._textlog import direct_target
application = make_application(app, log_streams=True)
# Whether lines are written directly (the cheap way) once logging has begun.
reactor.callWhenRunning(lambda: print("direct:", direct_target() is not None))
"""


def test_twistd_stdout_has_stream_lines_and_access_lines_in_order(tmp_path: Path) -> None:
    """Under twistd -n stream and access lines go to stdout directly, in order, before shutdown."""
    (tmp_path / "server.py").write_text(TAC.format(examples=str(EXAMPLES / "bottle_app")))
    port = free_port()
    out = tmp_path / "out.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen(
            [twistd(), "-ny", "server.py", "--pidfile="],
            cwd=tmp_path,
            env=subprocess_env(WSGI_SSE_LISTEN=f"tcp:{port}:interface=127.0.0.1"),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port(port, proc)
            with StreamClient(port, "/sse?channel=a") as client:
                assert client.status == 200
                assert http_request(port, "GET", "/hello/")[0] == 200
            deadline = time.monotonic() + 10
            while "stream closed" not in out.read_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            assert http_request(port, "GET", "/hello/?last")[0] == 200
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
    lines = out.read_text().splitlines()
    order = [
        next(i for i, line in enumerate(lines) if needle in line)
        for needle in (
            "stream opened for 127.0.0.1",
            '"GET /hello/ HTTP/1.0" 200',
            "stream closed for 127.0.0.1",
            '"GET /hello/?last HTTP/1.0" 200',
            "Received SIGTERM",
            "Server Shut Down.",
        )
    ]
    assert order == sorted(order), lines
    assert any(line.endswith("direct: True") for line in lines), lines
    opened = lines[order[0]]
    assert re.fullmatch(
        r"\S+ \[wsgi_sse\._streams\.Streams#info\] stream opened for 127\.0\.0\.1: \['a'\], "
        r"resuming from None, 0 events replayed",
        opened,
    ), opened


def test_example_logs_requests_to_stdout() -> None:
    """The example as README runs it logs its page views on stdout, one line each."""
    with run_example("bottle_app") as example:
        for _ in range(3):
            assert http_request(example.port, "GET", "/hello/")[0] == 200
        deadline = time.monotonic() + 10
        while len(_access_lines(example.log())) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [line for line in _access_lines(example.log()) if "GET /hello/ " in line]
    assert len(lines) == 3
    assert all(re.fullmatch(rf'{PREFIX}"127\.0\.0\.1" - - {STAMP} .*', line) for line in lines)


class _Lines:
    """A log file that keeps the lines written to it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write(self, text: str) -> None:
        self.lines.extend(text.splitlines())

    def flush(self) -> None:
        pass


REFUSALS = [
    # (request bytes, the request and status part of its access line)
    (
        b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n",
        '"POST /upload HTTP/1.1" 413 23',
    ),
    (b"GET page HTTP/1.1\r\nHost: x\r\n\r\n", '"GET page HTTP/1.1" 400 23'),
    (
        b"GET /hello/ HTTP/1.1\r\nUser-Agent: probe/1\r\n" + b"X: y\r\n" * 600 + b"\r\n",
        '"GET /hello/ HTTP/1.1" 431 41',
    ),
    (b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n", '"- - -" 414 22'),
    (b"GARBAGE\r\n\r\n", '"- - -" 400 -'),
    (b"GET /hello/ HTTP/1.1\r\nConnection: close\r\n\r\n", '"GET /hello/ HTTP/1.1" 400 20'),
    (b"GET /hello/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", '"GET /hello/ HTTP/1.1" 400 26'),
    (b"GET /hello/ HTTP/2.0\r\nHost: x\r\n\r\n", '"GET /hello/ HTTP/2.0" 505 27'),
    (b"GET /hello/ HTTP/1.1\r\nHost", '"GET /hello/ HTTP/1.1" 408 30'),
    (b"GET /hel", '"- - -" 408 30'),
]


def test_requests_the_server_refuses_have_their_access_line() -> None:
    """A request refused before the app sees it is logged with its status, as nginx logs it."""
    with serve(wsgi_hello, max_request_body=1000, header_timeout=0.5) as server:
        log = _Lines()
        server.service.site._logFile = log
        for raw, expected in REFUSALS:
            del log.lines[:]
            answer = exchange(server.port, raw, lambda data: False)
            status = int(answer.split(b" ", 2)[1]) if answer else 0
            assert str(status) in expected
            wait_until(lambda: bool(log.lines), what=expected)
            assert len(log.lines) == 1, log.lines
            assert expected in log.lines[0]
        # A connection that sends nothing gets its 408, and no line.
        del log.lines[:]
        assert b" 408 " in exchange(server.port, b"", lambda data: False)
        server.call(lambda: None)  # (the reactor has written any line by now)
        assert log.lines == []
        # A kept-alive connection: the request served, then one refused.
        del log.lines[:]
        exchange(
            server.port,
            b"GET /hello/ HTTP/1.1\r\nHost: x\r\n\r\nGARBAGE\r\n\r\n",
            lambda data: False,
        )
        wait_until(lambda: len(log.lines) == 2, what="two lines")
        assert '"GET /hello/ HTTP/1.1" 200' in log.lines[0]
        assert '"- - -" 400 -' in log.lines[1]


def wsgi_hello(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app saying hello."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


def test_a_stream_its_reader_closes_has_its_access_line() -> None:
    """
    A stream ends, as a rule, when its reader closes it: its line is written
    then, with its status; so is a download cut short, with what was sent.
    A request whose client left before any answer has none.
    """
    import threading

    release = threading.Event()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/slow":
            release.wait(10)
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"late"]
        if environ["PATH_INFO"] != "/download":
            return wsgi_hello(environ, start_response)
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"x" * 100)

        def forever() -> Any:
            while True:
                yield b"x"
                threading.Event().wait(0.01)

        return forever()

    with serve(app) as server:
        log = _Lines()
        server.service.site._logFile = log
        # (Other tests' connections the shared reactor may still watch.)
        before = server.call(_server_sockets)
        stream = StreamClient(server.port, "/sse?channel=room")
        assert stream.status == 200
        server.wait_clients(1)
        assert log.lines == []
        stream.sock.close()
        wait_until(lambda: bool(log.lines), what="the stream's line")
        assert len(log.lines) == 1, log.lines
        assert '"GET /sse?channel=room HTTP/1.1" 200 ' in log.lines[0]

        del log.lines[:]
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
        got = b""
        while got.count(b"x") < 100:
            got += sock.recv(65536)
        sock.close()
        wait_until(lambda: bool(log.lines), what="the download's line")
        line = log.lines[0]
        assert '"GET /download HTTP/1.1" 200 ' in line
        assert int(line.split('HTTP/1.1" 200 ')[1].split()[0]) >= 100

        del log.lines[:]
        wait_until(lambda: server.call(_server_sockets) == before, what="the download's close")
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        server.call(lambda: None)
        # Reset, not closed (a FIN alone says the client sends nothing more:
        # its answer would still be sent).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        wait_until(lambda: server.call(_server_sockets) == before, what="the reset read")
        release.set()
        # The next request's line comes after anything the first could write.
        assert b" 200 " in exchange(
            server.port,
            b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            lambda data: False,
        )
        wait_until(lambda: bool(log.lines), what="the next line")
        server.call(lambda: None)
        assert [line for line in log.lines if "/slow" in line] == []


def _server_sockets() -> int:
    """The accepted connections the reactor watches.  Reactor thread."""
    from twisted.internet import reactor, tcp

    watched = set(reactor.getReaders()) | set(reactor.getWriters())
    return sum(isinstance(each, tcp.Server) for each in watched)
