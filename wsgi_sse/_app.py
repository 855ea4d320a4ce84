"""
Putting it together: the WSGI thread pool, the site, the service and
L{make_application} for C{twistd -ny server.py}.
"""

from __future__ import annotations

import atexit
import errno
import gc
import inspect
import os
import sys
import threading
from dataclasses import fields
from typing import TYPE_CHECKING, Any, Mapping

from twisted.application.internet import StreamServerEndpointService, TimerService
from twisted.application.service import Application, MultiService, Service
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.python.components import Componentized
from twisted.web.resource import IResource

from ._backplane import Backplane, open_backplane, resolve_backplane_url
from ._broadcast import Broadcaster, Publisher, set_broadcaster
from ._browser import ClientScriptResource
from ._checks import (
    check_option_names,
    check_seconds,
    check_wsgi_app,
    listen_error,
)
from ._config import GROUPS, environment_value, flatten_groups, owner
from ._hub import Hub
from ._mount import WSGIRoot
from ._options import StreamOptions
from ._pool import WSGIThreadPool
from ._publish import PublishResource
from ._resource import SSEResource
from ._site import (
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_REQUEST_BODY,
    StreamSite,
)
from ._stats import BackplaneStats, MetricsResource, StatsResource
from ._tokens import set_token_secret
from ._views import HoldingWSGIResource

if TYPE_CHECKING:
    from collections.abc import Iterable

    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "DEFAULT_LISTEN",
    "ListenError",
    "SSEServerService",
    "WSGIThreadPool",
    "make_application",
    "make_service",
]

DEFAULT_LISTEN = "tcp:8005"
"""The endpoint used when neither C{listen} nor C{WSGI_SSE_LISTEN} says otherwise."""

LISTEN_ENV = "WSGI_SSE_LISTEN"

DEFAULT_BACKLOG = 2048
"""
The listen backlog used when the endpoint string names none.  Twisted's own
default of 50 makes a reconnect storm (every browser coming back after a
restart) overflow the accept queue: measured on loopback, 5,000 clients
reconnecting at once took 110 s with a backlog of 50 and 2.4 s with 1,024.
The kernel caps it at C{net.core.somaxconn}.
"""

_BACKLOG_ENDPOINTS = frozenset({"tcp", "tcp6", "ssl", "unix"})


def with_backlog(listen: str, backlog: int = DEFAULT_BACKLOG) -> str:
    """
    Add C{backlog=} to a C{tcp}, C{tcp6}, C{ssl} or C{unix} endpoint string
    that does not set one; return other strings unchanged.
    """
    kind = listen.split(":", 1)[0].strip().lower()
    if kind in _BACKLOG_ENDPOINTS and ":" in listen and "backlog=" not in listen:
        return f"{listen}:backlog={backlog}"
    return listen


def _compliant(app: WSGIApplication) -> WSGIApplication:
    """
    Wrap C{app} so that its environ follows PEP 3333.

    twisted.web's WSGI container also copies the Content-Length and
    Content-Type request headers to C{HTTP_CONTENT_LENGTH} and
    C{HTTP_CONTENT_TYPE}, keys PEP 3333 forbids (C{wsgiref.validate} and
    strict frameworks reject them); their values are already in
    C{CONTENT_LENGTH} and C{CONTENT_TYPE}.  Called in WSGI threads.
    """

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ.pop("HTTP_CONTENT_LENGTH", None)
        environ.pop("HTTP_CONTENT_TYPE", None)
        return app(environ, start_response)

    return application


class ListenError(Exception):
    """
    The server cannot listen on its endpoint (a port in use, a permission
    refused): the message names the endpoint and the cause, in one line.
    """


def _another_port(listen: str) -> str:
    """
    For a port in use: how to choose another one, with C{listen} moved to
    the next port as the example (C{tcp:8006} for C{tcp:8005}).
    """
    kind, _, rest = listen.partition(":")
    port, _, options = rest.partition(":")
    example = ""
    if kind in ("tcp", "tcp6", "ssl") and port.isdigit() and int(port) < 65535:
        example = f", e.g. {kind}:{int(port) + 1}" + (f":{options}" if options else "")
    return (
        f" (another program is using the port: choose another with ${LISTEN_ENV}, "
        f"--listen or listen={example})"
    )


def _cannot_listen(listen: str, error: CannotListenError) -> ListenError:
    cause = error.socketError
    reason = getattr(cause, "strerror", None) or str(cause)
    if getattr(cause, "errno", None) == errno.EADDRINUSE:
        reason += _another_port(listen)
    failure = ListenError(f"cannot listen on {listen}: {reason}")
    _report_in_one_line(failure)
    return failure


def _report_in_one_line(error: BaseException) -> None:
    """
    If C{error} ends the process uncaught (twistd lets a start-up error
    through), print it as one line, not as a traceback.
    """
    previous = sys.excepthook

    def excepthook(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if value is error:
            program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "wsgi-sse"
            # The process's own stderr: twistd -n sends sys.stderr to its log.
            print(f"{program}: {error}", file=sys.__stderr__ or sys.stderr)
        else:
            previous(kind, value, tb)

    sys.excepthook = excepthook


_startup_frozen = False


def freeze_startup_objects() -> bool:
    """
    Take every object alive now out of the cyclic garbage collector's
    scans (C{gc.collect()}, then C{gc.freeze()}), once per process; return
    whether this call did it.

    When the server starts, the application, its framework and Twisted are
    imported and live as long as the process.  A full collection otherwise
    walks all of them again, every time the objects of new connections have
    piled up (a quarter more survivors than after the previous one): during
    a reconnect storm of 10,000 streams, five full collections.  Frozen
    objects are still freed by reference counting when they die; only a
    reference cycle among them that becomes garbage later is never
    collected.  Call in the main or reactor thread.
    """
    global _startup_frozen
    if _startup_frozen:
        return False
    _startup_frozen = True
    gc.collect()
    gc.freeze()
    return True


class _BackplaneService(Service):
    """Start and stop a hub's backplane with the server.  Reactor thread."""

    name = "wsgi-sse-backplane"

    def __init__(self, backplane: Backplane, hub: Hub | None = None) -> None:
        self.backplane = backplane
        self.hub = hub

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self.backplane.start()
        if self.hub is not None:
            # Presence reports travel through the backplane (when shared).
            self.hub.presence.start()

    def stopService(self) -> Deferred[None]:
        super().stopService()  # type: ignore[no-untyped-call]
        if self.hub is not None:
            # Tells the other processes this one has nobody any more.
            self.hub.presence.stop()
            self.hub.stop_resending()
        return self.backplane.stop()


class SSEServerService(MultiService):
    """
    Serve a WSGI app and its event stream on one listening endpoint.

    Starting the service starts the WSGI thread pool and listens; stopping it
    ends every stream cleanly, stops listening, and stops the pool from a
    helper thread (a WSGI thread waiting on the reactor cannot deadlock the
    shutdown), giving up on threads still busy after C{shutdown_timeout}.

    Lifecycle methods: call in the reactor thread.

    @ivar hub: the L{Hub} behind the stream.
    @ivar backplane: the backplane sharing broadcasts with other processes
        (Redis or PostgreSQL, built from C{backplane_url} or C{redis_url},
        or the one of a given C{hub}), or L{None} with the in-process one.
    @ivar broadcaster: a L{Broadcaster} for this server's hub.
    @ivar threadpool: the WSGI app's thread pool.
    @ivar sse_resource: the L{SSEResource}.
    @ivar root: the L{WSGIRoot} (mount more Twisted resources on it).
    @ivar site: the twisted.web C{Site}.
    @ivar publish_resource: the HTTP publish endpoint, or L{None}.
    @ivar pruning: the timer service that forgets expired history
        (L{Hub.prune}), whether or not clients are connected.
    """

    log = Logger()

    def __init__(
        self,
        wsgi_app: WSGIApplication,
        *,
        listen: str | None = None,
        sse_path: str = "/sse",
        client_path: str | None = "/sse.js",
        threads: int = 10,
        min_threads: int = 0,
        hub: Hub | None = None,
        publisher: Publisher | None = None,
        resources: Mapping[str, IResource] | None = None,
        reactor: Any = None,
        shutdown_timeout: float = 3.0,
        history_size: int | None = None,
        history_age: float | None = None,
        history_channels: int | None = None,
        presence_interval: float | None = None,
        stats_path: str | None = None,
        metrics_path: str | None = None,
        publish_path: str | None = None,
        publish_secret: str | None = None,
        publish_max_body: int = 64 * 1024,
        header_timeout: float | None = DEFAULT_HEADER_TIMEOUT,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        max_request_body: int | None = DEFAULT_MAX_REQUEST_BODY,
        access_log: bool = True,
        gc_freeze: bool = True,
        sched_batch: bool = True,
        options: StreamOptions | None = None,
        redis_url: str | None = None,
        backplane_url: str | None = None,
        **option_fields: Any,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        check_wsgi_app(wsgi_app, where="SSEServerService()")
        grouped = sorted(set(option_fields) & {group.key for group in GROUPS})
        if grouped:
            raise TypeError(
                f"SSEServerService() takes options one by one, not {grouped[0]}=; "
                f"make_service() and make_application() take the group objects"
            )
        check_option_names(option_fields, option_owners(), where="SSEServerService()")
        if reactor is None:
            from twisted.internet import reactor as global_reactor

            reactor = global_reactor
        if threads < 1 or min_threads < 0 or min_threads > threads:
            raise ValueError("need 1 <= threads and 0 <= min_threads <= threads")
        if options is None:
            options = StreamOptions(**option_fields)
        elif option_fields:
            raise TypeError("pass either options or option keywords, not both")
        self.reactor = reactor
        self.gc_freeze = gc_freeze
        self.listen = resolve_listen(listen)
        check_seconds("shutdown_timeout", shutdown_timeout)
        self.shutdown_timeout = shutdown_timeout
        history: dict[str, Any] = {}
        if history_size is not None:
            history["history_size"] = history_size
        if history_age is not None:
            history["history_age"] = history_age
        if history_channels is not None:
            history["history_channels"] = history_channels
        if presence_interval is not None:
            history["presence_interval"] = presence_interval
        if hub is not None and history:
            raise TypeError(
                "pass history_size/history_age/history_channels/presence_interval to your Hub, "
                "not with hub="
            )
        if hub is None:
            url = resolve_backplane_url(backplane_url, redis_url)
            backplane = open_backplane(url, reactor=reactor) if url is not None else None
            hub = Hub(clock=reactor, backplane=backplane, **history)
        self.hub = hub
        self.backplane: Backplane | None = hub.backplane if hub.backplane.shared else None
        self.broadcaster = Broadcaster(publisher or self.hub, reactor=reactor)
        self.broadcaster.check_channel = options.check_channel
        self.threadpool = WSGIThreadPool(min_threads, threads, "wsgi", sched_batch=sched_batch)
        self.wsgi_app = wsgi_app
        self.sse_resource = SSEResource(
            self.hub, reactor=reactor, threadpool=self.threadpool, options=options
        )
        # Views' responses may hold streams: they join the same streams.
        self.wsgi_resource = HoldingWSGIResource(
            reactor, self.threadpool, _compliant(wsgi_app), self.sse_resource.streams
        )
        self.root = WSGIRoot(self.wsgi_resource)
        self.root.mount(sse_path, self.sse_resource)
        if client_path is not None:
            self.root.mount(client_path, ClientScriptResource())
        self.publish_resource: PublishResource | None = None
        if publish_path is not None:
            if publish_secret is None:
                publish_secret = environment_value("publish_secret") or None
            self.publish_resource = PublishResource(
                self.broadcaster,
                secret=publish_secret,  # type: ignore[arg-type]  # checked there
                options=options,
                max_body=publish_max_body,
            )
            self.root.mount(publish_path, self.publish_resource)
        elif publish_secret is not None:
            raise ValueError("publish_secret given without publish_path")
        if stats_path is not None:
            self.root.mount(
                stats_path,
                StatsResource(
                    self.sse_resource, publish=self.publish_resource, backplane=self._stats_source()
                ),
            )
        if metrics_path is not None:
            self.root.mount(
                metrics_path,
                MetricsResource(
                    self.sse_resource, publish=self.publish_resource, backplane=self._stats_source()
                ),
            )
        for path, resource in (resources or {}).items():
            self.root.mount(path, resource, exact=False)
        # The stream takes no body and the publish endpoint a small one:
        # larger bodies are refused before they are read.
        body_limits = {sse_path: 0}
        if publish_path is not None:
            body_limits[publish_path] = publish_max_body
        self.site = StreamSite(
            self.root,
            header_timeout=header_timeout,
            idle_timeout=idle_timeout,
            max_request_body=max_request_body,
            access_log=access_log,
            body_limits=body_limits,
            stream_path=sse_path,
        )
        try:
            endpoint = serverFromString(reactor, with_backlog(self.listen))
        except ValueError as e:
            source = "listen" if listen else f"${LISTEN_ENV}"
            raise listen_error(self.listen, e, source=source) from e
        self.listening = StreamServerEndpointService(endpoint, self.site)
        # A port that cannot be had fails the start, instead of a logged
        # traceback and a process serving nothing.
        self.listening._raiseSynchronously = True
        self.listening.setServiceParent(self)
        # History expires on its own clock, whether or not anyone listens.
        self.pruning = TimerService(prune_interval(self.hub.history_age), self.hub.prune)
        self.pruning.clock = reactor
        self.pruning.setServiceParent(self)
        _BackplaneService(hub.backplane, hub).setServiceParent(self)  # type: ignore[no-untyped-call]

    def _stats_source(self) -> BackplaneStats | None:
        """The shared backplane, whose counters the stats endpoints show."""
        return self.backplane

    def privilegedStartService(self) -> None:
        """
        Listen (twistd calls this before it drops privileges).

        @raise ListenError: if the endpoint cannot be listened on; twistd
            then exits with its message as the last line.
        """
        try:
            super().privilegedStartService()  # type: ignore[no-untyped-call]
        except CannotListenError as e:
            failure = _cannot_listen(self.listen, e)
            self.log.critical("{message}", message=str(failure))
            raise failure from None

    def startService(self) -> None:
        """
        Start the thread pool, then listen (unless already listening).

        @raise ListenError: if the endpoint cannot be listened on.
        """
        self._was_started = True
        if self.gc_freeze:
            freeze_startup_objects()
        self.threadpool.start()
        try:
            super().startService()  # type: ignore[no-untyped-call]
        except CannotListenError as e:
            self.running = False
            self.threadpool.stop()
            raise _cannot_listen(self.listen, e) from None
        self.listening._waitingForPort.addCallback(self._listening)  # type: ignore[union-attr]

    def _listening(self, port: Any) -> Any:
        if port is None:  # listening failed later; already logged
            return None
        self._wait_for_backplane(port)
        address = port.getHost()
        url = browser_url(address, tls=self.listen.strip().lower().startswith("ssl:"))
        if url is None:
            self.log.info(
                "wsgi-sse serving on {address} (stream at {path})",
                address=address,
                path=self.sse_path,
            )
        else:
            self.log.info(
                "wsgi-sse serving on {address}: open {url} (stream at {path})",
                address=address,
                url=url,
                path=self.sse_path,
            )
        return port

    def _wait_for_backplane(self, port: Any) -> None:
        """
        Take no connection on C{port} until the shared backplane's reader
        has its position in the shared history, so that a stream opened
        here gets every event published after it opened, by any process.
        Connections made meanwhile wait in the listen backlog.  The wait
        ends when the first attempt fails (the process then delivers its
        own events only, until the backplane is reachable) and lasts at
        most the backplane's C{first_attempt_wait} (twice its timeout), the
        time events broadcast meanwhile wait for it too.
        """
        backplane = self.backplane
        ready = getattr(backplane, "ready", None)
        stop_reading = getattr(port, "stopReading", None)
        if ready is None or stop_reading is None:
            return
        waiting = ready()
        if waiting.called:
            return
        stop_reading()
        bound = float(getattr(backplane, "first_attempt_wait", 4.0))

        resumed: list[bool] = []

        def resume(_: object = None) -> None:
            if resumed:
                return
            resumed.append(True)
            if timer.active():
                timer.cancel()
            if self.running and getattr(port, "connected", False):
                port.startReading()

        def give_up() -> None:
            if self.running:
                self.log.warn(
                    "the backplane did not answer within {bound}s: taking connections; "
                    "until it does, this process delivers its own events only",
                    bound=bound,
                )
            resume()

        timer = self.reactor.callLater(bound, give_up)
        waiting.addCallback(resume)

    @property
    def sse_path(self) -> str:
        """The path of the event stream."""
        for segments, resource, _ in self.root._mounts:
            if resource is self.sse_resource:
                return "/" + "/".join(s.decode("utf-8") for s in segments)
        raise AssertionError("stream not mounted")  # pragma: no cover

    def stopService(self) -> Deferred[None]:
        """
        Tell HTTP/2 clients the server is going away (C{GOAWAY}), end the
        streams, close the idle HTTP/1.1 connections (the others close
        after their answers), stop listening, then stop the thread pool;
        done once the pool has stopped and the HTTP/2 connections are
        closed (both within C{shutdown_timeout}).
        """
        if not self.running:
            return succeed(None)
        h2_closed = self.site.go_away(self.shutdown_timeout)
        self.sse_resource.close()
        self.site.close_kept_alive()
        listening = super().stopService()  # type: ignore[no-untyped-call]
        pool_stopped = self._stop_threadpool()
        both = gatherResults([pool_stopped, h2_closed]).addCallback(lambda _: None)
        if listening is None:
            return both
        return listening.addBoth(lambda _: both)  # type: ignore[no-any-return]

    def _stop_threadpool(self) -> Deferred[None]:
        done: Deferred[None] = Deferred()
        pool = self.threadpool
        reactor = self.reactor

        def fire() -> None:
            if not done.called:
                done.callback(None)

        def give_up() -> None:
            if not done.called:
                busy = len(pool.working)
                self.log.warn(
                    "{busy} WSGI thread(s) still busy after {timeout}s; not waiting",
                    busy=busy,
                    timeout=self.shutdown_timeout,
                )
                done.callback(None)

        def stop() -> None:
            pool.stop()
            # The last answers may still sit in Twisted's buffers.
            reactor.callFromThread(
                lambda: self.wsgi_resource.flushed().addCallback(lambda _: fire())
            )

        timer = reactor.callLater(self.shutdown_timeout, give_up)
        done.addBoth(lambda r: (timer.cancel() if timer.active() else None, r)[1])
        threading.Thread(target=stop, name="wsgi-sse-pool-stop", daemon=True).start()
        return done


def browser_url(address: Any, *, tls: bool = False) -> str | None:
    """
    The URL to open in a browser on this machine for a listening address
    (C{http://127.0.0.1:8005/} for every interface), or L{None} for an
    address that is not TCP (a UNIX socket).
    """
    host, port = getattr(address, "host", None), getattr(address, "port", None)
    if not isinstance(host, str) or not isinstance(port, int):
        return None
    if host in {"0.0.0.0", ""}:
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}/"


def prune_interval(history_age: float) -> float:
    """
    Seconds between two prunings of the history: a quarter of C{history_age},
    between 0.5 and 60 s, so an event is forgotten at most that long after
    C{history_age} has passed.
    """
    return max(0.5, min(60.0, history_age / 4))


def resolve_listen(listen: str | None) -> str:
    """The endpoint to listen on: C{listen}, else C{$WSGI_SSE_LISTEN}, else C{tcp:8005}."""
    if listen:
        return listen
    return environment_value("listen") or DEFAULT_LISTEN


def option_owners() -> dict[str, str]:
    """
    Every keyword option of L{make_application}, mapped to where it belongs
    (for error messages).  May be called in any thread.
    """
    names = ["name", *(group.key for group in GROUPS)]
    for parameter in inspect.signature(SSEServerService.__init__).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY:
            names.append(parameter.name)
    names += [option.name for option in fields(StreamOptions) if option.init]
    group_objects = {g.key: f"the {g.key} group, a {g.cls.__name__}" for g in GROUPS}
    return {n: group_objects.get(n) or owner(n) or "a site option" for n in names}


def make_service(wsgi_app: WSGIApplication, **kwargs: Any) -> SSEServerService:
    """
    Build an L{SSEServerService} and make it the target of the module-level
    L{broadcast<wsgi_sse.broadcast>}.  Takes the same arguments as
    L{make_application}.  Call it in the main thread, before the reactor runs.

    @raise TypeError: for something other than a WSGI application, or an
        unknown option (the message names the closest valid one).
    @raise ValueError: for an option value that makes no sense, or a
        C{listen} that is not an endpoint string.
    @raise RuntimeError: when the backplane's client library is missing.
    """
    check_wsgi_app(wsgi_app, where="make_service()")
    check_option_names(kwargs, option_owners(), where="make_service()")
    kwargs = flatten_groups(kwargs)
    import crochet

    try:
        # Under twistd the reactor is not crochet's to run; crochet only
        # needs to know that for broadcast_and_wait().  A second call (or a
        # crochet.setup() done earlier by the command line) is fine.
        crochet.no_setup()
    except RuntimeError:
        pass
    service = SSEServerService(wsgi_app, **kwargs)
    set_broadcaster(service.broadcaster)
    # stream_token() in the app's views signs with this server's secret.
    set_token_secret(service.sse_resource.token_secret)
    return service


def make_application(
    wsgi_app: WSGIApplication,
    *,
    listen: str | None = None,
    sse_path: str = "/sse",
    threads: int = 10,
    name: str = "wsgi-sse",
    backplane_url: str | None = None,
    redis_url: str | None = None,
    **kwargs: Any,
) -> Componentized:
    """
    Build the Twisted application that C{twistd -ny server.py} runs: the
    WSGI app at the root, on its own thread pool, and the event stream at
    C{sse_path}.

    @param wsgi_app: any WSGI application (Bottle, Django, Flask, ...).
    @param listen: a Twisted endpoint string (C{"tcp:8005"},
        C{"tcp:8005:interface=127.0.0.1"}, C{"unix:/run/app.sock"}, ...);
        default: C{$WSGI_SSE_LISTEN}, else C{"tcp:8005"}.
    @param sse_path: where the stream is served (C{"/sse"}, C{"/events/live"}).
        Only that exact path; every other path goes to the WSGI app.
        C{client_path} (a keyword, default C{"/sse.js"}; L{None}: not served)
        is where the browser client module is served.
    @param threads: the WSGI thread pool's maximum size.
    @param name: the application's name (shown by twistd).
    @param backplane_url: share broadcasts with every process using this
        backplane, picked by the URL's scheme: C{redis://}, C{rediss://},
        C{unix://} (Redis, C{pip install wsgi-sse[redis]}),
        C{postgresql://}, C{postgres://} (PostgreSQL, C{pip install
        wsgi-sse[postgres]}); default: C{$WSGI_SSE_BACKPLANE_URL}, else
        none (in-process).
    @param redis_url: the older name of C{backplane_url} (and
        C{$WSGI_SSE_REDIS_URL} of C{$WSGI_SSE_BACKPLANE_URL}).
    @param kwargs: C{min_threads}, C{hub} (a L{Hub}, composed with a
        backplane built by hand if need be), C{publisher}, C{resources} (a
        mapping of paths to extra Twisted resources), C{reactor},
        C{shutdown_timeout}; C{history_size}, C{history_age} and
        C{history_channels} (the replay history of the default hub);
        C{presence_interval} (seconds between the presence reports sent
        to other processes through a shared backplane, default 10);
        C{stats_path} and C{metrics_path} (serve counters as JSON /
        Prometheus text there; off by default);
        C{publish_path}, C{publish_secret} (default: C{$WSGI_SSE_PUBLISH_SECRET})
        and C{publish_max_body} (the HTTP publish endpoint; off by default);
        C{header_timeout} (seconds a client has to send its request headers,
        default 30), C{idle_timeout} (seconds a kept-alive connection may stay
        silent between requests, default 180), C{max_request_body} (bytes a
        request body may have, default 64 MiB; larger is a 413);
        C{access_log} (a line per request, as C{twistd web} writes; default
        on: turn it off when the reverse proxy in front logs requests, it
        costs about a quarter of the server's CPU for a small page);
        C{gc_freeze} (default on: when the server starts, the objects alive
        then, the application included, are taken out of the cyclic garbage
        collector's scans, once per process, see L{freeze_startup_objects});
        C{sched_batch} (default on: on Linux the WSGI threads run under the
        C{SCHED_BATCH} scheduling policy, see L{WSGIThreadPool});
        and any L{StreamOptions} field
        (C{heartbeat}, C{retry}, C{authorize}, C{token_secret}, ...).  docs/options.md lists
        them all with their defaults.  The options of a group can also be
        given as one object: C{site=SiteOptions(...)}, C{stream=StreamOptions(...)},
        C{limits=LimitOptions(...)}, C{backplane=BackplaneOptions(...)},
        C{publish=PublishOptions(...)}.
    @raise TypeError: for something other than a WSGI application object (a
        C{"module:app"} string, say), or an unknown keyword (the message
        names the closest option and its group).
    @raise ValueError: for an option value that makes no sense, or a
        C{listen} that is not an endpoint string (C{"8000"}: write
        C{"tcp:8000"}).
    @raise RuntimeError: when the backplane URL's client library is not
        installed (the message gives the C{pip install} line).

    Call it in the main thread, from the C{.tac} file.  It also makes this
    server the target of L{broadcast<wsgi_sse.broadcast>}.
    """
    check_wsgi_app(wsgi_app)
    check_option_names(kwargs, option_owners())
    options = flatten_groups(kwargs)
    explicit = {
        "listen": listen,
        "sse_path": sse_path,
        "threads": threads,
        "backplane_url": backplane_url,
        "redis_url": redis_url,
    }
    for key, value in explicit.items():
        if key in options and value != _EXPLICIT_DEFAULTS[key]:
            raise TypeError(f"{key} is given twice: as a keyword and in a group object")
        options.setdefault(key, value)
    application: Componentized = Application(name)
    service = make_service(wsgi_app, **options)
    service.setServiceParent(application)  # type: ignore[no-untyped-call]
    if sys._getframe(1).f_globals.get("__name__") == "__main__":
        # `python server.py`: twistd runs the file under another name.
        atexit.register(_hint_never_started, service)
    return application


def _hint_never_started(service: SSEServerService) -> None:
    """
    At the exit of a program that built an application in C{__main__} and
    never started it (C{python server.py}), say how to run the file.
    """
    if not getattr(service, "_was_started", False):
        name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "server.py"
        print(
            f"{name} is a Twisted application file and served nothing: "
            f"run it with twistd -ny {name}",
            file=sys.stderr,
        )


_EXPLICIT_DEFAULTS: dict[str, Any] = dict(make_application.__kwdefaults__ or {})
