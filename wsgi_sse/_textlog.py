"""
Log lines for a text log file, at a cost a busy server can pay per request.

Under C{twistd}, every log event goes to one observer: a
C{FileLogObserver} that formats the event as a line of text (a timestamp
through C{strftime}, the message through C{string.Formatter}, the
C{[namespace#level]} system) and writes it to stdout or C{twistd.log}.
That formatting costs tens of microseconds per event, more than
twisted.web spends parsing a small request; the access log pays it on every
request, and C{log_streams} twice per stream.

L{TextLog} writes the same line itself, when it can be sure it is the
same: the global log publisher has that one observer and nothing else, and
the observer's own formatter, asked once per second for a sample line,
shows the prefix every line of that second gets.  The line then costs a
C{str.format}, a dictionary look-up and the write and flush the observer
would have done, at the moment the observer would have done them (order and
durability as before).  With any other set-up (a custom C{--logger}, JSON
logs, another observer added by the application or a test, crochet's
logging bridge) each line is a full log event, exactly as before.

All methods: call in the reactor thread.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from twisted.logger import FileLogObserver, Logger, LogLevel, globalLogPublisher

__all__ = ["TextLog", "direct_target"]

_MARK = "\x00wsgi-sse\x00"


class _Target:
    """One text observer's file and the prefix its formatter gives a line."""

    __slots__ = ("_encoding", "_file", "_newline", "observer")

    def __init__(self, observer: Any, file: Any, encoding: str | None, newline: str) -> None:
        self.observer = observer
        self._file = file
        self._encoding = encoding
        self._newline = newline

    def write(self, prefix: str, text: str) -> None:
        if "\n" in text:
            text = text.replace("\n", self._newline)
        line = f"{prefix}{text}\n"
        out = self._file
        if self._encoding is None:
            out.write(line)
        else:
            out.write(line.encode(self._encoding))
        out.flush()

    def prefix(self, namespace: str, level: LogLevel, second: int) -> str | None:
        """The observer's prefix of a line logged in C{second}, or L{None}."""
        return _prefix(self.observer, namespace, level, second)


def _sample(observer: Any, namespace: str, level: LogLevel, when: float, text: str) -> Any:
    return observer.formatEvent(
        {
            "log_format": "{log_io}",
            "log_io": text,
            "log_time": when,
            "log_namespace": namespace,
            "log_level": level,
            "log_source": None,
            "log_logger": None,
        }
    )


def _prefix(observer: Any, namespace: str, level: LogLevel, second: int) -> str | None:
    try:
        first = _sample(observer, namespace, level, float(second), _MARK)
        last = _sample(observer, namespace, level, second + 0.999, _MARK)
    except Exception:  # noqa: BLE001 - an observer we cannot predict
        return None
    if first != last or not isinstance(first, str) or not first.endswith(_MARK + "\n"):
        return None
    prefix = first[: -len(_MARK) - 1]
    if _MARK in prefix or "\n" in prefix:
        return None
    return prefix


def direct_target(publisher: Any = globalLogPublisher) -> _Target | None:
    """
    The file log observer to write lines to directly, if it is the only
    observer of C{publisher} and its lines can be predicted; else L{None}.
    """
    observers = getattr(publisher, "_observers", None)
    if type(observers) is not list or len(observers) != 1:
        return None
    observer = observers[0]
    if type(observer) is not FileLogObserver:
        return None
    file = getattr(observer, "_outFile", None)
    encoding = getattr(observer, "_encoding", "?")
    if file is None or encoding not in (None, "utf-8"):
        return None
    second = int(time.time())
    if _prefix(observer, "wsgi_sse", LogLevel.info, second) is None:
        return None
    # How the formatter continues a message over several lines.
    try:
        sample = _sample(observer, "wsgi_sse", LogLevel.info, second, f"{_MARK}\n{_MARK}")
    except Exception:  # noqa: BLE001 - an observer we cannot predict
        return None
    if not isinstance(sample, str) or not sample.endswith(f"{_MARK}\n"):
        return None
    start = sample.find(_MARK) + len(_MARK)
    newline = sample[start : -len(_MARK) - 1]
    if not newline.startswith("\n") or _MARK in newline:
        return None
    return _Target(observer, file, encoding, newline)


def _format(format: str, fields: dict[str, Any]) -> str | None:
    """C{format} with C{fields}, or L{None} if it fails (Twisted's formatter then says why)."""
    try:
        return format.format(**fields)
    except Exception:  # noqa: BLE001 - the event path reports it
        return None


class TextLog:
    """
    Lines at one level in one namespace, written as the global text log
    observer would write their events, or logged as events.

    @param logger: the C{Logger} whose events these lines are: its
        namespace names them (C{[namespace#level]}), and it logs them as
        events when they cannot be written directly.
    @param level: their level.
    @param clock: the time of a line (C{Logger}'s events take C{time.time()}).
    """

    __slots__ = (
        "_clock",
        "_level",
        "_logger",
        "_namespace",
        "_observers",
        "_prefix",
        "_publisher",
        "_second",
        "_target",
    )

    def __init__(
        self,
        logger: Logger,
        level: LogLevel = LogLevel.info,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._namespace = logger.namespace
        self._level = level
        self._publisher = logger.observer
        self._logger = logger
        self._target: _Target | None = None
        self._observers: tuple[Any, ...] | None = None
        self._second = -1
        self._prefix: str | None = None

    def emit(self, format: str, **fields: Any) -> None:
        """
        Log a message: C{format} (PEP 3101, fields by name as in
        C{Logger.info}) with C{fields}.
        """
        target = self._direct()
        prefix = self._prefix_now(target) if target is not None else None
        if target is not None and prefix is not None:
            text = _format(format, fields)
            if text is not None and self._put(target, prefix, text):
                return
        self._logger.emit(self._level, format, **fields)

    def write(self, text: str) -> bool:
        """
        Write one line of C{text}, already formatted, as an event of this
        log would be written; L{False} if it cannot be written that way
        (the caller then logs it as an event).
        """
        target = self._direct()
        if target is None:
            return False
        prefix = self._prefix_now(target)
        return prefix is not None and self._put(target, prefix, text)

    def _put(self, target: _Target, prefix: str, text: str) -> bool:
        try:
            target.write(prefix, text)
        except Exception:  # noqa: BLE001 - the event path reports it
            # Events from now on, until the observers change: the log
            # system disables an observer whose file fails, and says so.
            self._target = None
            return False
        return True

    def _direct(self) -> _Target | None:
        observers = tuple(getattr(self._publisher, "_observers", ()))
        if observers != self._observers:
            # The observers changed (or this is the first line): look again.
            self._observers = observers
            self._second = -1
            self._target = direct_target(self._publisher)
        return self._target

    def _prefix_now(self, target: _Target) -> str | None:
        second = int(self._clock())
        if second != self._second:
            self._prefix = target.prefix(self._namespace, self._level, second)
            self._second = second
        return self._prefix
