"""
Fixtures of the backplane contract suite: one real redis-server and one
real PostgreSQL for the session, emptied before every test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "redis"))

from pg_support import PostgresServer, running_postgres  # noqa: E402
from redis_support import RedisServer, running_redis  # noqa: E402


@pytest.fixture(scope="session")
def session_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session."""
    with running_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def session_postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL (initdb in a throwaway directory) for the session."""
    with running_postgres() as server:
        yield server


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


def _backend(request: pytest.FixtureRequest, kind: str) -> Backend:
    server = None
    if kind == "redis":
        server = request.getfixturevalue("session_redis")
    elif kind == "postgres":
        server = request.getfixturevalue("session_postgres")
    backend = Backend(kind, server)
    backend.clean()
    return backend


@pytest.fixture(params=["local", "redis", "postgres"])
def any_backend(request: pytest.FixtureRequest) -> Backend:
    """Every backplane: in-process, Redis, PostgreSQL."""
    return _backend(request, request.param)


@pytest.fixture(params=["redis", "postgres"])
def shared_backend(request: pytest.FixtureRequest) -> Backend:
    """The backplanes shared between processes: Redis, PostgreSQL."""
    return _backend(request, request.param)
