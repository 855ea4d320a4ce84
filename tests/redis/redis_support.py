"""Helpers and fixtures of the Redis suite: a real redis-server, server processes."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import (
    PYTHON,
    ROOT,
    StreamClient,
    free_port,
    http_request,
    subprocess_env,
    wait_for_port,
)

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """A redis-server without persistence, that tests may kill and restart."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                str(self.workdir),
                "--logfile",
                str(self.workdir / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self.ping():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def ping(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def kill(self) -> None:
        """Kill it at once (SIGKILL): what it held is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def client(self) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    for attempt in range(3):
        try:
            server.start()
            break
        except RuntimeError:
            # The free port was taken meanwhile by another process.
            server.kill()
            if attempt == 2:
                raise
            server.port = free_port()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test."""
    with running_redis(tmp_path) as server:
        yield server


# -- server processes -------------------------------------------------------------


HERE = Path(__file__).resolve().parent
BOTTLE_DIR = ROOT / "examples" / "bottle_app"
TWISTD = shutil.which("twistd")


class ServerProcess:
    """A wsgi-sse server in a child process, on a free loopback port."""

    def __init__(self, argv: list[str], cwd: Path, log: Path, **env: str) -> None:
        self.port = free_port()
        self.argv = argv
        self.cwd = cwd
        self.log_path = log
        self.env = subprocess_env(WSGI_SSE_LISTEN=f"tcp:{self.port}:interface=127.0.0.1", **env)
        self.proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
            self.proc = None
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")

    def stream(self, path: str = "/sse", **kwargs: Any) -> StreamClient:
        return StreamClient(self.port, path, **kwargs)

    def post(
        self, path: str, body: bytes = b"", **kwargs: Any
    ) -> tuple[int, dict[str, str], bytes]:
        return http_request(self.port, "POST", path, body=body, **kwargs)

    def knock(self, name: str) -> None:
        """POST /knock of the Bottle example."""
        status, _, _ = self.post(
            "/knock",
            f"name={name}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200

    def stats(self) -> dict[str, Any]:
        """GET /stats of the burst app: the backplane's counters."""
        import json

        status, _, body = http_request(self.port, "GET", "/stats")
        assert status == 200
        return dict(json.loads(body))


def bottle_server(tmp: Path, name: str, redis_url: str) -> ServerProcess:
    """The Bottle example, started as the README says: twistd -ny server.py."""
    assert TWISTD is not None, "twistd not found"
    return ServerProcess(
        [TWISTD, "-ny", "server.py", "--pidfile="],
        BOTTLE_DIR,
        tmp / f"{name}.log",
        WSGI_SSE_REDIS_URL=redis_url,
    )


def burst_server(tmp: Path, name: str, redis_url: str) -> ServerProcess:
    """tests/redis/burst_app.py served by python -m wsgi_sse."""
    return ServerProcess(
        [PYTHON, "-m", "wsgi_sse", "burst_app:app", "--heartbeat", "5"],
        HERE,
        tmp / f"{name}.log",
        WSGI_SSE_REDIS_URL=redis_url,
    )


def stream_readers(redis_url: str) -> int | None:
    """
    How many clients of the Redis at C{redis_url} wait in C{XREAD} (each
    process's reader of the event stream, once it knows where to start
    reading), or L{None} if it cannot be reached.
    """
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=1)
    try:
        return sum(1 for c in client.client_list() if c.get("cmd") == "xread")
    except redis.RedisError:
        return None
    finally:
        client.close()


@contextlib.contextmanager
def processes(*servers: ServerProcess) -> Iterator[tuple[ServerProcess, ...]]:
    """
    Start servers (in parallel) and stop them all at the end.  With a
    reachable Redis, wait until each one's reader of the event stream is
    in place too: a process starts reading the stream at its end when it
    connects, so an event appended before that (a knock on another process
    right after this one started listening) is not this process's to see.
    """
    started: list[ServerProcess] = []
    urls = {server.env.get("WSGI_SSE_REDIS_URL") for server in servers}
    redis_url = urls.pop() if len(urls) == 1 else None
    readers_before = stream_readers(redis_url) if redis_url else None
    try:
        for server in servers:
            server._log = open(server.log_path, "wb")
            server.proc = subprocess.Popen(
                server.argv,
                cwd=server.cwd,
                env=server.env,
                stdout=server._log,
                stderr=subprocess.STDOUT,
            )
            started.append(server)
        for server in servers:
            try:
                wait_for_port(server.port, None, timeout=30)
            except AssertionError:
                raise AssertionError(f"server did not start: {server.log()}") from None
        if redis_url is not None and readers_before is not None:
            deadline = time.monotonic() + 30
            while (stream_readers(redis_url) or 0) < readers_before + len(servers):
                if time.monotonic() > deadline:
                    logs = "\n".join(server.log() for server in servers)
                    raise AssertionError(f"the servers did not start reading Redis: {logs}")
                time.sleep(0.02)
        yield servers
    finally:
        for server in started:
            server.stop()


def wait_connected(server: ServerProcess, timeout: float = 20.0) -> None:
    """Wait until a burst server's backplane is connected to Redis."""
    deadline = time.monotonic() + timeout
    while not server.stats().get("connected"):
        if time.monotonic() > deadline:
            raise AssertionError(f"not connected to Redis: {server.log()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the tests of a module."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="module")
def bottle_pair(
    shared_redis: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Two processes of the Bottle example sharing broadcasts through Redis."""
    tmp = tmp_path_factory.mktemp("bottle")
    a = bottle_server(tmp, "a", shared_redis.url)
    b = bottle_server(tmp, "b", shared_redis.url)
    with processes(a, b):
        yield a, b
