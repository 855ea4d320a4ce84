"""
The PostgreSQL backplane: one table shared by every process of a site.

Events are rows of C{wsgi_sse_events} (the table name is configurable).  A
row is inserted without a position; a I{sequencer} step then numbers the
rows waiting for one, in insertion order, while holding the lock of the
one-row table C{wsgi_sse_events_head}, and commits.  The positions are the
event ids on the wire, the same in every process; they count up from the
table's creation time in microseconds, so a recreated table never repeats an
id.

Why a sequencer: a C{bigserial} id is taken when a row is inserted, but the
row becomes visible when its transaction commits, and transactions commit
in any order.  A reader reading "ids after the last one I saw" would skip a
row whose transaction committed after a row with a higher id had been read
(a long transaction publishing with L{publish} inside the application's own
work makes that common).  Numbering happens instead in short transactions
that hold one row lock, so positions become visible in the order they are
given: a reader that sees position I{n} has already been able to see every
position below it, and never skips one.  The application's transactions
only insert (no lock held on anything shared), so they never wait for each
other.

C{NOTIFY} only wakes the readers (its payload is empty: C{NOTIFY} payloads
are limited to 8000 bytes, events are not); each process then numbers what
is waiting and reads the rows after the last position it saw, in order.
Readers also poll every C{block} seconds, so a lost notification delays an
event by at most that.

psycopg (3) is blocking here, like redis-py in the Redis backplane: it is
only used from threads owned by the backplane.  psycopg's asyncio support
would need the asyncio reactor, which the WSGI server does not otherwise
need; threads keep the default reactor and the same shape as Redis.

psycopg is imported lazily: C{import wsgi_sse} works without it.
"""

# The only name formatted into SQL is the table, checked by _check_table.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from ._backplane import MAX_BODY, MAX_CHANNEL, Entry, Fetched, check_entry
from ._broadcast import prepare_shared_event
from ._shared import AppendRefusedError, Batch, ThreadedBackplane, safe_url

if TYPE_CHECKING:
    from ._backplane import BackplaneHub

__all__ = ["DEFAULT_TABLE", "PostgresBackplane", "ensure_schema", "publish"]

DEFAULT_TABLE = "wsgi_sse_events"
"""The table the events are kept in (and the name of the notification channel)."""

_TABLE = re.compile(r"[a-z_][a-z0-9_]{0,40}\Z")
_ID = re.compile(r"(?:0|[1-9][0-9]{0,18})\Z")
_MAX_POSITION = (1 << 63) - 1
_READ_BATCH = 1000
# The body bytes one read of rows may carry: a read stops before the row
# that would take it past this, but always takes at least one row (a read
# is then at most this plus one body of MAX_BODY).  The rows after are read
# by the next read.
_READ_BYTES = 16 * 1024 * 1024
_ORIGIN_DIGITS = 20
# The rows after a position, up to the head: a row numbered past it (written
# with a position the sequencer never gave) is never read, nor taken for the
# newest position.  A value longer than any wsgi-sse writes (a channel over
# MAX_CHANNEL bytes, a body over MAX_BODY, an origin longer than this
# process's prefix and a token: the first parameter) is never sent by the
# server: it reads as NULL, which _decode treats as it treats the value
# itself (a malformed row, or another process's).  octet_length() reads a
# stored value's size from its header, without decompressing or fetching it.
# Of the first rows (the LIMIT), only those whose bodies before them, as
# read, come to less than _READ_BYTES (the last parameter) are sent.
_READ_AFTER = (
    "SELECT pos, "
    f"CASE WHEN octet_length(channel) <= {MAX_CHANNEL} THEN channel END, "
    f"CASE WHEN size <= {MAX_BODY} THEN body END, "
    "CASE WHEN octet_length(origin) <= %s THEN origin END "
    "FROM (SELECT pos, channel, body, origin, octet_length(body) AS size, "
    f"sum(CASE WHEN octet_length(body) <= {MAX_BODY} THEN octet_length(body) ELSE 0 END) "
    "OVER (ORDER BY pos ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS before "
    "FROM {table} WHERE pos > %s AND pos <= (SELECT pos FROM {table}_head) "
    "ORDER BY pos LIMIT %s) AS first "
    "WHERE coalesce(before, 0) < %s ORDER BY pos"
)


def _repeatable_read() -> Any:
    import psycopg

    return psycopg.IsolationLevel.REPEATABLE_READ


def _check_table(table: str) -> str:
    if not _TABLE.match(table):
        raise ValueError("table must be 1-41 characters of [a-z0-9_], not starting with a digit")
    return table


def _schema(table: str) -> list[str]:
    return [
        f"SELECT pg_advisory_xact_lock(hashtext('wsgi-sse:{table}'))",
        f"""CREATE TABLE IF NOT EXISTS {table} (
            id bigserial PRIMARY KEY,
            pos bigint UNIQUE,
            channel text NOT NULL,
            body bytea NOT NULL,
            origin text,
            created timestamptz NOT NULL DEFAULT now()
        )""",
        f"CREATE INDEX IF NOT EXISTS {table}_waiting ON {table} (id) WHERE pos IS NULL",
        f"""CREATE TABLE IF NOT EXISTS {table}_head (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            pos bigint NOT NULL
        )""",
        # Positions start from the creation time (in µs): a table dropped and
        # created again never gives an id that an older one gave.
        f"INSERT INTO {table}_head (one, pos) VALUES "
        "(true, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint) "
        "ON CONFLICT DO NOTHING",
    ]


def ensure_schema(connection: Any, *, table: str = DEFAULT_TABLE) -> None:
    """
    Create the events table (and its head row) if they do not exist, in a
    transaction of its own.  Servers using the backplane do this when they
    start; call it before L{publish} if a program may publish first.

    @param connection: a psycopg connection.
    """
    _check_table(table)
    with connection.transaction():
        for statement in _schema(table):
            connection.execute(statement)


def publish(
    connection: Any,
    data: object,
    *,
    event: str | None = None,
    channel: str | None = None,
    retry: int | None = None,
    table: str = DEFAULT_TABLE,
) -> None:
    """
    Write an event inside the caller's current transaction: every process
    delivers it once that transaction commits, none ever does if it rolls
    back.  May be called in any thread (the connection's rules apply).

    Takes the arguments of L{broadcast<wsgi_sse.broadcast>} and validates
    them the same way, before writing anything.

    @param connection: a psycopg (3) connection or cursor, or a Django
        database connection (C{django.db.connection}).
    @raise TypeError: for values of the wrong type; nothing is written.
    @raise ValueError: for values that would break the stream, or an event
        larger than the servers accept back (1 MiB encoded).
    """
    _check_table(table)
    name, body = prepare_shared_event(data, event=event, channel=channel, retry=retry)
    statements = (
        (f"INSERT INTO {table} (channel, body) VALUES (%s, %s)", (name, body)),
        ("SELECT pg_notify(%s, '')", (table,)),
    )
    execute = getattr(connection, "execute", None)
    if execute is not None:
        # A psycopg connection or cursor.
        for sql, params in statements:
            execute(sql, params)
        return
    # A Django connection: its cursor speaks %s too.
    with connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)


def _connect(url: str, timeout: float) -> Any:
    import psycopg

    conn = psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=max(1, int(timeout)),
        # Every command, not only the connection, is bounded.
        options=f"-c statement_timeout={int(timeout * 1000)}",
    )
    return conn


def django_conninfo(alias: str = "default") -> str:
    """
    The libpq connection string of a Django project's database C{alias}
    (which must be PostgreSQL).  Call it once Django's settings are loaded.
    """
    from django.db import connections

    connection = connections[alias]
    if connection.vendor != "postgresql":
        raise ValueError(
            f"database {alias!r} is {connection.vendor}, not PostgreSQL: "
            "it cannot carry the backplane"
        )
    from psycopg.conninfo import make_conninfo

    params = connection.get_connection_params()
    keep = {k: v for k, v in params.items() if k in _LIBPQ_KEYS and v not in (None, "")}
    if "database" in params and "dbname" not in keep:
        keep["dbname"] = params["database"]
    return str(make_conninfo(**{k: str(v) for k, v in keep.items()}))


_LIBPQ_KEYS = {
    "dbname",
    "user",
    "password",
    "host",
    "port",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "application_name",
    "options",
    "service",
    "passfile",
}


class PostgresBackplane(ThreadedBackplane):
    """
    Share the broadcasts of every process of a site through a PostgreSQL
    table (see the module docstring for how ids stay in commit order): a
    L{Backplane<wsgi_sse._backplane.Backplane>} for a L{Hub<wsgi_sse.Hub>}
    (C{Hub(backplane=PostgresBackplane(url))}), started and stopped with the
    server (L{make_application<wsgi_sse.make_application>} builds it from a
    C{postgresql://} C{backplane_url}).

    While the database is unreachable, events are delivered to this
    process's clients only (I{local-only}); the reader reconnects with
    exponential backoff and catches up from the last position it saw, so
    nothing committed is lost.  Rows older than C{history_age} seconds, or
    more than C{history_size} positions behind the newest, are deleted.

    L{attach}, L{start}, L{stop}, L{publish}, L{fetch_after}: call in the
    reactor thread.  L{stats}, L{parse_id}: may be called in any thread.

    @param url: a libpq URL (C{postgresql://user@host/db}) or connection string.
    @param table: the events table (also the notification channel).
    @param history_size: rows kept (the newest ones).
    @param history_age: seconds a row is kept.
    @param timeout: seconds for connecting and for every statement.
    @param block: the longest a reader waits for a notification before
        looking for new rows anyway.
    @param max_replay: the most events one reconnecting client may be sent
        from the table; a client that missed more gets C{reset}.
    @param max_replay_bytes: the most bytes of event bodies one replay reads
        (at most one entry more); a client that missed more gets C{reset}.
    """

    kind = "PostgreSQL"

    def __init__(
        self,
        url: str,
        *,
        reactor: Any = None,
        table: str = DEFAULT_TABLE,
        history_size: int = 100_000,
        history_age: float = 3600.0,
        queue_size: int = 10_000,
        timeout: float = 5.0,
        block: float = 1.0,
        max_replay: int = 10_000,
        max_replay_bytes: int = 64 << 20,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if history_size < 1 or history_age <= 0:
            raise ValueError("history_size and history_age must be positive")
        super().__init__(
            url,
            reactor=reactor,
            queue_size=queue_size,
            timeout=timeout,
            block=block,
            max_replay=max_replay,
            max_replay_bytes=max_replay_bytes,
            backoff=backoff,
        )
        self.table = _check_table(table)
        self.history_size = history_size
        self.history_age = history_age
        # Presence and revocation messages: NOTIFY on their own channel,
        # never in the table (no id, no history, no retention).
        self.control_channel = self.table + "_control"
        self._last_pruned = 0.0
        self.django_alias: str | None = None
        # Bumped when the reader reconnects: connections made before are
        # stale (the server restarted) and are replaced before their next use.
        self._generation = 0
        self._publisher_generation = 0
        self._replay_generation = 0
        # The last position the reader has read (the numbering never gives
        # one at or below it while its row is there).
        self._read_position = 0

    @classmethod
    def from_django(cls, alias: str = "default", **kwargs: Any) -> PostgresBackplane:
        """A backplane on the Django project's own database C{alias}."""
        backplane = cls(django_conninfo(alias), **kwargs)
        backplane.django_alias = alias
        return backplane

    def parse_id(self, event_id: str) -> int | None:
        """The position of a wire id of this backplane, or L{None}.  Any thread."""
        if not _ID.match(event_id):
            return None
        position = int(event_id)
        return position if position <= _MAX_POSITION else None

    def _initial_id(self) -> tuple[int, str]:
        return 0, "0"

    def attach(self, hub: BackplaneHub) -> None:
        """Deliver to C{hub}.  Call in the reactor thread."""
        super().attach(hub)

    def stats(self) -> dict[str, Any]:
        """
        The counters of L{ThreadedBackplane.stats<wsgi_sse._shared.ThreadedBackplane.stats>}
        and C{table}.  May be called in any thread.
        """
        out = super().stats()
        out["table"] = self.table
        return out

    _listen_conn: Any
    _connections = ("_listen_conn", *ThreadedBackplane._connections)

    # -- presence and revocation (control threads) ----------------------------

    max_control_body = 7900
    """C{NOTIFY} payloads are shorter than 8000 bytes."""

    def _send_control(self, body: bytes) -> None:
        if self._control_conn is None:
            self._control_conn = _connect(self.url, self.timeout)
        try:
            self._control_conn.execute(
                "SELECT pg_notify(%s, %s)", (self.control_channel, body.decode("ascii"))
            )
        except Exception:
            self._drop_connection("_control_conn")
            raise

    def _read_control_until_stopped(self) -> None:
        stopping = self._stopping
        while not stopping.is_set():
            try:
                conn = self._control_reader_conn = _connect(self.url, self.timeout)
                conn.execute(f"LISTEN {self.control_channel}")
                self._control_listening()
                while not stopping.is_set():
                    for notify in conn.notifies(timeout=self.block):
                        self._control_received(notify.payload.encode("utf-8"))
                        if stopping.is_set():
                            break
            except Exception:  # noqa: BLE001 - the event reader logs outages; retry
                self._drop_connection("_control_reader_conn")
                stopping.wait(self.backoff[1] if not self.connected else self.backoff[0])

    # -- numbering ---------------------------------------------------------------

    def _sequence(self, conn: Any) -> tuple[int, int | None]:
        """
        Number the rows waiting for a position, in insertion order, in one
        short transaction holding the head row's lock.  Any backplane thread.

        Positions already held by rows (the head moved back under them:
        forged, or restored apart from its rows) are never given again:
        numbering goes on after the last row this process read, if it is
        still there, and past the highest row if the next positions are
        taken.  When the positions left below the largest C{bigint} are
        too few for the rows waiting, none is numbered.

        @return: the rows numbered, and the head when positions ran out
            (else L{None}).
        """
        table = self.table
        if not conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table} WHERE pos IS NULL)").fetchone()[
            0
        ]:
            return 0, None
        with conn.transaction():
            (head,) = conn.execute(f"SELECT pos FROM {table}_head FOR UPDATE").fetchone()
            # A new statement: it sees every row committed before the lock
            # was ours.  With the waiting rows, the first row past the head
            # (there is none, unless the head was moved back under rows).
            ids, above = conn.execute(
                f"SELECT array(SELECT id FROM {table} WHERE pos IS NULL ORDER BY id "
                f"LIMIT 10000), (SELECT min(pos) FROM {table} WHERE pos > %s)",
                (head,),
            ).fetchone()
            if not ids:
                return 0, None
            count = len(ids)
            start = head
            read = self._read_position
            if read > head:
                there, above_read = conn.execute(
                    f"SELECT EXISTS (SELECT 1 FROM {table} WHERE pos = %s), "
                    f"(SELECT min(pos) FROM {table} WHERE pos > %s)",
                    (read, read),
                ).fetchone()
                if there:
                    start, above = read, above_read
            if above is not None and above - start <= count:
                (start,) = conn.execute(f"SELECT max(pos) FROM {table}").fetchone()
            if start > _MAX_POSITION - count:
                return 0, start
            conn.execute(
                f"UPDATE {table} SET pos = %s + v.n FROM unnest(%s::bigint[]) "
                f"WITH ORDINALITY AS v(id, n) WHERE {table}.id = v.id",
                (start, ids),
            )
            conn.execute(f"UPDATE {table}_head SET pos = %s", (start + count,))
            conn.execute("SELECT pg_notify(%s, '')", (table,))
            return count, None

    # -- publishing (publisher thread) ----------------------------------------

    def _append(self, batch: Batch) -> int:
        conn = self._publisher_conn
        if conn is not None and self._publisher_generation != self._generation:
            self._drop_connection("_publisher_conn")
            conn = None
        if conn is None:
            self._publisher_generation = self._generation
            conn = self._publisher_conn = _connect(self.url, self.timeout)
        channels: list[str] = []
        bodies: list[bytes] = []
        origins: list[str] = []
        prefix = self._origin_prefix.decode("ascii")
        for token, channel, run in batch:
            origin = f"{prefix}{token}"
            for body in run:
                channels.append(channel)
                bodies.append(body)
                origins.append(origin)
        ids = sorted(
            row[0]
            for row in conn.execute(
                f"INSERT INTO {self.table} (channel, body, origin) "
                "SELECT * FROM unnest(%s::text[], %s::bytea[], %s::text[]) RETURNING id",
                (channels, bodies, origins),
            )
        )
        full: int | None = None
        with contextlib.suppress(Exception):
            # Numbered here at once; if this fails, a reader numbers them.
            numbered = 10000
            while numbered == 10000:
                numbered, full = self._sequence(conn)
        if full is None:
            return len(bodies)
        return self._refuse_unnumbered(conn, batch, ids, full)

    def _refuse_unnumbered(self, conn: Any, batch: Batch, ids: list[int], head: int) -> int:
        """
        No position left for the rows of C{batch} (their C{ids}, in order):
        delete those still waiting and refuse their runs.  Publisher thread.
        """
        gone = {
            row[0]
            for row in conn.execute(
                f"DELETE FROM {self.table} WHERE id = ANY(%s) AND pos IS NULL RETURNING id",
                (ids,),
            )
        }
        refused: Batch = []
        appended = 0
        n = 0
        for token, channel, run in batch:
            kept = [body for body, i in zip(run, ids[n : n + len(run)], strict=True) if i in gone]
            n += len(run)
            if kept:
                refused.append((token, channel, kept))
            appended += len(run) - len(kept)
        if not refused:
            return appended
        raise AppendRefusedError(
            f"no position left in table {self.table}: its head row "
            f"({self.table}_head) is at {head}, too close to the largest bigint "
            f"({_MAX_POSITION})",
            refused,
            appended,
        )

    # -- reading (reader thread) ---------------------------------------------

    def _read_until_stopped(self) -> None:
        delay = first_delay = self.backoff[0]
        last: int | None = None
        ever_connected = False
        stopping = self._stopping
        table = self.table
        while not stopping.is_set():
            try:
                if self._reader_conn is None:
                    conn = self._reader_conn = _connect(self.url, self.timeout)
                    ensure_schema(conn, table=table)
                    listen = self._listen_conn = _connect(self.url, self.timeout)
                    listen.execute(f"LISTEN {table}")
                conn, listen = self._reader_conn, self._listen_conn
                (head,) = conn.execute(f"SELECT pos FROM {table}_head").fetchone()
                if last is None:
                    last = self._read_position = head
                    self.reactor.callFromThread(self.hub.start_at, head, str(head))
                elif head < last:
                    last = self._moved_back(conn, head, last)
                if not self.connected:
                    if ever_connected:
                        self._count("reconnects")
                        self._generation += 1
                    self.connected = True
                    self._first_attempt_made()
                    self._down_logged = False
                    if ever_connected:
                        self._reconnected()
                    delay = first_delay
                    self.reactor.callFromThread(
                        self.log.info,
                        "{what} PostgreSQL at {url}, table {table}",
                        what="reconnected to" if ever_connected else "connected to",
                        url=safe_url(self.url),
                        table=table,
                    )
                    ever_connected = True
                self._sequence(conn)
                while True:
                    rows, more = self._read_after(conn, last, _READ_BATCH)
                    if rows:
                        last = self._read_position = rows[-1][0]
                        self._hand_over(rows)
                    if not more:
                        break
                self._prune(conn)
                # Wait for a notification (or poll after block seconds).
                for _ in listen.notifies(timeout=self.block, stop_after=1):
                    pass
            except Exception as e:  # noqa: BLE001 - any trouble: back off, retry
                if stopping.is_set():
                    return
                self._count("errors")
                self._went_down("read", e)
                self._first_attempt_made()
                self._drop_connection("_reader_conn")
                self._drop_connection("_listen_conn")
                stopping.wait(delay * (0.5 + secrets.randbelow(1000) / 1000))
                delay = min(delay * 2, self.backoff[1])

    def _moved_back(self, conn: Any, head: int, last: int) -> int:
        """
        The head is behind C{last}, the last position read: where to read on
        from.  Reader thread.

        If the row at C{last} is still there, the head was moved back under
        rows already read (forged, or restored apart from its rows): the
        head is put back to C{last}, and reading goes on, nothing read
        twice.  Otherwise the table was recreated or restored from an older
        backup: reading starts over from its first row.
        """
        table = self.table
        moved = conn.execute(
            f"UPDATE {table}_head SET pos = %s WHERE pos < %s "
            f"AND EXISTS (SELECT 1 FROM {table} WHERE pos = %s)",
            (last, last, last),
        ).rowcount
        if moved:
            self.reactor.callFromThread(
                self.log.warn,
                "the head row of {table} was behind rows already read (at {head}, "
                "not {last}): moved to {last}, numbering goes on after them",
                table=table,
                head=head,
                last=last,
            )
            return last
        (now,) = conn.execute(f"SELECT pos FROM {table}_head").fetchone()
        if now >= last:
            return last  # put back by another process meanwhile
        self._count("restarts")
        first = conn.execute(f"SELECT min(pos) FROM {table}").fetchone()[0]
        start = int(first - 1 if first is not None else now)
        self._read_position = start
        self.reactor.callFromThread(self._restart, start, str(start))
        return start

    def _read_after(
        self, conn: Any, position: int, limit: int, size: int = _READ_BYTES
    ) -> tuple[list[tuple[Any, ...]], bool]:
        """
        Read the rows after C{position}: at most C{limit} of them, and no
        more body bytes than C{size} (at most L{_READ_BYTES}) allows: the
        rows whose bodies before them come to less than C{size}.  Return
        them, and whether more may follow (the read was cut by either
        bound).

        The rows come in binary: a body is sent as its bytes (not as hex,
        twice as long, parsed here).
        """
        rows: list[tuple[Any, ...]] = conn.execute(
            _READ_AFTER.format(table=self.table),
            (self._max_origin(), position, limit, size),
            binary=True,
        ).fetchall()
        # The rows sent carry fewer body bytes than the bound unless the
        # next row was left out for it (a body over MAX_BODY reads as NULL
        # and counts for nothing, there and here).
        sent = sum(len(body) for _, _, body, _ in rows if body is not None)
        return rows, len(rows) >= limit or sent >= size

    def _max_origin(self) -> int:
        """The longest origin this process can take for its own (in bytes)."""
        return len(self._origin_prefix) + _ORIGIN_DIGITS

    def _decode(self, rows: list[tuple[Any, ...]]) -> tuple[list[tuple[list[Entry], int]], int]:
        """Check rows read back: (entries with their origin token, malformed count)."""
        prefix = self._origin_prefix.decode("ascii")
        out = []
        malformed = 0
        for pos, channel, body, origin in rows:
            if isinstance(body, memoryview):
                body = bytes(body)
            checked = check_entry(channel, body) if isinstance(channel, str) else None
            if checked is None or not isinstance(pos, int) or pos <= 0:
                malformed += 1
                continue
            token = 0
            if isinstance(origin, str) and origin.startswith(prefix):
                digits = origin[len(prefix) :]
                if digits.isdigit() and digits.isascii() and len(digits) <= _ORIGIN_DIGITS:
                    token = int(digits)
            out.append(([Entry(pos, str(pos), checked[0], checked[1])], token))
        return out, malformed

    def _hand_over(self, rows: list[tuple[Any, ...]]) -> None:
        batch, malformed = self._decode(rows)
        if malformed:
            self._count("malformed", malformed)
        self._count("delivered", len(batch))
        if batch:
            self.reactor.callFromThread(self._deliver_batch, batch)

    def _prune(self, conn: Any) -> None:
        now = time.monotonic()
        if now - self._last_pruned < self.block * 10:
            return
        self._last_pruned = now
        conn.execute(
            f"DELETE FROM {self.table} WHERE pos IS NOT NULL AND (created < now() - "
            f"make_interval(secs => %s) OR pos <= (SELECT pos FROM {self.table}_head) - %s)",
            (self.history_age, self.history_size),
        )

    # -- replay (replay thread) --------------------------------------------------

    def _fetch_many(self, requests: list[tuple[str, int]]) -> list[Fetched]:
        with self._lock:
            conn = self._replay_conn
            if conn is not None and self._replay_generation != self._generation:
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
            if conn is None:
                self._replay_generation = self._generation
                conn = self._replay_conn = _connect(self.url, self.timeout)
                # The lookup and every read of a range see one snapshot: rows
                # pruned meanwhile are still read, never skipped between reads.
                conn.isolation_level = _repeatable_read()
                conn.read_only = True
        try:
            with conn.transaction():
                return self._fetch_in_snapshot(conn, requests)
        except Exception:
            # A broken connection (the database restarted): a new one next time.
            with self._lock:
                if self._replay_conn is conn:
                    self._replay_conn = None
            with contextlib.suppress(Exception):
                conn.close()
            raise

    def _fetch_in_snapshot(self, conn: Any, requests: list[tuple[str, int]]) -> list[Fetched]:
        # A client's own row still in the table proves that nothing after
        # it was pruned, and so does the row after it (positions are given
        # one after the other: the head at a process's start, handed out
        # before any row held it, has the next one), and so does the head
        # itself (nothing after it yet).  One lookup for every id; an id
        # that is not there costs only that, never a range read.  No id
        # past the head was ever handed out.
        positions = [position for _, position in requests]
        candidates = positions + [p + 1 for p in positions if p < _MAX_POSITION]
        head, held = conn.execute(
            f"SELECT (SELECT pos FROM {self.table}_head), "
            f"array(SELECT pos FROM {self.table} WHERE pos = ANY(%s))",
            (candidates,),
        ).fetchone()
        found = set(held)
        known = [
            (head is None or position <= head)
            and (position in found or position + 1 in found or position == head)
            for position in positions
        ]
        return self._answer_known(known, lambda n: self._fetch_range(conn, *requests[n]))

    def _fetch_range(self, conn: Any, event_id: str, position: int) -> Fetched:
        # Up to max_replay + 1 rows (one more says the replay is cut), in as
        # many reads as their size takes; bodies past max_replay_bytes (the
        # last read stops at the row that passes them) cut it too.
        wanted = self.max_replay + 1
        budget = self.max_replay_bytes
        rows: list[tuple[Any, ...]] = []
        after = position
        size = 0
        while True:
            page, more = self._read_after(
                conn, after, wanted - len(rows), min(_READ_BYTES, budget - size + 1)
            )
            rows += page
            size += sum(len(body) for _, _, body, _ in page if body is not None)
            if not more or len(rows) >= wanted or size > budget:
                break
            after = page[-1][0]
        batch, malformed = self._decode(rows)
        if malformed:
            self._count("malformed", malformed)
        out = [entries[0] for entries, _ in batch]
        truncated = len(rows) > self.max_replay or size > budget
        end, end_id = (out[-1].position, out[-1].id) if out else (position, event_id)
        return Fetched(True, out[: self.max_replay], end, end_id, truncated)
