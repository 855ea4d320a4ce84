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
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Sequence

from twisted.internet.defer import Deferred
from twisted.python import usage
from twisted.python.failure import Failure

from ._config import BOOLEAN_WORDS, GROUPS, SETTINGS, Setting, _boolean

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from ._app import SSEServerService

__all__ = ["Options", "TwistdOptions", "console_main", "load_app", "main", "makeService"]

NONE_WORD = "none"
"""What a flag whose option may be L{None} takes for it (any case: C{None} too)."""


class _ExplicitNone:
    """A flag given C{none}: the option is L{None}, not left to its default."""

    def __repr__(self) -> str:
        return "none"


_NONE = _ExplicitNone()


class BadValueError(argparse.ArgumentTypeError, ValueError):
    """
    A flag's value that its converter refuses, with a message saying what
    it takes (argparse shows it as is; twistd's options catch C{ValueError}).
    """


def _converter(row: Setting) -> Callable[[str], Any]:
    """The converter of C{row}'s flag, saying in its errors what the flag takes."""
    convert = row.flag
    assert convert is not None
    if convert is _boolean:
        takes = BOOLEAN_WORDS
    elif convert in (int, float):
        takes = "an integer" if convert is int else "a number"
    else:
        takes = ""
    if row.nullable:
        takes = f"{takes} or {NONE_WORD}" if takes else ""

    def parse(text: str) -> Any:
        if row.nullable and text.strip().lower() == NONE_WORD:
            return _NONE
        try:
            return convert(text)
        except ValueError as e:
            raise BadValueError(f"expected {takes}, not {text!r}" if takes else str(e)) from e

    parse.__name__ = getattr(convert, "__name__", "value").lstrip("_")
    return parse


def _metavar(row: Setting) -> str:
    """How --help shows the value of C{row}'s flag."""
    if row.flag is _boolean:
        return "yes|no"
    return f"VALUE|{NONE_WORD}" if row.nullable else "VALUE"


def _help(row: Setting) -> str:
    """The --help text of C{row}'s flag."""
    text = f"{row.help} (default: {row.shown.replace('`', '')}"
    if row.flag is _boolean:
        text += f"; takes {BOOLEAN_WORDS}"
    elif row.nullable:
        text += f"; {NONE_WORD} for None"
    return text + ")"


# flag, converter, help -- shared by argparse and twistd's usage.Options, derived from
# the options table: every option with a converter has a flag.
_OPTIONS: tuple[tuple[str, Callable[[str], Any], str], ...] = tuple(
    (row.option[2:], _converter(row), _help(row)) for row in SETTINGS if row.flag is not None
)
_METAVARS = {row.option[2:]: _metavar(row) for row in SETTINGS if row.flag is not None}
_FLAG_TO_NAME = {row.option[2:]: row.name for row in SETTINGS if row.flag is not None}


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
    """The keywords of L{make_service} for the flags given (the others keep their defaults)."""
    return {
        name: None if values[flag] is _NONE else values[flag]
        for flag, name in _FLAG_TO_NAME.items()
        if values.get(flag) is not None
    }


APP_HELP = (
    "the WSGI application: module:attribute (myapp:app, mysite.wsgi:application), "
    "or a module, whose 'application' or else 'app' is used"
)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage of every option is --help's)."""

    def error(self, message: str) -> NoReturn:
        """Exit with status 2 and C{message}, in one line."""
        self.exit(2, f"{self.prog}: {message} (--help lists the options)\n")


def build_parser(prog: str = "python -m wsgi_sse") -> argparse.ArgumentParser:
    """The argument parser of C{python -m wsgi_sse} (and of C{wsgi-sse}, its other C{prog})."""
    from . import __version__

    parser = _Parser(
        prog=prog,
        description="Serve a WSGI application and a Server-Sent Events stream from one process. "
        "The app is served at /, the stream at --sse-path; the startup log shows the URL to open.",
    )
    parser.add_argument("app", help=APP_HELP)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    options = {flag: (convert, text) for flag, convert, text in _OPTIONS}
    for group in GROUPS:
        arguments = parser.add_argument_group(f"{group.title.lower()} options")
        for row in SETTINGS:
            flag = row.option[2:]
            if row.group == group.key and flag in options:
                convert, text = options[flag]
                arguments.add_argument(
                    row.option,
                    dest=flag,
                    default=None,
                    type=convert,
                    help=text,
                    metavar=_METAVARS[flag],
                )
    return parser


def _join_crochet() -> None:
    """
    Wait for crochet's threads once the reactor is stopping, so that the log
    lines still queued are written before the one error line that follows.
    """
    for thread in threading.enumerate():
        if thread.name in ("CrochetReactor", "CrochetLogWriter"):
            thread.join(5)


def main(argv: Sequence[str] | None = None, prog: str = "python -m wsgi_sse") -> int:
    """
    Run the server until SIGINT or SIGTERM, with the reactor in a crochet
    thread; return the exit status.  Call it in the main thread.

    A startup error (an unknown app, a bad option, a missing backplane
    library, a port in use) is one line on stderr and a non-zero status.
    """
    args = vars(build_parser(prog).parse_args(argv))
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    try:
        app = load_app(args["app"])
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
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

    try:
        service: SSEServerService = make_service(app, reactor=reactor, **_service_kwargs(args))
    except (TypeError, ValueError, RuntimeError) as e:
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]
        _join_crochet()
        print(f"{prog}: {e}", file=sys.stderr)
        return 2

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
        _join_crochet()
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - reported to the user as is
        print(f"{prog}: cannot listen on {service.listen}: {e}", file=sys.stderr)
        reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]
        return 1
    while not stop.wait(0.5):
        pass
    logging.getLogger("wsgi_sse").info("shutting down")
    try:
        # shutdown_timeout may be inf (wait for busy threads however long).
        wait = min(service.shutdown_timeout + 2, threading.TIMEOUT_MAX)
        crochet.run_in_reactor(service.stopService)().wait(wait)
    except Exception:
        logging.getLogger("wsgi_sse").exception("error while stopping")
    reactor.callFromThread(reactor.stop)  # type: ignore[attr-defined]
    for thread in threading.enumerate():
        if thread.name == "CrochetReactor":
            thread.join(5)
    return 0


class TwistdOptions(usage.Options):
    """Options of C{twistd wsgi-sse}."""

    optParameters = [["app", None, None, APP_HELP]] + [
        [flag, None, None, text, convert] for flag, convert, text in _OPTIONS
    ]

    def postOptions(self) -> None:
        """Check that an application was named."""
        if not self["app"]:
            raise usage.UsageError("--app module:attribute is required")


def makeService(options: TwistdOptions) -> SSEServerService:
    """Build the service that C{twistd wsgi-sse} runs (the plugin's entry point)."""
    from ._app import _report_in_one_line, make_service

    try:
        app = load_app(options["app"])
        return make_service(app, **_service_kwargs(dict(options)))
    except (TypeError, ValueError, RuntimeError) as e:
        # twistd lets an error of makeService through: one line, not a traceback.
        error = usage.UsageError(str(e))
        _report_in_one_line(error)
        raise error from e


Options = TwistdOptions
"""The name twistd's C{ServiceMaker} looks up."""


def console_main() -> None:
    """The ``wsgi-sse`` console script: same as ``python -m wsgi_sse``."""
    sys.exit(main(prog="wsgi-sse"))
