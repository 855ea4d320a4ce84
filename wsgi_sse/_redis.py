"""
The Redis backplane: one Redis Stream shared by every process of a site.

Every broadcast is appended (C{XADD}) to one stream, C{wsgi-sse:<namespace>:
events}; every process reads that stream (C{XREAD BLOCK}) and hands what it
reads to its L{Hub<wsgi_sse.Hub>}.  So all processes see the same events, in
the same order, with the same ids, and a browser may reconnect to any of
them with its C{Last-Event-ID}.

One stream entry carries a run of events of one channel published together
(fields C{c}: the channel, C{b}: the bodies joined by a blank line, C{n}:
their number when more than one, C{o}: the publishing process): the first
event's id is the entry's id (C{"1700000000000-0"}), the next ones add their
index (C{"1700000000000-0_1"}).

Entries are input from outside the process (any client of that Redis can
write to the stream): every entry is checked by L{_decode}, the same way on
every path (live reads and replay fetches); malformed events are dropped
and counted, never sent.

redis-py is blocking: it is only ever used from threads owned by the
backplane (one reader, one publisher, one for replays), never from
the reactor thread or a WSGI thread, and every socket has a timeout.

redis-py is imported lazily: C{import wsgi_sse} works without it.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import secrets
from typing import TYPE_CHECKING, Any, Sequence

from ._backplane import (
    MAX_BODY,
    Entry,
    Fetched,
    check_entry,
    join_bodies,
    split_bodies,
)
from ._broadcast import prepare_shared_event, validate_channel
from ._checks import BACKPLANE_CLIENTS
from ._hub import CLOSE_BODY
from ._names import MAX_CHANNEL
from ._shared import AppendRefusedError, Batch, ThreadedBackplane, safe_url

if TYPE_CHECKING:
    pass

__all__ = [
    "BACKPLANE_URL_ENV",
    "REDIS_URL_ENV",
    "RedisBackplane",
    "RedisPublisher",
    "resolve_redis_url",
    "stream_key",
]

REDIS_URL_ENV = "WSGI_SSE_REDIS_URL"
"""The older environment variable that turns the Redis backplane on."""
BACKPLANE_URL_ENV = "WSGI_SSE_BACKPLANE_URL"
"""The environment variable that turns a backplane on; read before L{REDIS_URL_ENV}."""

_ID = re.compile(r"(\d{1,20})-(\d{1,20})(?:_(\d{1,4}))?\Z")
_INDEX_BITS = 16
MAX_PER_ENTRY = 1000
"""The most events one stream entry may carry."""
_MAX_U64 = (1 << 64) - 1
# The entries one read of a replay asks for.  A replay stops at the entry
# whose body takes it past max_replay_bytes (the script ends its answer
# there; where scripts are refused, at most this many entries are read past).
_REPLAY_PAGE = 100
_FIELD_CHANNEL = b"c"
_FIELD_BODY = b"b"
_FIELD_ORIGIN = b"o"
_FIELD_COUNT = b"n"


def stream_key(namespace: str = "default") -> str:
    """The Redis key of the stream shared by the processes of C{namespace}."""
    return f"wsgi-sse:{namespace}:events"


def resolve_redis_url(redis_url: str | None) -> str | None:
    """
    The Redis URL to use: C{redis_url}, else the environment as the server
    reads it (C{$WSGI_SSE_BACKPLANE_URL}, else C{$WSGI_SSE_REDIS_URL}); an
    empty string (given or in the environment) means none.  The URL may
    name another backplane (C{postgresql://}): L{RedisPublisher} refuses it.
    """
    if redis_url is not None:
        return redis_url or None
    from ._backplane import resolve_backplane_url

    return resolve_backplane_url()


def _position(ms: int, n: int, index: int = 0) -> int:
    return (((ms << 64) | n) << _INDEX_BITS) | index


def _parse(event_id: str) -> tuple[int, int, int] | None:
    """Split a wire id of this backplane into (ms, n, index), or None if malformed."""
    match = _ID.match(event_id)
    if match is None:
        return None
    ms, n = int(match.group(1)), int(match.group(2))
    index = int(match.group(3) or 0)
    if ms > _MAX_U64 or n > _MAX_U64 or index >= MAX_PER_ENTRY:
        return None
    if match.group(3) is not None and index == 0:
        return None
    return ms, n, index


def _entry_key(raw_id: bytes) -> tuple[int, int]:
    ms, _, n = raw_id.partition(b"-")
    return int(ms), int(n or 0)


def _after_entry(ms: int, n: int) -> tuple[int, str]:
    """
    The position after every event of the entry C{ms-n}, and an id that
    parses back to it (a client given it as its last id misses nothing of
    that entry's events, and nothing after).
    """
    last = MAX_PER_ENTRY - 1
    return _position(ms, n, last), f"{ms}-{n}_{last}"


def _previous(ms: int, n: int) -> tuple[int, int]:
    """The stream id just before C{ms-n}."""
    if n:
        return ms, n - 1
    if ms:
        return ms - 1, _MAX_U64
    return 0, 0


def _decode(
    raw_id: bytes, fields: dict[bytes, bytes], origin_prefix: bytes
) -> tuple[list[Entry], int, int]:
    """
    Check one stream entry: (its events, the publishing token if this
    process appended it else 0, 1 if the entry is malformed else 0).  An
    entry with any malformed part is dropped whole.  Its id is not compared
    with the clock: Redis dates every entry after the newest one, so once
    an entry dated ahead is in the stream, every later one is too.
    """
    try:
        entry_id = raw_id.decode("ascii")
    except UnicodeDecodeError:
        return [], 0, 1
    parsed = _parse(entry_id)
    channel = fields.get(_FIELD_CHANNEL)
    joined = fields.get(_FIELD_BODY)
    if (
        parsed is None
        or parsed[2]
        or not isinstance(channel, bytes)
        or not isinstance(joined, bytes)
    ):
        return [], 0, 1
    count = fields.get(_FIELD_COUNT)
    if count is None:
        # One event: a blank line inside it is an attempt to end it early.
        bodies = [joined]
    elif isinstance(count, bytes) and count.isdigit() and len(count) <= 4:
        bodies = split_bodies(joined)
        if len(bodies) != int(count) or len(bodies) > MAX_PER_ENTRY:
            return [], 0, 1
    else:
        return [], 0, 1
    base = _position(parsed[0], parsed[1])
    entries = []
    for index, body in enumerate(bodies):
        checked = check_entry(channel, body)
        if checked is None:
            # One writer wrote the whole entry: a bad part makes it all suspect.
            return [], 0, 1
        event_id = entry_id if index == 0 else f"{entry_id}_{index}"
        entries.append(Entry(base | index, event_id, checked[0], checked[1]))
    token = 0
    origin = fields.get(_FIELD_ORIGIN)
    if isinstance(origin, bytes) and origin.startswith(origin_prefix):
        digits = origin[len(origin_prefix) :]
        if digits.isdigit() and len(digits) <= 20:
            token = int(digits)
    return entries, token, 0


class _Script:
    """
    A Lua script, run by its SHA1 (C{EVALSHA}): its text is sent only when
    Redis does not hold it yet (after a restart, a failover or a C{SCRIPT
    FLUSH}), not with every call.
    """

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()

    def __call__(self, conn: Any, key: str, *args: Any) -> Any:
        """Run it on C{conn} with one key; Redis's error replies raise."""
        import redis

        try:
            return conn.evalsha(self.sha, 1, key, *args)
        except redis.exceptions.NoScriptError:
            return conn.eval(self.text, 1, key, *args)

    def each(self, conn: Any, key: str, args: Sequence[Any]) -> list[Any]:
        """
        Run it once for each of C{args} (one argument each), in one
        pipeline, again with its text if Redis did not hold it: the answers,
        Redis's error replies among them.
        """
        import redis

        for by_sha in (True, False):
            pipe = conn.pipeline(transaction=False)
            for arg in args:
                if by_sha:
                    pipe.evalsha(self.sha, 1, key, arg)
                else:
                    pipe.eval(self.text, 1, key, arg)
            answers: list[Any] = pipe.execute(raise_on_error=False)
            if not any(isinstance(a, redis.exceptions.NoScriptError) for a in answers):
                break
        return answers


# XINFO STREAM without the stream's first and last entries (only the first
# one's id): its answer stays a few dozen bytes however large an entry is.
# XINFO STREAM itself sends both entries whole, and it is asked every quiet
# read.  Any error of XINFO (no such key, another type) answers nil.
_STREAM_INFO = _Script(
    """
local ok, info = pcall(redis.call, 'XINFO', 'STREAM', KEYS[1])
if not ok then return false end
local out = {}
for i = 1, #info, 2 do
  local name, value = info[i], info[i + 1]
  if name == 'first-entry' then
    if value then value = value[1] end
  end
  if name ~= 'last-entry' then
    out[#out + 1] = name
    out[#out + 1] = value
  end
end
return out
"""
)


# Whether the entry ARGV[1] is in the stream (1 or 0), without its fields.
# Any error of XRANGE (the key holding another type) answers its text.
_ENTRY_EXISTS = _Script(
    """
local found = redis.pcall('XRANGE', KEYS[1], ARGV[1], ARGV[1], 'COUNT', 1)
if found.err then return found.err end
return #found
"""
)

# XRANGE KEYS[1] ARGV[1] + COUNT ARGV[2], leaving out what a replay would
# drop: an entry whose channel is longer than ARGV[3] bytes, whose body or
# any of its run's bodies (split at blank lines, one newline kept per body)
# is longer than ARGV[4] bytes, or whose run has more than ARGV[5] bodies
# or a count of more than 4 characters -- every one an entry _decode drops
# -- answers its id and nil instead of its fields.  The others are answered
# as XRANGE gives them, unless they hold another field, a field twice or an
# origin longer than ARGV[6] bytes: then only their channel, body and count
# (the values _decode reads).  The answer ends with the entry whose body
# takes the bodies answered past ARGV[7] bytes.  Any error of XRANGE answers
# its text.
_REPLAY_RANGE = _Script(
    """
local entries = redis.pcall('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
if entries.err then return entries.err end
local max_channel, max_body = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_events, max_origin = tonumber(ARGV[5]), tonumber(ARGV[6])
local max_size, size, last = tonumber(ARGV[7]), 0, #entries
local blank_line = string.char(10, 10)
local find = string.find
local function run_fits(joined, count)
  local events = tonumber(count)
  if #count > 4 or (events and #joined > events * (max_body + 1)) then
    return false
  end
  local start, parts = 1, 0
  while true do
    parts = parts + 1
    if parts > max_events then return false end
    local at = find(joined, blank_line, start, true)
    if not at then return #joined - start + 1 <= max_body end
    if at - start + 1 > max_body then return false end
    start = at + 2
  end
end
for i = 1, #entries do
  local entry = entries[i]
  local fields = entry[2]
  local channel, joined, count, origin
  local rebuild = false
  for j = 1, #fields, 2 do
    local name, value = fields[j], fields[j + 1]
    if name == 'c' then
      rebuild = rebuild or channel ~= nil
      channel = value
    elseif name == 'b' then
      rebuild = rebuild or joined ~= nil
      joined = value
    elseif name == 'n' then
      rebuild = rebuild or count ~= nil
      count = value
    elseif name == 'o' then
      rebuild = rebuild or origin ~= nil or #value > max_origin
      origin = value
    else
      rebuild = true
    end
  end
  local fits = channel ~= nil and joined ~= nil and #channel <= max_channel
  if fits and count == nil then
    fits = #joined <= max_body
  elseif fits then
    fits = run_fits(joined, count)
  end
  if not fits then
    entry[2] = false
  elseif rebuild and count == nil then
    entry[2] = {'c', channel, 'b', joined}
  elseif rebuild then
    entry[2] = {'c', channel, 'b', joined, 'n', count}
  end
  if fits then
    size = size + #joined
    if size > max_size then
      last = i
      break
    end
  end
end
for i = #entries, last + 1, -1 do
  entries[i] = nil
end
return entries
"""
)


def _id_after(raw_id: bytes) -> str | None:
    """The first entry id after C{raw_id} (C{ms-seq}), or None if there is none."""
    ms, _, seq = raw_id.partition(b"-")
    try:
        ms_n, seq_n = int(ms), int(seq)
    except ValueError:
        return None
    if seq_n < _MAX_U64:
        return f"{ms_n}-{seq_n + 1}"
    return f"{ms_n + 1}-0" if ms_n < _MAX_U64 else None


def _script_error(answer: Any) -> Any:
    """The error a script answered as text (an error of the command it ran), or None."""
    if not isinstance(answer, bytes):
        return None
    import redis

    return redis.ResponseError(answer.decode("utf-8", "replace"))


def _field(info: dict[Any, Any], name: str) -> Any:
    """A field of an XINFO STREAM answer (redis-py gives str or bytes keys)."""
    return info.get(name, info.get(name.encode("ascii")))


def _refuses_scripts(error: BaseException) -> bool:
    """
    Whether Redis's error reply refuses scripts themselves (an ACL without
    them: C{NOPERM}; C{EVAL} renamed away: an unknown command), rather
    than one call (C{BUSY} while another script runs, C{LOADING}), which
    must not turn them off.
    """
    import redis

    return isinstance(error, redis.exceptions.NoPermissionError) or (
        "unknown command" in str(error).lower()
    )


def _refusal(error: BaseException) -> str:
    """Redis's error reply as text (redis-py drops some codes, C{OOM}: its class names them)."""
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def _connect(url: str, timeout: float, read_timeout: float | None = None) -> Any:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        socket_timeout=read_timeout if read_timeout is not None else timeout,
        socket_connect_timeout=timeout,
        decode_responses=False,
        # Never resend by itself: a pipeline of XADDs resent after a broken
        # connection would append events twice.  The backplane decides.
        retry=Retry(NoBackoff(), 0),
        retry_on_timeout=False,
    )


class RedisBackplane(ThreadedBackplane):
    """
    Share the broadcasts of every process of a site through one Redis
    Stream: a L{Backplane<wsgi_sse._backplane.Backplane>} for a
    L{Hub<wsgi_sse.Hub>} (C{Hub(backplane=RedisBackplane(url))}), started
    and stopped with the server (L{make_application<wsgi_sse.make_application>}
    builds it from C{backplane_url} or C{redis_url}).

    L{publish} (reactor thread) queues a run of events for a publisher
    thread, which appends it to the stream as one entry, many entries per
    round trip; a reader thread reads the stream and delivers every event --
    this process's own too -- to the hub.  While Redis is unreachable,
    events are delivered to this process's clients only (I{local-only}),
    the reader reconnects with exponential backoff, and cross-process
    delivery resumes when it succeeds.  Events Redis refuses (an error
    reply to their C{XADD}: out of memory under C{maxmemory}, the key
    holding another type, a stream at its maximal id) are delivered
    locally only too, and logged with Redis's answer, never retried; the
    others of the same round trip are shared as usual.  A stream that
    moves backwards (deleted, or recreated) is noticed within C{block}
    seconds: the reader starts over from its first entry (after the
    stream's new last id if C{XSETID} moved it back) and the hub drops its
    history.

    L{attach}, L{start}, L{stop}, L{publish}, L{fetch_after}: call in the
    reactor thread.  L{stats}, L{parse_id}: may be called in any thread.

    @param url: a redis-py URL (C{redis://host:6379/0}, C{rediss://...},
        C{unix:///run/redis.sock}).
    @param namespace: sites sharing one Redis use different namespaces.
    @param maxlen: about how many entries the stream keeps (C{MAXLEN ~}).
    @param queue_size: entries waiting for the publisher thread; past it,
        events are delivered locally only.
    @param timeout: seconds for connecting and for every command.
    @param block: seconds one C{XREAD BLOCK} waits.
    @param max_replay: the most events one reconnecting client may be sent
        from Redis; a client that missed more gets C{reset}.
    @param max_replay_bytes: the most bytes of event bodies one replay reads
        (at most one entry more); a client that missed more gets C{reset}.
    @param backoff: the first and the longest delay between reconnections.
    """

    kind = "Redis"

    def __init__(
        self,
        url: str,
        *,
        reactor: Any = None,
        namespace: str = "default",
        maxlen: int = 100_000,
        queue_size: int = 10_000,
        timeout: float = 2.0,
        block: float = 1.0,
        max_replay: int = 10_000,
        max_replay_bytes: int = 64 << 20,
        backoff: tuple[float, float] = (0.1, 5.0),
    ) -> None:
        if maxlen < 1:
            raise ValueError("maxlen must be positive")
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
        self.namespace = namespace
        self.key = stream_key(namespace)
        self.maxlen = maxlen
        self.max_per_publish = MAX_PER_ENTRY
        # Presence and revocation messages: Redis Pub/Sub on their own
        # channel, never in the stream (no id, no history, no retention).
        self.control_channel = self.key + ":control"
        # Cleared when Redis refuses a script (see _scripts_refused).
        self._by_script = True

    def parse_id(self, event_id: str) -> int | None:
        """The position of a wire id of this backplane, or L{None}.  Any thread."""
        parsed = _parse(event_id)
        return None if parsed is None else _position(*parsed)

    def _initial_id(self) -> tuple[int, str]:
        return 0, "0-0"

    def stats(self) -> dict[str, Any]:
        """
        The counters of L{ThreadedBackplane.stats<wsgi_sse._shared.ThreadedBackplane.stats>},
        C{replays_from_redis} (the same as C{replays_fetched}) and C{stream}
        (the key).  May be called in any thread.
        """
        out = super().stats()
        out["replays_from_redis"] = out.get("replays_fetched", 0)
        out["stream"] = self.key
        return out

    def _close_connection(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.connection_pool.disconnect()
        with contextlib.suppress(Exception):
            conn.close()

    # -- presence and revocation (control threads) ----------------------------

    def _send_control(self, body: bytes) -> None:
        if self._control_conn is None:
            self._control_conn = _connect(self.url, self.timeout)
        try:
            self._control_conn.publish(self.control_channel, body)
        except Exception:
            self._drop_connection("_control_conn")
            raise

    def _read_control_until_stopped(self) -> None:
        stopping = self._stopping
        while not stopping.is_set():
            try:
                conn = self._control_reader_conn = _connect(
                    self.url, self.timeout, read_timeout=self.block + self.timeout
                )
                pubsub = conn.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(self.control_channel)
                self._control_listening()
                while not stopping.is_set():
                    message = pubsub.get_message(timeout=self.block)
                    if message is not None and message.get("type") == "message":
                        self._control_received(message.get("data"))
            except Exception:  # noqa: BLE001 - the event reader logs outages; retry
                self._drop_connection("_control_reader_conn")
                stopping.wait(self.backoff[1] if not self.connected else self.backoff[0])

    # -- publishing (publisher thread) ----------------------------------------

    def _append(self, batch: Batch) -> int:
        conn = self._publisher_conn
        if conn is None:
            conn = self._publisher_conn = _connect(self.url, self.timeout)
        pipe = conn.pipeline(transaction=False)
        prefix = self._origin_prefix
        key, maxlen = self.key, self.maxlen
        events = 0
        for token, channel, bodies in batch:
            args: list[Any] = [
                "XADD",
                key,
                "MAXLEN",
                "~",
                maxlen,
                "*",
                _FIELD_CHANNEL,
                channel.encode("utf-8"),
                _FIELD_BODY,
                join_bodies(bodies),
                _FIELD_ORIGIN,
                prefix + b"%d" % (token,),
            ]
            if len(bodies) > 1:
                args += [_FIELD_COUNT, b"%d" % (len(bodies),)]
            pipe.execute_command(*args)
        # Each XADD stands alone: the server may refuse some (an error
        # reply) and take the others.  A broken connection still raises.
        answers = pipe.execute(raise_on_error=False)
        refused: Batch = []
        error = ""
        for run, answer in zip(batch, answers, strict=True):
            if isinstance(answer, Exception):
                refused.append(run)
                error = error or _refusal(answer)
            else:
                events += len(run[2])
        if refused:
            raise AppendRefusedError(error, refused, events)
        return events

    # -- reading (reader thread) ---------------------------------------------

    def _read_until_stopped(self) -> None:
        import redis

        delay = first_delay = self.backoff[0]
        last: bytes | None = None
        ever_connected = False
        # The server answers XREAD with an error (the key holds another
        # type, no permission): connected, but unable to read the stream.
        read_refused = False
        stopping = self._stopping
        while not stopping.is_set():
            try:
                conn = self._reader_conn
                if conn is None:
                    conn = self._reader_conn = _connect(
                        self.url, self.timeout, self.timeout + self.block
                    )
                if last is None:
                    last = self._head(conn)
                    ms, n = _entry_key(last)
                    self.reactor.callFromThread(self.hub.start_at, *_after_entry(ms, n))
                if not self.connected and not read_refused:
                    conn.ping()
                    if ever_connected:
                        self._count("reconnects")
                        # The server may be another one now: try the script again.
                        self._by_script = True
                    self.connected = True
                    self._first_attempt_made()
                    self._down_logged = False
                    if ever_connected:
                        self._reconnected()
                    delay = first_delay
                    self.reactor.callFromThread(
                        self.log.info,
                        "{what} Redis at {url}, stream {key}",
                        what="reconnected to" if ever_connected else "connected to",
                        url=safe_url(self.url),
                        key=self.key,
                    )
                    ever_connected = True
                answer = conn.xread(
                    {self.key: last}, count=1000, block=max(1, int(self.block * 1000))
                )
                if read_refused:
                    read_refused = False
                    self.connected = ever_connected = True
                    delay = first_delay
                    self.reactor.callFromThread(
                        self.log.info, "reading Redis stream {key} again", key=self.key
                    )
                if not answer:
                    last = self._check_backwards(conn, last)
                    continue
            except redis.ResponseError as e:
                # Refused, not unreachable: the connection stays.  Until a
                # read succeeds, this process delivers its own events only.
                if stopping.is_set():
                    return
                self._count("errors")
                self.connected = False
                self._first_attempt_made()
                if not read_refused:
                    read_refused = True
                    self.reactor.callFromThread(
                        self.log.warn,
                        "Redis refused to read stream {key}: {error}; delivering locally only",
                        key=self.key,
                        error=_refusal(e),
                    )
                stopping.wait(delay * (0.5 + secrets.randbelow(1000) / 1000))
                delay = min(delay * 2, self.backoff[1])
                continue
            except Exception as e:  # noqa: BLE001 - any Redis trouble: back off, retry
                if stopping.is_set():
                    return
                read_refused = False
                self._count("errors")
                self._went_down("read", e)
                self._first_attempt_made()
                self._drop_connection("_reader_conn")
                stopping.wait(delay * (0.5 + secrets.randbelow(1000) / 1000))
                delay = min(delay * 2, self.backoff[1])
                continue
            entries = answer[0][1]
            if not entries:
                continue
            last = entries[-1][0]
            self._hand_over(entries)

    def _head(self, conn: Any) -> bytes:
        """
        Where this process starts reading: the last id the stream ever
        generated (trimmed or deleted entries included), or for a stream
        that does not exist, C{0-0}, before any entry it will hold.  Every
        process that starts before the stream exists starts there, so the
        id they hand out at first (C{0-0_999}) means the same in all of
        them.  Reader thread.
        """
        info = self._info(conn)
        if info is not None:
            generated = _field(info, "last-generated-id")
            if isinstance(generated, bytes) and _parse(generated.decode("ascii", "replace")):
                return generated
        return b"0-0"

    def _hand_over(self, raw: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
        """Check entries read from the stream and pass them to the reactor."""
        prefix = self._origin_prefix
        batch = []
        malformed = delivered = 0
        for raw_id, fields in raw:
            entries, token, bad = _decode(raw_id, fields, prefix)
            malformed += bad
            if entries or token:
                batch.append((entries, token))
                delivered += len(entries)
        if malformed:
            self._count("malformed", malformed)
        self._count("delivered", delivered)
        if batch:
            self.reactor.callFromThread(self._deliver_batch, batch)

    def _check_backwards(self, conn: Any, last: bytes) -> bytes:
        """
        After a quiet read: if the stream's last generated id is below the
        last id read (the key was deleted and created again, e.g. after a
        forged maximal id), start over from its first entry, all of which
        are new.  Deleting entries (even the newest) does not lower that id,
        and is not a restart.

        The same stream moved back with C{XSETID} (its newest entries,
        the last one read among them, deleted first: Redis refuses an id
        below the newest entry) is told apart by its largest deleted id,
        at or past the last id read: every entry it still holds was read,
        so reading resumes after its new last id.  Reader thread.
        """
        if last == b"0-0":
            return last
        info = self._info(conn)
        if info is None:
            # Gone: wait for the first entry of the new stream.
            return last
        generated = _field(info, "last-generated-id")
        if not isinstance(generated, bytes) or _entry_key(generated) >= _entry_key(last):
            return last
        deleted = _field(info, "max-deleted-entry-id")
        first = _field(info, "first-entry")
        if isinstance(deleted, bytes) and _entry_key(deleted) >= _entry_key(last):
            ms, n = _entry_key(generated)
        else:
            start = first[0] if first else generated
            ms, n = _previous(*_entry_key(start)) if first else _entry_key(start)
        self._count("restarts")
        self.reactor.callFromThread(self._restart, *_after_entry(ms, n))
        return f"{ms}-{n}".encode("ascii")

    def _info(self, conn: Any) -> dict[Any, Any] | None:
        """
        The stream's C{XINFO STREAM} fields, C{first-entry} holding only its
        id, or L{None} if the key is not a stream.  Read by a script, so
        that Redis never sends the first and last entries (anyone who can
        write to the stream chooses their size); where scripts are refused
        (an ACL without C{EVAL}), by C{XINFO STREAM}, which sends them.
        Reader and replay threads.
        """
        import redis

        if self._by_script:
            try:
                answer = _STREAM_INFO(conn, self.key)
            except redis.ResponseError as e:
                if not _refuses_scripts(e):
                    raise
                self._scripts_refused(e)
            else:
                if not isinstance(answer, list):
                    return None
                info = dict(zip(answer[::2], answer[1::2], strict=False))
                first = _field(info, "first-entry")
                info[b"first-entry"] = None if first is None else [first]
                return info
        try:
            xinfo: dict[Any, Any] = conn.xinfo_stream(self.key)
        except redis.ResponseError:
            return None
        return xinfo

    def _scripts_refused(self, error: BaseException) -> None:
        """
        Redis refused a script (an ACL without C{EVAL}): read with the
        plain commands from now on (until the reader reconnects), which
        send entries whole, and say so.  Reader and replay threads.
        """
        self._by_script = False
        self.reactor.callFromThread(
            self.log.warn,
            "Redis refused a script ({error}): reading stream {key}'s info "
            "with XINFO STREAM and replays with XRANGE, which send entries whole",
            error=_refusal(error),
            key=self.key,
        )

    # -- replay (replay thread) --------------------------------------------------

    def _fetch_many(self, requests: list[tuple[str, int]]) -> list[Fetched]:
        with self._lock:
            conn = self._replay_conn
            if conn is None:
                conn = self._replay_conn = _connect(self.url, self.timeout)
        # A client's own entry still in the stream proves that nothing after
        # it was trimmed.  One pipelined single-entry lookup for every id;
        # an id that is not there costs only that, never a range read.
        # C{0-0} (the start of a process older than the stream) is never an
        # entry: a stream that never lost one (as many entries as were ever
        # added to it) proves it instead.
        entry_ids = []
        for event_id, _ in requests:
            parsed = _parse(event_id)
            assert parsed is not None
            entry_ids.append(f"{parsed[0]}-{parsed[1]}")
        whole = False
        found = self._entries_exist(conn, entry_ids)
        if "0-0" in entry_ids:
            info = self._info(conn)
            if info is not None:
                added = _field(info, "entries-added")
                whole = isinstance(added, int) and added == _field(info, "length")
        for exists in found:
            if isinstance(exists, Exception):
                raise exists
        known = [
            bool(exists) or (entry_id == "0-0" and whole)
            for entry_id, exists in zip(entry_ids, found, strict=True)
        ]
        return self._answer_known(
            known, lambda n: self._fetch_range(conn, entry_ids[n], requests[n][1])
        )

    def _entries_exist(self, conn: Any, entry_ids: list[str]) -> list[Any]:
        """
        For each id, whether its entry is in the stream (true or false), or
        the error Redis answered: one pipelined round trip.  Asked by a
        script that answers 1 or 0, so a forged large entry is not sent for
        its id; where scripts are refused, by C{XRANGE id id}, which sends
        the entry whole.
        """
        import redis

        if self._by_script:
            answers = _ENTRY_EXISTS.each(conn, self.key, entry_ids)
            refused = [a for a in answers if isinstance(a, redis.ResponseError)]
            if not refused:
                return [_script_error(a) or a for a in answers]
            if not _refuses_scripts(refused[0]):
                raise refused[0]
            self._scripts_refused(refused[0])
        pipe = conn.pipeline(transaction=False)
        for entry_id in entry_ids:
            pipe.xrange(self.key, entry_id, entry_id, count=1)
        found: list[Any] = pipe.execute(raise_on_error=False)
        return found

    def _read_range(
        self, conn: Any, start: str, limit: int, size: int
    ) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """
        C{XRANGE start + COUNT limit}, read by a script that answers an
        entry larger than L{_decode} accepts (its channel, a body, its run of
        events) with its id and no fields, so it is never sent and is
        dropped as malformed in its place, and that ends its answer with the
        entry whose body takes the bodies answered past C{size} bytes.
        Where scripts are refused, by C{XRANGE} itself, which sends every
        entry whole.
        """
        import redis

        if self._by_script:
            try:
                answer = _REPLAY_RANGE(
                    conn,
                    self.key,
                    start,
                    limit,
                    MAX_CHANNEL,
                    MAX_BODY,
                    MAX_PER_ENTRY,
                    len(self._origin_prefix) + 20,
                    size,
                )
            except redis.ResponseError as e:
                if not _refuses_scripts(e):
                    raise
                self._scripts_refused(e)
            else:
                error = _script_error(answer)
                if error is not None:
                    raise error
                return [
                    (raw_id, {} if flat is None else dict(zip(flat[::2], flat[1::2], strict=True)))
                    for raw_id, flat in answer
                ]
        raw: list[tuple[bytes, dict[bytes, bytes]]] = conn.xrange(self.key, start, "+", count=limit)
        return raw

    def _fetch_range(self, conn: Any, entry_id: str, position: int) -> Fetched:
        # The client's own entry, then up to max_replay + 1 more, in reads
        # of _REPLAY_PAGE entries; bodies read past max_replay_bytes cut the
        # replay as more events would.
        limit = self.max_replay + 2
        budget = self.max_replay_bytes
        prefix = self._origin_prefix
        out: list[Entry] = []
        malformed = read = size = 0
        truncated = False
        start: str | None = entry_id
        while start is not None:
            wanted = min(_REPLAY_PAGE, limit - read)
            raw = self._read_range(conn, start, wanted, budget - size)
            for raw_id, fields in raw:
                body = fields.get(_FIELD_BODY)
                if isinstance(body, bytes):
                    size += len(body)
                entries, _, bad = _decode(raw_id, fields, prefix)
                malformed += bad
                out.extend(e for e in entries if e.position > position)
            read += len(raw)
            if len(out) > self.max_replay or read >= limit or size > budget:
                truncated = True
                break
            if len(raw) < wanted:
                break
            start = _id_after(raw[-1][0])
        if malformed:
            self._count("malformed", malformed)
        # The last valid event: the reader delivers it here too, so the hub
        # can tell when it has caught up with this answer.
        end, end_id = (out[-1].position, out[-1].id) if out else (position, "")
        return Fetched(True, out[: self.max_replay], end, end_id, truncated)


class RedisPublisher:
    """
    Broadcast to every process of a site from a program that is not a web
    server (a cron job, a task worker): no reactor, no threads, one
    C{XADD} per event.

    >>> from wsgi_sse.redis import RedisPublisher        # doctest: +SKIP
    >>> RedisPublisher("redis://localhost:6379/0").broadcast("done", channel="jobs")

    Instances may be shared between threads (redis-py pools connections).

    @param url: the Redis URL the servers use.
    @param namespace: the servers' namespace.
    @param maxlen: about how many events the stream keeps; use the servers'.
    @param timeout: seconds for connecting and for every command.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str = "default",
        maxlen: int = 100_000,
        timeout: float = 2.0,
    ) -> None:
        resolved = resolve_redis_url(url)
        if resolved is None:
            raise ValueError(
                f"no Redis URL given, and ${BACKPLANE_URL_ENV} and ${REDIS_URL_ENV} are "
                f"unset or empty: pass RedisPublisher('redis://...') or set ${BACKPLANE_URL_ENV}"
            )
        scheme = resolved.split("://", 1)[0].lower() if "://" in resolved else ""
        client = BACKPLANE_CLIENTS.get(scheme)
        if client is None or client.name != "Redis":
            where = "the URL given"
            if not url:
                from ._config import environment_value

                named = environment_value("backplane_url") is not None
                where = f"${BACKPLANE_URL_ENV if named else REDIS_URL_ENV}"
            raise ValueError(
                f"{where} is not a Redis URL ({safe_url(resolved)!r}): RedisPublisher takes "
                "redis://, rediss:// or unix://; a PostgreSQL backplane is published to with "
                "wsgi_sse.postgres.publish()"
            )
        self.url = resolved
        self.key = stream_key(namespace)
        self.maxlen = maxlen
        self._conn = _connect(resolved, timeout)

    def broadcast(
        self,
        data: object,
        *,
        event: str | None = None,
        channel: str | None = None,
        retry: int | None = None,
    ) -> str:
        """
        Send an event to every client of C{channel} on every server.  May be
        called in any thread.

        Takes the arguments of L{broadcast<wsgi_sse.broadcast>} and
        validates them the same way.

        @return: the event's id.
        @raise TypeError: for values of the wrong type; nothing is sent.
        @raise ValueError: for values that would break the stream, or an
            event larger than the servers accept back (1 MiB encoded).
        @raise redis.exceptions.RedisError: if Redis cannot be reached in
            time (C{ConnectionError}, C{TimeoutError}); the event may or
            may not have been sent.  C{ResponseError} if Redis refused it
            (out of memory, the key holding another type); it was not sent.
        """
        name, body = prepare_shared_event(data, event=event, channel=channel, retry=retry)
        event_id = self._conn.xadd(
            self.key,
            {_FIELD_CHANNEL: name.encode("utf-8"), _FIELD_BODY: body},
            maxlen=self.maxlen,
            approximate=True,
        )
        return event_id.decode("ascii") if isinstance(event_id, bytes) else str(event_id)

    def broadcast_many(self, events: Sequence[tuple[object, dict[str, Any]]]) -> list[str]:
        """
        Send several events in one round trip, in order: a sequence of
        C{(data, {"event": ..., "channel": ..., "retry": ...})}.  Every
        event is validated before any is sent.  May be called in any thread.
        """
        prepared = []
        for data, options in events:
            prepared.append(
                prepare_shared_event(
                    data,
                    event=options.get("event"),
                    channel=options.get("channel"),
                    retry=options.get("retry"),
                )
            )
        pipe = self._conn.pipeline(transaction=False)
        for name, body in prepared:
            pipe.xadd(
                self.key,
                {_FIELD_CHANNEL: name.encode("utf-8"), _FIELD_BODY: body},
                maxlen=self.maxlen,
                approximate=True,
            )
        return [i.decode("ascii") if isinstance(i, bytes) else str(i) for i in pipe.execute()]

    def close_channel(self, channel: str) -> str:
        """
        End every stream held on C{channel} on every server, after the
        events sent before (what L{close<wsgi_sse.close>} does in a
        server).  May be called in any thread.

        @return: the close's id.
        @raise TypeError: if C{channel} is not a str.
        @raise ValueError: if it is empty, longer than 1,000 bytes in UTF-8 or
            contains control characters.
        @raise redis.exceptions.RedisError: if Redis cannot be reached in time.
        """
        name = validate_channel(channel)
        close_id = self._conn.xadd(
            self.key,
            {_FIELD_CHANNEL: name.encode("utf-8"), _FIELD_BODY: CLOSE_BODY},
            maxlen=self.maxlen,
            approximate=True,
        )
        return close_id.decode("ascii") if isinstance(close_id, bytes) else str(close_id)

    def close(self) -> None:
        """Close the connections.  May be called in any thread."""
        self._conn.close()

    def __enter__(self) -> RedisPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
