"""
Checking what a user configures, with errors that say what to write instead.

Everything here is pure and may be called in any thread.
"""

from __future__ import annotations

import difflib
import importlib
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

__all__ = [
    "BACKPLANE_CLIENTS",
    "BackplaneClient",
    "check_backplane_url",
    "check_option_names",
    "check_seconds",
    "check_wsgi_app",
    "listen_error",
]

OPTIONS_DOC = "https://wsgi-sse.readthedocs.io/en/latest/options/"
"""Where every option is described."""


def check_option_names(
    given: Iterable[str], valid: Mapping[str, str], *, where: str = "make_application()"
) -> None:
    """
    Refuse keyword arguments that are not options.

    @param given: the keyword names passed.
    @param valid: every valid name, mapped to where it belongs (C{"stream
        option (StreamOptions)"}).
    @param where: the function the user called, for the message.
    @raise TypeError: naming the first unknown argument, the closest valid
        name and where that one belongs.
    """
    for name in given:
        if name in valid:
            continue
        close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r} ({valid[close[0]]})?" if close else "."
        raise TypeError(
            f"{where} got an unexpected keyword argument {name!r}{hint} "
            f"Every option is listed at {OPTIONS_DOC}"
        )


def check_seconds(name: str, value: float, *, positive: bool = False) -> None:
    """
    Refuse a duration that is negative (or zero, with C{positive}), or not
    a number at all (NaN, which compares false with everything and would
    pass a plain C{value < 0}).

    @raise ValueError: naming the option and the value.
    """
    if not (value > 0 if positive else value >= 0):
        need = "be positive" if positive else "not be negative"
        raise ValueError(f"{name} must {need}, got {value!r}")


_PORT = re.compile(r"\d{1,5}")
_HOST_PORT = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")


def listen_error(listen: str, error: Exception, *, source: str = "listen") -> ValueError:
    """
    Explain why Twisted refused C{listen}, with the endpoint string that was
    probably meant (C{"8000"} → C{"tcp:8000"}, C{"localhost:8000"} →
    C{"tcp:8000:interface=127.0.0.1"}).

    @param source: where the string came from (C{"listen"}, or the
        environment variable it was read from).
    """
    text = listen.strip()
    suggestion = "'tcp:8005', 'tcp:8005:interface=127.0.0.1' or 'unix:/run/app.sock'"
    if _PORT.fullmatch(text):
        suggestion = f"'tcp:{text}' (every interface) or 'tcp:{text}:interface=127.0.0.1'"
    else:
        match = _HOST_PORT.fullmatch(text)
        if match:
            host, port = match.group("host").strip("[]"), match.group("port")
            if host.lower() == "localhost":
                host = "127.0.0.1"
            if host == "0.0.0.0":
                suggestion = f"'tcp:{port}'"
            elif ":" in host:
                escaped = host.replace(":", "\\:")
                suggestion = f"'tcp6:{port}:interface={escaped}'"
            else:
                suggestion = f"'tcp:{port}:interface={host}'"
    return ValueError(
        f"{source}={listen!r} is not a Twisted endpoint string ({error}); write {suggestion}"
    )


def check_wsgi_app(wsgi_app: object, *, where: str = "make_application()") -> None:
    """
    Refuse anything but a WSGI application object: a C{"module:app"} string
    (what the command line takes) in particular.

    @raise TypeError: saying what to pass instead.
    """
    if isinstance(wsgi_app, (str, bytes)):
        text = wsgi_app.decode() if isinstance(wsgi_app, bytes) else wsgi_app
        module, _, attribute = text.partition(":")
        names = module.replace(".", "_").isidentifier() and (attribute or "app").isidentifier()
        hint = f"from {module} import {attribute or 'app'}" if names else ""
        raise TypeError(
            f"{where} takes the WSGI application object, not the string {text!r}"
            + (f": import it ({hint}) and pass it" if hint else "")
            + f"; `python -m wsgi_sse {text}` is the command line that takes a name"
        )
    if not callable(wsgi_app):
        raise TypeError(
            f"{where} takes a WSGI application (a callable taking environ and "
            f"start_response), not {type(wsgi_app).__name__}"
        )


@dataclass(frozen=True, slots=True)
class BackplaneClient:
    """
    The client library a backplane URL scheme needs.

    @ivar name: the backplane's name, for messages (C{"Redis"}).
    @ivar module: the module to import (C{"redis"}).
    @ivar extra: the extra of C{pip install wsgi-sse[extra]} that installs it.
    """

    name: str
    module: str
    extra: str


BACKPLANE_CLIENTS: dict[str, BackplaneClient] = {
    "redis": BackplaneClient("Redis", "redis", "redis"),
    "rediss": BackplaneClient("Redis", "redis", "redis"),
    "unix": BackplaneClient("Redis", "redis", "redis"),
    "postgresql": BackplaneClient("PostgreSQL", "psycopg", "postgres"),
    "postgres": BackplaneClient("PostgreSQL", "psycopg", "postgres"),
}
"""Backplane URL schemes and the client library each needs; add a backplane's schemes here."""


def safe_url(url: str) -> str:
    """The URL without its password, for logs and error messages."""
    return re.sub(r"//([^:/@]*):[^@/]*@", r"//\1:***@", url)


def check_backplane_url(url: str) -> BackplaneClient:
    """
    Check that a backplane URL names a known backplane whose client library
    is installed; return that backplane's entry.

    @raise ValueError: for a scheme no backplane serves.
    @raise RuntimeError: when the client library cannot be imported, with
        the C{pip install} line that installs it.
    """
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    client = BACKPLANE_CLIENTS.get(scheme)
    if client is None:
        schemes = ", ".join(f"{s}://" for s in sorted(BACKPLANE_CLIENTS))
        raise ValueError(f"backplane URL {safe_url(url)!r}: the scheme must be one of {schemes}")
    try:
        importlib.import_module(client.module)
    except ImportError as e:
        raise RuntimeError(
            f"the {client.name} backplane ({scheme}://) needs the {client.module!r} package, "
            f"which cannot be imported ({e}): pip install 'wsgi-sse[{client.extra}]'"
        ) from e
    return client
