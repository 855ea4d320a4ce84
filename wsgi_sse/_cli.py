"""
Running a WSGI app without writing a server.py: ``python -m wsgi_sse`` and
the ``twistd wsgi-sse`` plugin share the options defined here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING, Any, Callable, Sequence

from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.python.failure import Failure

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from ._app import SSEServerService

__all__ = ["Options", "TwistdOptions", "console_main", "load_app", "main", "makeService"]

# name, default, converter, help -- shared by argparse and twistd's usage.Options.
_OPTIONS: tuple[tuple[str, Any, Callable[[str], Any], str], ...] = (
    ("listen", None, str, "Twisted endpoint to listen on (default: $WSGI_SSE_LISTEN or tcp:8005)"),
    ("sse-path", "/sse", str, "path of the event stream"),
    ("threads", 10, int, "maximum size of the WSGI thread pool"),
    ("heartbeat", 15.0, float, "seconds between keep-alive comments (0: off)"),
    ("retry", 3000, int, "reconnection delay sent to browsers, in milliseconds"),
    ("max-connections", 10_000, int, "open streams in total"),
    (
        "redis-url",
        None,
        str,
        "share broadcasts with other processes through this Redis "
        "(default: $WSGI_SSE_REDIS_URL, else none)",
    ),
)


def load_app(spec: str) -> WSGIApplication:
    """
    Import a WSGI application named C{"package.module:attribute"}.

    Without C{:attribute}, the module's C{application} or C{app} is used.
    The current directory is importable, as it is for C{python -m}.

    @raise ValueError: if the module or attribute does not exist, or the
        object found is not callable.
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise ValueError(f"no module in {spec!r}; expected module:attribute")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"cannot import {module_name!r}: {e}") from e
    names = [attribute] if attribute else ["application", "app"]
    for name in names:
        obj: Any = module
        try:
            for part in name.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        if not callable(obj):
            raise ValueError(f"{module_name}:{name} is not a WSGI application (not callable)")
        return obj  # type: ignore[no-any-return]
    raise ValueError(f"{module_name!r} has no attribute {' or '.join(map(repr, names))}")


def _service_kwargs(values: dict[str, Any]) -> dict[str, Any]:
    return {
        "listen": values["listen"],
        "sse_path": values["sse-path"],
        "threads": values["threads"],
        "heartbeat": values["heartbeat"],
        "retry": values["retry"],
        "max_connections": values["max-connections"],
        "redis_url": values["redis-url"],
    }


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of C{python -m wsgi_sse}."""
    parser = argparse.ArgumentParser(
        prog="python -m wsgi_sse",
        description="Serve a WSGI application and a Server-Sent Events stream.",
    )
    parser.add_argument("app", help="the WSGI application, as module:attribute")
    for name, default, convert, text in _OPTIONS:
        parser.add_argument("--" + name, dest=name, default=default, type=convert, help=text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the server until SIGINT or SIGTERM, with the reactor in a crochet
    thread; return the exit status.  Call it in the main thread.
    """
    args = vars(build_parser().parse_args(argv))
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        app = load_app(args["app"])
    except ValueError as e:
        print(f"python -m wsgi_sse: {e}", file=sys.stderr)
        return 2

    import crochet

    # setup() must come before make_service()'s no_setup(), which is then a no-op.
    crochet.setup()
    from twisted.internet import reactor

    from ._app import ListenError, make_service

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    service: SSEServerService = make_service(app, reactor=reactor, **_service_kwargs(args))

    @crochet.run_in_reactor
    def start() -> Any:
        service.startService()
        # Hand crochet a Deferred of its own: it consumes the result of the
        # one it waits on, and the listening service needs the port later to
        # stop listening when shutdown begins.
        ready: Deferred[Any] = Deferred()

        def forward(result: Any) -> Any:
            ready.callback(result)
            return None if isinstance(result, Failure) else result

        waiting = service.listening._waitingForPort
        assert waiting is not None  # set by startService()
        waiting.addBoth(forward)
        return ready

    try:
        start().wait(30)
    except ListenError as e:
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]
        # Let crochet's threads write the log lines still queued, so that
        # this one line is the last.
        for thread in threading.enumerate():
            if thread.name in ("CrochetReactor", "CrochetLogWriter"):
                thread.join(5)
        print(f"python -m wsgi_sse: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - reported to the user as is
        print(f"python -m wsgi_sse: cannot listen on {service.listen}: {e}", file=sys.stderr)
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]
        return 1
    while not stop.wait(0.5):
        pass
    logging.getLogger("wsgi_sse").info("shutting down")
    try:
        crochet.run_in_reactor(service.stopService)().wait(service.shutdown_timeout + 2)
    except Exception:
        logging.getLogger("wsgi_sse").exception("error while stopping")
    reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]
    for thread in threading.enumerate():
        if thread.name == "CrochetReactor":
            thread.join(5)
    return 0


class TwistdOptions(usage.Options):
    """Options of C{twistd wsgi-sse}."""

    optParameters = [["app", None, None, "the WSGI application, as module:attribute"]] + [
        [name, None, default, text, convert] for name, default, convert, text in _OPTIONS
    ]

    def postOptions(self) -> None:
        """Check that an application was named."""
        if not self["app"]:
            raise usage.UsageError("--app module:attribute is required")


def makeService(options: TwistdOptions) -> SSEServerService:
    """Build the service that C{twistd wsgi-sse} runs (the plugin's entry point)."""
    from ._app import make_service

    try:
        app = load_app(options["app"])
    except ValueError as e:
        raise usage.UsageError(str(e)) from e
    return make_service(app, **_service_kwargs(dict(options)))


Options = TwistdOptions
"""The name twistd's C{ServiceMaker} looks up."""


def console_main() -> None:
    """The ``wsgi-sse`` console script: same as ``python -m wsgi_sse``."""
    sys.exit(main())
