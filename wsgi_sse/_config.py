"""
Every option of the server in one table, grouped by what it configures.

The table (L{SETTINGS}) is the one source that docs/options.md, the command
line flags, the Django settings keys and the error messages for misspelled
keywords derive from; the environment is read here only
(L{environment_value}).  The options of each group can also be passed as one
typed object (L{SiteOptions}, L{LimitOptions}, L{PublishOptions},
L{BackplaneOptions}, and L{StreamOptions<wsgi_sse.StreamOptions>} for the
stream), as in C{make_application(app, limits=LimitOptions(max_connections=500))}.

A new option is one more L{Setting} row (and, if it belongs to a group
object, one more field there); C{tests/test_config.py} lists what a new
keyword still lacks.  Everything here may be called in any thread.
"""

from __future__ import annotations

import os
import re
from dataclasses import MISSING, dataclass, fields
from typing import TYPE_CHECKING, Any, Callable, Mapping

from ._options import StreamOptions

if TYPE_CHECKING:
    from twisted.web.resource import IResource

__all__ = [
    "GROUPS",
    "SETTINGS",
    "BackplaneOptions",
    "Group",
    "LimitOptions",
    "PublishOptions",
    "Setting",
    "SiteOptions",
    "environment_value",
    "flatten_groups",
    "markdown_table",
    "setting",
]


@dataclass(frozen=True, slots=True)
class Group:
    """
    One group of options, owned by one part of the server.

    @ivar key: the keyword that takes the group's object (C{"limits"}).
    @ivar title: the heading in docs/options.md.
    @ivar cls: the typed object holding the group's options.
    """

    key: str
    title: str
    cls: type


@dataclass(frozen=True, slots=True)
class Setting:
    """
    One option, as every interface sees it.

    @ivar name: the keyword of C{make_application} (upper-cased: the key in
        Django's C{WSGI_SSE} setting; dashes: the command-line flag).
    @ivar group: the L{Group} key it belongs to.
    @ivar shown: the default, as the docs show it.
    @ivar doc: what it does (Markdown; the first sentence is the flag's help).
    @ivar env: the environment variable read when it is not given, if any.
    @ivar flag: the converter of its command-line flag, or L{None} for no flag.
    @ivar django: whether Django's C{WSGI_SSE} setting may set it.
    @ivar nullable: whether L{None} is one of its values (it turns something
        off), which its flag then takes as C{none}.
    """

    name: str
    group: str
    shown: str
    doc: str
    env: str | None = None
    flag: Callable[[str], Any] | None = None
    django: bool = True
    nullable: bool = False

    @property
    def option(self) -> str:
        """The command-line flag (C{--max-connections})."""
        return "--" + self.name.replace("_", "-")

    @property
    def help(self) -> str:
        """
        The first sentence of L{doc}, for C{--help}: plain text (a link is
        its text only).
        """
        text = self.doc.split(". ", 1)[0].rstrip(".")
        return _LINK.sub(r"\1", text).replace("`", "")


_LINK = re.compile(r"\[([^\]]+)\]\([^)\s]+\)")


TRUE_WORDS = ("yes", "true", "on", "1")
FALSE_WORDS = ("no", "false", "off", "0")
BOOLEAN_WORDS = "yes/no, true/false, on/off or 1/0"
"""What a yes-or-no option takes on the command line (any case)."""


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ValueError(f"expected {BOOLEAN_WORDS}, not {text!r}")


def _origins(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


# -- the typed group objects ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteOptions:
    """Where and how the server listens and runs the WSGI app (the C{site} group)."""

    listen: str | None = None
    sse_path: str = "/sse"
    client_path: str | None = "/sse.js"
    threads: int = 10
    min_threads: int = 0
    shutdown_timeout: float = 3.0
    resources: Mapping[str, IResource] | None = None
    stats_path: str | None = None
    metrics_path: str | None = None
    access_log: bool = True
    gc_freeze: bool = True
    sched_batch: bool = True


@dataclass(frozen=True, slots=True)
class LimitOptions:
    """What one client or all of them may cost (the C{limits} group)."""

    max_connections: int = 10_000
    max_connections_per_address: int | None = None
    max_channels: int = 16
    max_channel_length: int = 64
    max_buffer: int = 1 << 20
    max_pause: float = 60.0
    busy_retry_after: int = 5
    header_timeout: float | None = 30.0
    idle_timeout: float | None = 180.0
    max_request_body: int | None = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """The HTTP publish endpoint (the C{publish} group); off unless C{publish_path} is set."""

    publish_path: str | None = None
    publish_secret: str | None = None
    publish_max_body: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class BackplaneOptions:
    """Replay history and sharing events between processes (the C{backplane} group)."""

    backplane_url: str | None = None
    redis_url: str | None = None
    history_size: int | None = None
    history_age: float | None = None
    history_channels: int | None = None
    presence_interval: float | None = None


GROUPS: tuple[Group, ...] = (
    Group("site", "Site", SiteOptions),
    Group("stream", "The stream", StreamOptions),
    Group("limits", "Limits", LimitOptions),
    Group("backplane", "Backplane and replay history", BackplaneOptions),
    Group("publish", "The publish endpoint", PublishOptions),
)
"""The groups, in the order docs/options.md shows them."""


# -- the table -----------------------------------------------------------------------

_S = Setting
SETTINGS: tuple[Setting, ...] = (
    _S(
        "listen",
        "site",
        '`$WSGI_SSE_LISTEN`, else `"tcp:8005"` (port 8005 on every interface)',
        'A Twisted endpoint string: `"tcp:8005"`, `"tcp:8005:interface=127.0.0.1"`, '
        '`"unix:/run/app.sock"`, `"ssl:443:privateKey=key.pem:certKey=cert.pem"` (TLS; also '
        "HTTP/2 with `pip install wsgi-sse[http2]`, see "
        "[Deployment](deployment.md#tls-and-http2)). Unless the string sets `backlog=`, "
        "`tcp`, `tcp6`, `ssl` and `unix` endpoints listen with a backlog of 2048, so that "
        "every client reconnecting at once after a restart is accepted.",
        env="WSGI_SSE_LISTEN",
        flag=str,
    ),
    _S(
        "sse_path",
        "site",
        '`"/sse"`',
        "Where the event stream is served. Only that exact path: every other path goes to the "
        "WSGI app.",
        flag=str,
    ),
    _S(
        "client_path",
        "site",
        '`"/sse.js"`',
        "Where the [browser client](browser-client.md) module is served; `None` leaves the path "
        "to your app.",
        flag=str,
        nullable=True,
    ),
    _S(
        "threads",
        "site",
        "`10`",
        "Maximum size of the WSGI app's thread pool (the `authorize` and `initial` hooks run "
        "there too).",
        flag=int,
    ),
    _S("min_threads", "site", "`0`", "Threads the pool keeps even when idle.", flag=int),
    _S(
        "name",
        "site",
        '`"wsgi-sse"`',
        "The Twisted application's name (`make_application` only).",
    ),
    _S(
        "shutdown_timeout",
        "site",
        "`3.0`",
        "Seconds shutdown waits for busy WSGI threads before giving up on them, so that the "
        "process exits within a few seconds of SIGTERM even when a view never returns; also "
        "how long an HTTP/2 connection may take to finish after its `GOAWAY` before it is "
        "aborted.",
        flag=float,
    ),
    _S(
        "resources",
        "site",
        "`None`",
        "A mapping of paths to extra Twisted resources, mounted with their whole subtree "
        '(`{"/static": StaticFiles("static")}`, see [Security](security.md#static-files)).',
    ),
    _S(
        "stats_path",
        "site",
        "`None` (off)",
        'Serve the counters as JSON at this path (`"/sse-stats"`).',
        flag=str,
        nullable=True,
    ),
    _S(
        "metrics_path",
        "site",
        "`None` (off)",
        'Serve the counters in the Prometheus text format at this path (`"/metrics"`).',
        flag=str,
        nullable=True,
    ),
    _S(
        "access_log",
        "site",
        "`True`",
        "Log a line per request in twisted.web's combined log format, as `twistd web` does "
        "(stream tokens redacted), a stream's when it ends. Under plain `twistd` the line is "
        "written straight to its log file, the same text its log observer would write, for a "
        "few microseconds per request "
        "([logging](channels.md#logging)); `False` leaves it to the reverse proxy in front.",
        flag=_boolean,
    ),
    _S(
        "gc_freeze",
        "site",
        "`True`",
        "When the server starts, take the objects alive then (your application, its framework, "
        "Twisted) out of the cyclic garbage collector's scans with `gc.freeze()`, once per "
        "process. Every full collection otherwise walks them again; with thousands of streams "
        "open, a full collection stops the server for tens of milliseconds "
        "([tuning](deployment.md#garbage-collection)). Turn it off if your application builds "
        "reference cycles at import time that it later drops and expects to be collected.",
        flag=_boolean,
    ),
    _S(
        "sched_batch",
        "site",
        "`True`",
        "On Linux, run the WSGI threads under the `SCHED_BATCH` scheduling policy: a thread woken "
        "to serve a request waits for the reactor thread to block instead of preempting it on a "
        "shared core while it holds the GIL the woken thread needs "
        "([tuning](deployment.md#the-wsgi-threads-and-the-reactor-thread)). Their nice value and "
        "share of the CPU stay the same. Threads under another policy (`chrt`) keep it. Turn it "
        "off if your views must preempt other busy programs on the machine as soon as they wake.",
        flag=_boolean,
    ),
    _S(
        "reactor",
        "site",
        "the global reactor",
        "The reactor to run on (tests pass their own).",
        django=False,
    ),
    _S(
        "options",
        "stream",
        "built from the keywords below",
        "A `StreamOptions` holding every field below; pass either it or the keywords, not both.",
        django=False,
    ),
    _S(
        "heartbeat",
        "stream",
        "`15.0`",
        "Seconds between keep-alive comments (`0` turns them off). On Linux, stream sockets get a "
        "`TCP_USER_TIMEOUT` of twice the heartbeat (at least 30 s): a client that vanished "
        "without closing is dropped once a heartbeat stays unacknowledged that long.",
        flag=float,
    ),
    _S(
        "retry",
        "stream",
        "`3000`",
        "The reconnection delay, in milliseconds, sent to each client on connect (`retry:`).",
        flag=int,
    ),
    _S(
        "retry_jitter",
        "stream",
        "`0.5`",
        "A random fraction of `retry` added per client (0.5: between 1 and 1.5 times `retry`), "
        "so that clients do not all reconnect in the same instant after a restart. Between 0 "
        "and 10.",
        flag=float,
    ),
    _S(
        "channel_pattern",
        "stream",
        '`r"[A-Za-z0-9_.:@~-]+"`',
        "A regular expression every channel name must match in full; otherwise `400`. "
        "Control characters are a `400` whatever it allows, as `broadcast()` refuses them.",
        flag=str,
    ),
    _S(
        "cors_origins",
        "stream",
        "`()` (same origin only)",
        'Origins (`"https://app.example.com"`) allowed to open the stream from other sites; '
        '`"*"` allows any. Entries must be `scheme://host[:port]` (on the command line: '
        "separated by commas).",
        flag=_origins,
    ),
    _S(
        "log_streams",
        "stream",
        "`False`",
        "Log one line per stream opened and closed (`stream opened for ...`, `stream closed for "
        "...`). Off, a summary line counts them instead, once every ten seconds while streams "
        "come and go: two lines per stream are twenty thousand lines when ten thousand browsers "
        "reconnect at once after a restart, and as events for a log observer other than "
        "twistd's text file they add about a third to the CPU time of accepting a stream.",
        flag=_boolean,
    ),
    _S(
        "cors_credentials",
        "stream",
        "`False`",
        "Send `Access-Control-Allow-Credentials: true`, so that cross-origin pages using "
        '`withCredentials` send their cookies. Not with `"*"`.',
        flag=_boolean,
    ),
    _S(
        "authorize",
        "stream",
        "`None` (everyone may join every channel)",
        "`(StreamRequest) -> bool | Iterable[str]`, run in the WSGI thread pool before anything "
        "is subscribed: `True` allows, `False` refuses (`403`), a collection names the channels "
        "allowed (asking for any other is a `403`).",
    ),
    _S(
        "initial",
        "stream",
        "`None`",
        "`(StreamRequest) -> object`, run in the WSGI thread pool for a new page and after a "
        "`reset`; a value other than `None` is sent first as an `init` event, followed by what "
        "was published while the hook ran.",
    ),
    _S(
        "on_presence",
        "stream",
        "`None`",
        "`(PresenceChange) -> None`, run in the WSGI thread pool when an identity joins a "
        "channel (its first stream anywhere) or leaves it (its last one), and when a guest "
        "stream opens or closes. See [Presence](channels.md#presence-who-is-here).",
    ),
    _S(
        "token_secret",
        "stream",
        "`$WSGI_SSE_TOKEN_SECRET`, else none (`token` is then an ordinary parameter)",
        "The secret that signs and verifies [stream tokens](channels.md#stream-tokens); at least "
        "32 characters. No command-line flag: pass it in the environment, out of the process "
        "list.",
        env="WSGI_SSE_TOKEN_SECRET",
    ),
    _S(
        "max_connections",
        "limits",
        "`10000`",
        "Open streams in total (including those waiting for their hooks); past it a new stream "
        "is told to come back later (a `200` stream carrying only a `retry:`, see "
        "[transient refusals](channels.md#transient-refusals-never-end-a-page)), counted as "
        "`503` in the stats.",
        flag=int,
    ),
    _S(
        "max_connections_per_address",
        "limits",
        "`None` (no cap)",
        'Open streams per client IP address; past it, the same "come back later" answer. '
        "Leave it off behind a reverse proxy, where every client has the proxy's address.",
        flag=int,
        nullable=True,
    ),
    _S(
        "max_channels",
        "limits",
        "`16`",
        "Channels one connection may ask for; more is a `400`.",
        flag=int,
    ),
    _S(
        "max_channel_length",
        "limits",
        "`64`",
        "Characters in a channel name; longer is a `400`. At most `1000`, the longest channel "
        "`broadcast()` and the backplanes carry (1,000 bytes in UTF-8, which a name outside "
        "ASCII may also not exceed).",
        flag=int,
    ),
    _S(
        "max_buffer",
        "limits",
        "`1048576` (1 MiB)",
        "Bytes held for a client that has stopped reading before its connection is aborted "
        "(over HTTP/2: its stream is reset). A replay is written as the reader takes it and is "
        "not copied; live events waiting behind it count.",
        flag=int,
    ),
    _S(
        "max_pause",
        "limits",
        "`60.0`",
        "Seconds a client may stop reading (a stream, or a WSGI page's streamed body)"
        " before its connection is aborted. A stream the server ends (its channel closed,"
        " shutdown) while its reader is behind ends once the reader has caught up, within"
        " this time; a revoked one (`disconnect()`) is aborted at once.",
        flag=float,
    ),
    _S(
        "busy_retry_after",
        "limits",
        "`5`",
        "Seconds a refused stream is told to wait before it reconnects: its `retry:` (in "
        "milliseconds, at least `retry`, plus up to `retry_jitter` more) and its `Retry-After` "
        "header.",
        flag=int,
    ),
    _S(
        "header_timeout",
        "limits",
        "`30.0`",
        "Seconds a client has to send its request line and headers before the connection is "
        "closed (slow-header clients); `None` or `0` turns it off.",
        flag=float,
        nullable=True,
    ),
    _S(
        "idle_timeout",
        "limits",
        "`180.0`",
        "Seconds a kept-alive connection may stay silent between requests; `None` turns it off. "
        "An open event stream is never idle in this sense.",
        flag=float,
        nullable=True,
    ),
    _S(
        "max_request_body",
        "limits",
        "`67108864` (64 MiB)",
        "Bytes a request body may have, on any path; a larger one is answered `413` (a declared "
        "length before the body is read; a chunked body by its data, its chunk framing bounded "
        "apart, see [Security](security.md#denial-of-service-every-limit-and-its-default)). "
        "`None` turns it off. The stream path takes no body at "
        "all and the publish path at most `publish_max_body`: a larger one is refused as soon as "
        "its headers arrive. Bodies are never parsed by the server: the WSGI app reads its own, "
        "in its own thread.",
        flag=int,
        nullable=True,
    ),
    _S(
        "backplane_url",
        "backplane",
        "`$WSGI_SSE_BACKPLANE_URL`, else none",
        "Share broadcasts, event ids and replay with every process using this backplane, "
        "picked by the URL's scheme: `redis://`, `rediss://`, `unix://` (Redis, `pip install "
        "wsgi-sse[redis]`) or `postgresql://`, `postgres://` (PostgreSQL, `pip install "
        'wsgi-sse[postgres]`). `""` turns it off. A missing client library stops the server '
        "at start, naming the extra to install. See [Scaling out](scaling.md).",
        env="WSGI_SSE_BACKPLANE_URL",
        flag=str,
    ),
    _S(
        "redis_url",
        "backplane",
        "`$WSGI_SSE_REDIS_URL`, else none",
        "The older name of `backplane_url` (which wins when both are given; "
        "`$WSGI_SSE_REDIS_URL` is read after `$WSGI_SSE_BACKPLANE_URL`).",
        env="WSGI_SSE_REDIS_URL",
        flag=str,
    ),
    _S(
        "history_size",
        "backplane",
        "`1000`",
        "Events kept per channel for replay after a reconnect (`0`: no replay; a client "
        "resuming after anything was published gets `reset`).",
        flag=int,
    ),
    _S(
        "history_age",
        "backplane",
        "`600.0`",
        "Seconds an event stays in the history. The server forgets expired events on a timer of "
        "its own (every quarter of `history_age`, between 0.5 and 60 s), whether or not any "
        "client is connected.",
        flag=float,
    ),
    _S(
        "history_channels",
        "backplane",
        "`10000`",
        "Channels the hub keeps at most. Publishing to one more forgets the history of the idle "
        "channel (no listener) published to least recently; a client resuming there gets "
        "`reset`. Channels with listeners are never forgotten.",
        flag=int,
    ),
    _S(
        "presence_interval",
        "backplane",
        "`10.0`",
        "Seconds between the presence reports each process sends the others through a shared "
        "backplane; a process not heard from for three intervals is forgotten.",
        flag=float,
    ),
    _S(
        "hub",
        "backplane",
        "a new `Hub`",
        "A `Hub` you built yourself (`Hub(history_size=..., history_age=..., "
        "history_channels=..., presence_interval=...)`); do not combine with `history_size`/"
        "`history_age`/`history_channels`/`presence_interval`.",
    ),
    _S(
        "publisher",
        "backplane",
        "the hub",
        "Where `broadcast()` sends events: the hub (which hands them to its backplane).",
    ),
    _S(
        "publish_path",
        "publish",
        "`None` (off)",
        'Serve the HTTP publish endpoint at this path (`"/publish"`).',
        flag=str,
        nullable=True,
    ),
    _S(
        "publish_secret",
        "publish",
        "`$WSGI_SSE_PUBLISH_SECRET`",
        "The shared secret publishers send as `Authorization: Bearer <secret>`; at least 16 "
        "characters. Required when `publish_path` is set. No command-line flag: pass it in the "
        "environment, out of the process list.",
        env="WSGI_SSE_PUBLISH_SECRET",
    ),
    _S(
        "publish_max_body",
        "publish",
        "`65536`",
        "The largest publish request body accepted, in bytes; larger is a `413`.",
        flag=int,
    ),
)
"""Every option, in the order the docs list them."""

_BY_NAME = {s.name: s for s in SETTINGS}
_GROUP_BY_KEY = {g.key: g for g in GROUPS}


def setting(name: str) -> Setting:
    """The row of option C{name}; C{KeyError} if there is none."""
    return _BY_NAME[name]


def owner(name: str) -> str | None:
    """Where option C{name} belongs, for messages (C{"a limits option, LimitOptions"})."""
    row = _BY_NAME.get(name)
    if row is None:
        return None
    group = _GROUP_BY_KEY[row.group]
    in_object = any(f.name == name for f in fields(group.cls))
    where = f", {group.cls.__name__}.{name}" if in_object else ""
    return f"a {group.key} option{where}"


def environment_value(name: str) -> str | None:
    """
    The value the environment gives option C{name} (C{listen} reads
    C{$WSGI_SSE_LISTEN}), or L{None} when it has no variable or it is unset.
    An empty variable is returned as C{""}.
    """
    variable = _BY_NAME[name].env
    if variable is None:
        return None
    return os.environ.get(variable)


def _changed(obj: Any) -> dict[str, Any]:
    """The fields of a group object that differ from their defaults."""
    values = {}
    defaults = type(obj)() if isinstance(obj, StreamOptions) else None
    for f in fields(obj):
        if not f.init or f.name.startswith("_"):
            continue
        value = getattr(obj, f.name)
        default = getattr(defaults, f.name) if defaults is not None else f.default
        if default is MISSING or value != default:
            values[f.name] = value
    return values


def flatten_groups(kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    Replace the group objects in C{kwargs} (C{site=}, C{stream=}, C{limits=},
    C{backplane=}, C{publish=}) with the options they set.

    @raise TypeError: for a group keyword given something else than its
        object, or an option set twice.
    """
    flat = {k: v for k, v in kwargs.items() if k not in _GROUP_BY_KEY}
    for key, value in kwargs.items():
        group = _GROUP_BY_KEY.get(key)
        if group is None:
            continue
        if not isinstance(value, group.cls):
            raise TypeError(f"{key}= takes a {group.cls.__name__}, not {type(value).__name__}")
        for name, option in _changed(value).items():
            if name in flat and flat[name] != option:
                raise TypeError(f"{name} is given twice: as a keyword and in {key}=")
            flat[name] = option
    return flat


def markdown_table(group: str) -> str:
    """The docs/options.md table of one group, generated from L{SETTINGS}."""
    lines = ["| keyword | default | flag | meaning |", "|---|---|---|---|"]
    for row in SETTINGS:
        if row.group == group:
            flag = f"`{row.option}`" if row.flag is not None else ""
            if row.nullable and row.flag is not None:
                flag += " (`none`: `None`)"
            lines.append(f"| `{row.name}` | {row.shown} | {flag} | {row.doc} |")
    return "\n".join(lines)


def environment_table() -> str:
    """The docs/options.md table of environment variables, generated from L{SETTINGS}."""
    lines = ["| variable | option |", "|---|---|"]
    for row in SETTINGS:
        if row.env is not None:
            lines.append(f"| `{row.env}` | `{row.name}` |")
    return "\n".join(lines)


DJANGO_ONLY: tuple[tuple[str, str, str], ...] = (
    (
        "SERVE_STATIC",
        "`True`",
        "Serve `STATIC_ROOT` at `STATIC_URL` from Twisted (see [Static files](#static-files)).",
    ),
    (
        "BACKPLANE_DATABASE",
        "none",
        'A database alias (`"default"`): use that PostgreSQL database as the backplane; '
        "`broadcast_on_commit()` then writes the event in the transaction (see "
        "[On the project's own PostgreSQL database](#on-the-projects-own-postgresql-database)).",
    ),
)
"""Keys of Django's C{WSGI_SSE} setting that are not server options: key, default, meaning."""


def django_table() -> str:
    """The docs/django.md table of C{WSGI_SSE} keys, generated from L{SETTINGS}."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for row in SETTINGS:
        if row.django:
            summary = row.doc.split(". ", 1)[0].rstrip(".")
            lines.append(f"| `{row.name.upper()}` | {row.shown} | {summary}. |")
    for key, default, meaning in DJANGO_ONLY:
        lines.append(f"| `{key}` | {default} | {meaning} |")
    return "\n".join(lines)


def render_options_doc(text: str) -> str:
    """
    Return a docs page (C{text}) with every generated table replaced by the
    table's current contents.
    """
    import re

    def table(match: re.Match[str]) -> str:
        key = match.group(1)
        generated = {"environment": environment_table, "django": django_table}
        body = generated[key]() if key in generated else markdown_table(key)
        return f"<!-- options: {key} -->\n{body}\n<!-- /options -->"

    return re.sub(r"<!-- options: (\w+) -->\n.*?<!-- /options -->", table, text, flags=re.S)
