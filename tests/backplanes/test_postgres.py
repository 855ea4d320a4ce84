"""
The PostgreSQL backplane against a real PostgreSQL: transactional publish,
rows committed out of order, restarts, retention, hostile rows, Django's
own database; and how a backplane is picked from its URL.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from backplane_support import Backend, GatedProxy
from pg_support import PostgresServer
from redis_support import ServerProcess, processes
from support import PYTHON, ROOT, http_request, serve, subprocess_env, wait_until
from test_contract import server_on
from twisted.internet.task import Clock

from wsgi_sse import Hub, SSEServerService, postgres
from wsgi_sse.postgres import PostgresBackplane
from wsgi_sse.redis import RedisBackplane

HERE = Path(__file__).resolve().parent


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app with nothing to say."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]


@pytest.fixture
def pg(session_postgres: PostgresServer) -> Backend:
    """The session's PostgreSQL, emptied."""
    backend = Backend("postgres", session_postgres)
    backend.clean()
    return backend


# -- picking a backplane ---------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", RedisBackplane),
        ("rediss://127.0.0.1:6380/0", RedisBackplane),
        ("unix:///run/redis.sock", RedisBackplane),
        ("postgresql://u@127.0.0.1/db", PostgresBackplane),
        ("postgres://u@127.0.0.1/db", PostgresBackplane),
    ],
)
def test_backplane_url_scheme_picks_the_backplane(url: str, kind: type) -> None:
    """backplane_url picks Redis or PostgreSQL by scheme; nothing connects before start."""
    service = SSEServerService(app, listen="tcp:0", reactor=Clock(), backplane_url=url)
    assert isinstance(service.backplane, kind)
    assert service.hub.backplane is service.backplane


def test_backplane_url_settings_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    """The argument beats the environment; $WSGI_SSE_BACKPLANE_URL beats $WSGI_SSE_REDIS_URL."""
    monkeypatch.setenv("WSGI_SSE_REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("WSGI_SSE_BACKPLANE_URL", "postgresql://u@127.0.0.1:1/db")
    from_env = SSEServerService(app, listen="tcp:0", reactor=Clock())
    assert isinstance(from_env.backplane, PostgresBackplane)
    given = SSEServerService(
        app, listen="tcp:0", reactor=Clock(), backplane_url="redis://127.0.0.1:2/0"
    )
    assert isinstance(given.backplane, RedisBackplane) and given.backplane.url.endswith(":2/0")
    old_name = SSEServerService(
        app, listen="tcp:0", reactor=Clock(), redis_url="redis://127.0.0.1:3/0"
    )
    assert isinstance(old_name.backplane, RedisBackplane)
    off = SSEServerService(app, listen="tcp:0", reactor=Clock(), backplane_url="")
    assert off.backplane is None and not off.hub.backplane.shared
    with pytest.raises(ValueError, match="the scheme must be one of"):
        SSEServerService(app, listen="tcp:0", reactor=Clock(), backplane_url="mysql://x/y")


@pytest.mark.parametrize(
    ("module", "url", "hint"),
    [
        ("psycopg", "postgresql://u:pw@127.0.0.1:1/db", "pip install 'wsgi-sse[postgres]'"),
        ("redis", "redis://127.0.0.1:1/0", "pip install 'wsgi-sse[redis]'"),
    ],
)
def test_missing_client_library_fails_at_start_with_the_install_line(
    module: str, url: str, hint: str
) -> None:
    """python -m wsgi_sse --backplane-url without the client library: one line, exit 2."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from wsgi_sse._cli import main\n"
        f"sys.exit(main(['burst_app:app', '--backplane-url', {url!r}]))\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", code],
        cwd=ROOT / "tests" / "redis",
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "python -m wsgi_sse" in line]
    assert len(errors) == 1 and hint in errors[0] and "pw" not in errors[0]


# -- transactional publish and commit order ---------------------------------------


def test_publish_in_a_transaction_is_delivered_on_commit_never_on_rollback(pg: Backend) -> None:
    """A row written by a transaction that commits late gets a later id; a rolled-back one, none."""
    with server_on(pg) as a:
        with a.stream("/sse?channel=jobs") as client:
            a.wait_clients(1)
            late = pg.server.connect()
            rolled = pg.server.connect()
            try:
                # Both insert (taking row ids) before the marker commits.
                postgres.publish(late.cursor(), "late", channel="jobs")  # a cursor works too
                postgres.publish(rolled, "rolled-back", channel="jobs")
                with pg.server.connect() as other:
                    postgres.publish(other, "marker", channel="jobs")
                rolled.rollback()
                (marker,) = client.wait_events(1)
                assert marker.data == "marker"
                late.commit()
                events = client.wait_events(2)
            finally:
                late.close()
                rolled.close()
            assert [e.data for e in events] == ["marker", "late"]
            assert int(events[1].last_event_id) > int(marker.last_event_id)
            a.service.broadcaster.broadcast("after", channel="jobs")
            assert [e.data for e in client.wait_events(3)] == ["marker", "late", "after"]


def test_concurrent_transactions_committing_out_of_order_skip_nothing(pg: Backend) -> None:
    """8 writers x 40 transactions committing in random order: all delivered, one order."""
    writers, per_writer = 8, 40
    with server_on(pg) as a, server_on(pg) as b:
        with a.stream() as ca, b.stream() as cb:
            a.wait_clients(1)
            b.wait_clients(1)

            def write(w: int) -> None:
                rng = random.Random(w)
                with pg.server.connect() as conn:
                    for i in range(per_writer):
                        postgres.publish(conn, f"w{w}:{i}")
                        time.sleep(rng.random() * 0.01)
                        conn.commit()

            threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            total = writers * per_writer
            got_a = [(e.data, e.last_event_id) for e in ca.wait_events(total, timeout=30)]
            got_b = [(e.data, e.last_event_id) for e in cb.wait_events(total, timeout=30)]
    assert got_a == got_b and len({i for _, i in got_a}) == total
    ids = [int(i) for _, i in got_a]
    assert ids == sorted(ids)
    for w in range(writers):
        assert [d for d, _ in got_a if d.startswith(f"w{w}:")] == [
            f"w{w}:{i}" for i in range(per_writer)
        ]
    print(f"\n{total} transactions from {writers} writers: all delivered once, one order")


def test_restart_catches_up_with_rows_committed_meanwhile(pg: Backend) -> None:
    """After a PostgreSQL restart, rows committed before the reader reconnects are all delivered."""
    with server_on(pg) as a:
        with a.stream() as client:
            a.wait_clients(1)
            a.service.broadcaster.broadcast("before")
            client.wait_events(1)
            pg.stop()
            pg.start()
            with pg.server.connect() as conn:
                for i in range(20):
                    postgres.publish(conn, f"meanwhile{i}")
            events = client.wait_events(21, timeout=30)
    assert [e.data for e in events] == ["before"] + [f"meanwhile{i}" for i in range(20)]


def test_table_dropped_while_running_is_recreated_and_read_again(pg: Backend) -> None:
    """The events table dropped under a running server: recreated, new ids above the old ones."""
    with server_on(pg) as a:
        with a.stream() as client:
            a.wait_clients(1)
            for i in range(3):
                a.service.broadcaster.broadcast(f"old{i}")
            old = client.wait_events(3)
            pg.clean()  # DROP TABLE: the reader fails, reconnects, recreates it
            wait_until(lambda: a.service.backplane.stats()["errors"] >= 1, what="noticed")
            wait_until(lambda: a.service.backplane.stats()["connected"], what="connected")
            a.service.broadcaster.broadcast("new")
            new = client.wait_events(4)[3]
        # Ids of the new table never repeat those of the old one.
        assert new.data == "new" and int(new.last_event_id) > int(old[2].last_event_id)
    with server_on(pg) as b:
        # Another process cannot answer for the dropped rows: reset.
        with b.stream(headers={"Last-Event-ID": old[1].last_event_id}) as again:
            assert again.wait_events(1)[0].type == "reset"


def test_retention_by_size_and_age(pg: Backend) -> None:
    """Rows beyond history_size, or older than history_age, are deleted."""
    from twisted.internet import reactor

    backplane = PostgresBackplane(
        pg.url, reactor=reactor, history_size=3, history_age=600, block=0.1
    )
    with server_on(pg, hub=Hub(backplane=backplane, clock=reactor)) as a:
        for i in range(10):
            a.service.broadcaster.broadcast(f"e{i}")

        def rows() -> int:
            with pg.server.connect() as conn:
                return int(conn.execute("SELECT count(*) FROM wsgi_sse_events").fetchone()[0])

        wait_until(lambda: rows() <= 3, what="pruned to history_size")
        backplane.history_age = 0.001
        wait_until(lambda: rows() == 0, what="pruned by age")


def test_forged_rows_never_reach_a_client_live_or_replayed(pg: Backend) -> None:
    """Rows wsgi-sse never writes are dropped on the live and the replay path alike."""
    bad = [
        ("default", b"id: 999999\nevent: pwn\ndata: forged-id\n"),
        ("default", b"data: x\n\nid: 9\ndata: forged-split\n"),
        ("default", b"data: forged-cr\rid: 9\n"),
        ("default", b"data: \xff forged-utf8\n"),
        ("default", b"data: forged-no-newline"),
        ("default\nid: 9", b"data: forged-channel\n"),
        ("default", b"data: " + b"x" * (1 << 20) + b"\n"),
    ]
    with server_on(pg) as a:
        with a.stream() as live:
            a.wait_clients(1)
            a.service.broadcaster.broadcast("start")
            (start,) = live.wait_events(1)
            with pg.server.connect() as conn:
                for i, (channel, body) in enumerate(bad):
                    conn.execute(
                        "INSERT INTO wsgi_sse_events (channel, body, origin) VALUES (%s, %s, %s)",
                        (channel, body, f"{a.service.hub.instance_id}:x"),
                    )
                    postgres.publish(conn, f"good{i}")
                conn.execute("SELECT pg_notify('wsgi_sse_events', '')")
            live_events = live.wait_events(1 + len(bad))
            live.read_some(0.3)
    with server_on(pg) as b:
        with b.stream(headers={"Last-Event-ID": start.last_event_id}) as replayed:
            replayed_events = replayed.wait_events(len(bad))
            replayed.read_some(0.3)
        assert b.service.hub.stats.replays_fetched == 1
    good = [f"good{i}" for i in range(len(bad))]
    assert [e.data for e in live.events[1:]] == good
    assert [e.data for e in replayed.events] == good
    forged = sum(1 for e in live_events + replayed_events if "forged" in e.data or e.type == "pwn")
    print(f"\n{len(bad)} forged rows: {forged} delivered live or replayed")
    assert forged == 0


FORGED_SIZE = 50_000_000


def test_oversized_rows_are_never_sent_to_a_reader(pg: Backend) -> None:
    """
    Rows holding a 50 MB body, channel or origin (written with SQL by
    anyone who can write to the table) are skipped as malformed, live and
    replayed, as before, but the database never sends those values: the
    reading process receives a few kB for them, not 150 MB.  The rows
    around them are delivered in order.
    """
    big = f"repeat('x', {FORGED_SIZE})"
    forged = [
        "INSERT INTO wsgi_sse_events (channel, body) VALUES "
        f"('default', convert_to('data: ' || {big} || chr(10), 'UTF8'))",
        "INSERT INTO wsgi_sse_events (channel, body) VALUES "
        f"({big}, convert_to('data: forged' || chr(10), 'UTF8'))",
        # Only the origin is too long: delivered, as another process's.
        "INSERT INTO wsgi_sse_events (channel, body, origin) VALUES "
        f"('default', convert_to('data: long-origin' || chr(10), 'UTF8'), {big})",
    ]
    expected = ["good0", "good1", "good2", "long-origin", "good3"]
    with (
        server_on(pg) as a,
        GatedProxy(pg.server.port) as proxy,
        serve(app, backplane_url=proxy.url_for(pg.url)) as b,
    ):
        proxy.open()
        wait_until(lambda: b.service.backplane.connected, what="connected")
        with b.stream() as live:
            b.wait_clients(1)
            a.service.broadcaster.broadcast_and_wait("start")
            (start,) = live.wait_events(1)
            before = proxy.received
            with pg.server.connect() as conn:
                postgres.publish(conn, "good0")
                for i, sql in enumerate(forged):
                    conn.execute(sql)
                    postgres.publish(conn, f"good{i + 1}")
            live.wait_events(1 + len(expected))
            live.read_some(0.3)
        malformed = b.service.backplane.stats()["malformed"]
        # A process that never read them live fetches them for a replay.
        with serve(app, backplane_url=proxy.url_for(pg.url)) as c:
            wait_until(lambda: c.service.backplane.connected, what="connected")
            with c.stream(headers={"Last-Event-ID": start.last_event_id}) as replayed:
                replayed.wait_events(len(expected))
                replayed.read_some(0.3)
            assert c.service.hub.stats.replays_fetched == 1
            malformed += c.service.backplane.stats()["malformed"]
        received = proxy.received - before
    print(f"\n3 rows of {FORGED_SIZE:,} bytes: {received:,} bytes received, live and replayed")
    assert [e.data for e in live.events] == ["start", *expected]
    assert [e.data for e in replayed.events] == expected
    assert malformed == 4  # two rows, live and replayed
    assert received < 1_000_000


ROW_SIZE = 900 * 1024
# Room for 40 such events queued to one client at once.
BUFFER = 64 << 20


def insert_rows(pg: Backend, count: int) -> None:
    """C{count} valid rows of C{ROW_SIZE} bytes (C{data: <n> xxx…}), in one statement."""
    with pg.server.connect() as conn:
        conn.execute(
            "INSERT INTO wsgi_sse_events (channel, body) SELECT 'default', "
            "convert_to('data: ' || i || ' ' || repeat('x', %s) || chr(10), 'UTF8') "
            "FROM generate_series(1, %s) AS i ORDER BY i",
            (ROW_SIZE, count),
        )
        postgres.publish(conn, "after")


def test_many_large_rows_are_read_in_bounded_reads(pg: Backend) -> None:
    """
    40 rows of 900 KiB (36 MiB, written with SQL at once) reach a reader
    in several reads of at most 16 MiB of bodies and one more body, live
    and for a replay: every event is delivered, in order, none lost, and
    max_replay counts the events of every read.
    """
    count = 40
    expected = [*(str(i) for i in range(1, count + 1)), "after"]
    with (
        server_on(pg) as a,
        GatedProxy(pg.server.port) as proxy,
        serve(app, backplane_url=proxy.url_for(pg.url), max_buffer=BUFFER) as b,
    ):
        proxy.open()
        wait_until(lambda: b.service.backplane.connected, what="connected")
        with b.stream() as live:
            b.wait_clients(1)
            a.service.broadcaster.broadcast_and_wait("start")
            (start,) = live.wait_events(1)
            # No polling: only the notification of the last row wakes the
            # reader, which reads on until nothing is left.
            b.service.backplane.block = 60
            time.sleep(1.5)
            insert_rows(pg, count)
            live.wait_events(1 + len(expected), timeout=20)
            live.read_some(0.3)
        read_live = proxy.largest_answer
        proxy.largest_answer = 0
        with serve(app, backplane_url=proxy.url_for(pg.url), max_buffer=BUFFER) as c:
            wait_until(lambda: c.service.backplane.connected, what="connected")
            # One event too many for a replay, counted across reads: reset.
            c.service.backplane.max_replay = len(expected) - 1
            with c.stream(headers={"Last-Event-ID": start.last_event_id}) as cut:
                (reset,) = cut.wait_events(1, timeout=30)
            assert reset.type == "reset"
            c.service.backplane.max_replay = len(expected)
            with c.stream(headers={"Last-Event-ID": start.last_event_id}) as replayed:
                replayed.wait_events(len(expected), timeout=30)
                replayed.read_some(0.3)
            assert c.service.hub.stats.replays_fetched == 1
            assert c.service.hub.stats.replay_resets == 1
        read_replayed = proxy.largest_answer
    print(f"\nlargest read: {read_live:,} bytes live, {read_replayed:,} replayed")
    assert [e.data.split(" ")[0] for e in live.events] == ["start", *expected]
    assert [e.data.split(" ")[0] for e in replayed.events] == expected
    assert all(len(e.data) > ROW_SIZE for e in replayed.events[:count])
    bound = (16 << 20) + (1 << 20) + 65536  # 16 MiB of bodies, one more, the rest
    assert 0 < read_live <= bound
    assert 0 < read_replayed <= bound


def test_a_body_is_read_as_its_bytes(pg: Backend) -> None:
    """A body of N bytes costs a reader about N bytes from the database, not 2N (hex)."""
    with (
        server_on(pg) as a,
        GatedProxy(pg.server.port) as proxy,
        serve(app, backplane_url=proxy.url_for(pg.url), max_buffer=BUFFER) as b,
    ):
        proxy.open()
        wait_until(lambda: b.service.backplane.connected, what="connected")
        with b.stream() as live:
            b.wait_clients(1)
            a.service.broadcaster.broadcast_and_wait("start")
            live.wait_events(1)
            before = proxy.received
            insert_rows(pg, 1)
            live.wait_events(3)
            live.read_some(0.3)
        received = proxy.received - before
    print(f"\na body of {ROW_SIZE:,} bytes: {received:,} bytes received")
    assert [e.data.split(" ")[0] for e in live.events] == ["start", "1", "after"]
    assert ROW_SIZE < received < ROW_SIZE * 1.2


def test_a_row_numbered_past_the_head_is_never_read(pg: Backend) -> None:
    """A row inserted with a position the sequencer never gave is skipped, live and replayed."""
    with server_on(pg) as a:
        with a.stream() as live:
            a.wait_clients(1)
            a.service.broadcaster.broadcast("start")
            (start,) = live.wait_events(1)
            with pg.server.connect() as conn:
                conn.execute(
                    "INSERT INTO wsgi_sse_events (pos, channel, body) VALUES (%s, %s, %s)",
                    (9_000_000_000_000_000_000, "default", b"data: forged-far\n"),
                )
                postgres.publish(conn, "good")
            live.wait_events(2)
            # A few quiet reads (block = 1 s): the reader would start over at each.
            time.sleep(2.5)
            a.service.broadcaster.broadcast("after")
            live.wait_events(3)
            live.read_some(0.3)
        assert [e.data for e in live.events] == ["start", "good", "after"]
        assert a.service.backplane.stats()["restarts"] == 0
    with server_on(pg) as b:
        with b.stream(headers={"Last-Event-ID": start.last_event_id}) as replayed:
            replayed.wait_events(2)
            replayed.read_some(0.3)
    assert [e.data for e in replayed.events] == ["good", "after"]


MAX_BIGINT = (1 << 63) - 1


def set_head(pg: Backend, sql: str, *params: object) -> None:
    """Rewrite the head row, as anyone with write access to the table could."""
    with pg.server.connect(autocommit=True) as conn:
        conn.execute(f"UPDATE wsgi_sse_events_head SET pos = {sql}", params)


def test_a_head_near_the_largest_bigint_stops_no_delivery(pg: Backend) -> None:
    """A head 7 short of the largest bigint: 7 events shared, 3 local, all answered, logged."""
    from twisted.logger import formatEvent, globalLogPublisher

    seen: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        with server_on(pg) as a, server_on(pg) as b:
            with a.stream() as ca, b.stream() as cb:
                a.wait_clients(1)
                b.wait_clients(1)
                set_head(pg, "%s", MAX_BIGINT - 7)
                reached = [
                    a.service.broadcaster.broadcast_and_wait(f"e{i}", timeout=5) for i in range(10)
                ]
                got = ca.wait_events(10)
                cb.wait_events(7)
                cb.read_some(0.3)
            stats = a.service.backplane.stats()
            other = b.service.backplane.stats()
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert reached == [1] * 10
    assert [e.data for e in got] == [f"e{i}" for i in range(10)]
    assert [e.data for e in cb.events] == [f"e{i}" for i in range(7)]
    assert got[6].last_event_id == cb.events[6].last_event_id == str(MAX_BIGINT)
    # Local-only ids after the last shared one.
    assert all(e.last_event_id.startswith(f"{MAX_BIGINT}.") for e in got[7:])
    assert stats["refused"] == 3 and stats["local_only"] == 3
    # Never taken for unreachable.
    assert stats["connected"] and other["connected"]
    assert stats["reconnects"] == other["reconnects"] == 0
    lines = [formatEvent(e) for e in seen]
    assert any("refused" in line and "largest" in line for line in lines), lines


def test_a_head_moved_back_under_its_rows_gives_no_position_twice(pg: Backend) -> None:
    """The head moved back by 10 with rows above it: nothing sent again, later events flow."""
    with server_on(pg) as a, server_on(pg) as b:
        with a.stream() as ca, b.stream() as cb:
            a.wait_clients(1)
            b.wait_clients(1)
            for i in range(3):
                a.service.broadcaster.broadcast(f"e{i}")
            ca.wait_events(3)
            cb.wait_events(3)
            set_head(pg, "pos - 10")
            # At once (before a reader looks), then after a quiet read (block = 1 s).
            a.service.broadcaster.broadcast_and_wait("at-once", timeout=5)
            time.sleep(1.5)
            b.service.broadcaster.broadcast_and_wait("from-b", timeout=5)
            a.service.broadcaster.broadcast_and_wait("from-a", timeout=5)
            ca.wait_events(6)
            cb.wait_events(6)
            ca.read_some(0.3)
            cb.read_some(0.3)
        restarts = [s.service.backplane.stats()["restarts"] for s in (a, b)]
    expected = ["e0", "e1", "e2", "at-once", "from-b", "from-a"]
    assert [e.data for e in ca.events] == [e.data for e in cb.events] == expected
    ids = [int(e.last_event_id) for e in ca.events]
    assert ids == sorted(set(ids)) and [e.last_event_id for e in cb.events] == [
        e.last_event_id for e in ca.events
    ]
    assert restarts == [0, 0]


def test_resuming_from_a_position_without_a_row_is_not_reset(pg: Backend) -> None:
    """The head at a process's start, or a gone row followed by the next: replayed, not reset."""
    with server_on(pg) as a:
        start_id = a.service.hub.last_id  # the table's head: no row holds it
        with a.stream() as client:
            a.wait_clients(1)
            for i in range(3):
                a.service.broadcaster.broadcast(f"e{i}")
            ids = [e.last_event_id for e in client.wait_events(3)]

    def resume(server: Any, last_id: str, live: str) -> list[str]:
        with server.stream(headers={"Last-Event-ID": last_id}) as resumed:
            server.wait_clients(1)
            server.service.broadcaster.broadcast(live)
            resumed.wait_for(lambda c: any(e.data == live for e in c.events))
            got = [e.type if e.type == "reset" else e.data for e in resumed.events]
        server.wait_clients(0)
        return got

    with server_on(pg) as b:
        assert resume(b, start_id, "live0") == ["e0", "e1", "e2", "live0"]
        with pg.server.connect(autocommit=True) as conn:
            conn.execute("DELETE FROM wsgi_sse_events WHERE pos = %s", (int(ids[1]),))
        # Its row gone, the next one kept: nothing it missed is gone.
        assert resume(b, ids[1], "live1") == ["e2", "live0", "live1"]
        # Truly gone (its row and the next deleted): reset.
        pg.forget_up_to(ids[0])
        assert resume(b, ids[0], "live2") == ["reset", "live2"]
        assert resume(b, start_id, "live3") == ["reset", "live3"]
        assert b.service.hub.stats.replay_resets == 2
        # The head itself, its row pruned: nothing missed.
        pg.forget_up_to(str(MAX_BIGINT))
        with pg.server.connect() as conn:
            head = conn.execute("SELECT pos FROM wsgi_sse_events_head").fetchone()[0]
        fetched = b.call(b.service.backplane.fetch_after, head, str(head))
        assert fetched.found and fetched.entries == [] and fetched.end == head


# -- Django on its own database ----------------------------------------------------


def test_django_backplane_database_is_the_projects_own(pg: Backend, tmp_path: Path) -> None:
    """BACKPLANE_DATABASE="default": broadcast_on_commit writes in the view's transaction."""
    twistd = shutil.which("twistd")
    assert twistd is not None
    django = ServerProcess(
        [twistd, "-ny", "server.py", "--pidfile="],
        HERE / "django_pg",
        tmp_path / "django.log",
        TEST_DATABASE_URL=pg.url,
    )
    plain = ServerProcess(
        [PYTHON, "-m", "wsgi_sse", "burst_app:app", "--backplane-url", pg.url],
        ROOT / "tests" / "redis",
        tmp_path / "plain.log",
    )
    with processes(django, plain):
        for server in (django, plain):
            wait_until(lambda s=server: b"connected to PostgreSQL" in s.log_path.read_bytes())
        with (
            django.stream("/sse?channel=jobs") as on_django,
            plain.stream("/sse?channel=jobs") as on_plain,
        ):
            for client in (on_django, on_plain):
                client.wait_for(lambda c: c.parser.retry is not None)
            for path in ("/rollback", "/commit"):
                status, _, _ = http_request(django.port, "POST", path)
                assert status == 200
            got = [client.wait_events(1)[0] for client in (on_django, on_plain)]
            assert [e.data for e in got] == ["committed", "committed"]
            assert got[0].last_event_id == got[1].last_event_id
            on_plain.read_some(0.3)
            assert len(on_plain.events) == 1


def test_publish_validates_before_writing(pg: Backend) -> None:
    """postgres.publish() refuses what broadcast() refuses, writing nothing."""
    with server_on(pg):
        with pg.server.connect() as conn:
            with pytest.raises(ValueError):
                postgres.publish(conn, "x", event="a\nb")
            with pytest.raises(TypeError):
                postgres.publish(conn, object())
            with pytest.raises(ValueError):
                postgres.publish(conn, "x", table="events; drop table x")
            # What every server would drop: a channel or an event too large.
            with pytest.raises(ValueError):
                postgres.publish(conn, "x", channel="c" * 1001)
            with pytest.raises(ValueError):
                postgres.publish(conn, "x" * (1 << 20))
            count = conn.execute("SELECT count(*) FROM wsgi_sse_events").fetchone()[0]
    assert count == 0


def test_an_origin_token_never_issued_answers_no_later_publish(pg: Backend) -> None:
    """
    A row naming this process as its origin with a batch token it never
    issued is delivered, but answers no publish: each later
    C{broadcast_and_wait()} waits for its own row and counts its client.
    """
    with server_on(pg) as a:
        with a.stream() as client:
            a.wait_clients(1)
            with pg.server.connect() as conn:
                conn.execute(
                    "INSERT INTO wsgi_sse_events (channel, body, origin) VALUES (%s, %s, %s)",
                    ("default", b"data: forged-origin\n", f"{a.service.hub.instance_id}:{10**15}"),
                )
                conn.execute("SELECT pg_notify('wsgi_sse_events', '')")
            assert client.wait_events(1)[0].data == "forged-origin"
            broadcaster = a.service.broadcaster
            counts = [broadcaster.broadcast_and_wait(f"after{i}") for i in range(5)]
            events = client.wait_events(6)
        assert [e.data for e in events] == ["forged-origin"] + [f"after{i}" for i in range(5)]
        assert counts == [1] * 5
        assert a.service.backplane.stats()["foreign_origins"] == 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
