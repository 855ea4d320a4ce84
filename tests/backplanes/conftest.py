"""
Fixtures of the backplane contract suite: one real redis-server and one
real PostgreSQL for the session, emptied before every test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "redis"))

from backplane_support import Backend  # noqa: E402
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
