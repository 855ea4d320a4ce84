"""
The access log line of a finished request, formatted and written cheaply.

L{combined_line} gives exactly the line of twisted.web's
C{combinedLogFormatter} (the combined log format), stream tokens hidden,
in a third of its time: an f-string, and bytes that need no
escaping (nearly all of them) decoded rather than passed through C{repr}.
L{log_line} writes it where twistd's log observer would, as the same line,
through L{TextLog} (see there for when it falls back to a log event).

All functions: call in the reactor thread.
"""

from __future__ import annotations

import re
from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.logger import Logger
from twisted.python import log as legacy_log
from twisted.web.http import _escape

from ._textlog import TextLog
from ._tokens import may_hold_token, redact_tokens

__all__ = ["combined_line", "log_line", "redacting"]

# Bytes that twisted.web's _escape (a repr) gives back unchanged.
_NEEDS_ESCAPE = re.compile(rb"[^\x20\x21\x23-\x26\x28-\x5b\x5d-\x7e]")

# Access lines are events in twisted.python.log's namespace when written
# through twisted.python.log.logfile, as twisted.web's Site writes them.
_ACCESS = TextLog(Logger(namespace="twisted.python.log"))


def _text(value: bytes | str) -> str:
    """C{twisted.web.http._escape(value)}, without the repr when it changes nothing."""
    if isinstance(value, str):
        value = value.encode("ascii")
    if _NEEDS_ESCAPE.search(value) is None:
        return value.decode("ascii")
    return _escape(value)  # type: ignore[no-any-return]


def combined_line(timestamp: str, request: Any) -> str:
    """
    The combined log format line of C{request}, its C{token} query values
    redacted: C{combinedLogFormatter}'s line, character for character.
    """
    address = request.getClientAddress()
    ip = address.host if isinstance(address, (IPv4Address, IPv6Address)) else "-"
    uri = request.uri
    if may_hold_token(uri):
        uri = redact_tokens(uri)
    headers = request.requestHeaders
    referrer = headers.getRawHeaders(b"referer")
    agent = headers.getRawHeaders(b"user-agent")
    code = request.code
    length = request.sentLength or "-"
    return (
        f'"{_text(ip)}" - - {timestamp} '
        f'"{_text(request.method)} {_text(uri)} {_text(request.clientproto)}" {code:d} {length} '
        f'"{_text(referrer[-1] or b"-") if referrer else "-"}" '
        f'"{_text(agent[-1] or b"-") if agent else "-"}"'
    )


def redacting(formatter: Any) -> Any:
    """Wrap an access log formatter so that stream tokens never reach the log."""

    def format_line(timestamp: str, request: Any) -> str:
        if not may_hold_token(request.uri or b""):
            return formatter(timestamp, request)  # type: ignore[no-any-return]
        return formatter(timestamp, _RedactedRequest(request))  # type: ignore[no-any-return]

    return format_line


class _RedactedRequest:
    """A request as an access log formatter sees it, its C{token} values hidden."""

    def __init__(self, request: Any) -> None:
        self._request = request
        self.uri = redact_tokens(request.uri)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


def log_line(log_file: Any, line: str) -> None:
    """
    Write one access log line to C{log_file} (a twisted.web C{Site}'s):
    twistd's log (the same line as an event would give, written directly
    when possible) or a file of its own.
    """
    if log_file is legacy_log.logfile and _ACCESS.write(line):
        return
    log_file.write(line + "\n")
