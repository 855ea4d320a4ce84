"""
Logging streams as they open and close, at a cost a reconnect storm can pay.

A log event formatted as text by twistd's log observer costs tens of
microseconds: the two lines of a stream add about a third to the CPU time
of accepting it, and after a restart every browser reconnects at once.
By default L{StreamLog} therefore counts streams and logs one summary line
per busy interval; with C{log_streams=True} it logs one line per stream
opened and closed, with their fields, through L{TextLog} (the same line in
a tenth of the time when twistd's text log is the only observer).

All methods: call in the reactor thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from ._textlog import TextLog

if TYPE_CHECKING:
    from twisted.internet.interfaces import IDelayedCall, IReactorTime
    from twisted.logger import Logger

__all__ = ["SUMMARY_INTERVAL", "StreamLog"]

SUMMARY_INTERVAL = 10.0
"""Seconds between summary lines while streams open or close."""


class StreamLog:
    """
    Report streams opening and closing: one line each, or a summary.

    The summary, C{"streams: {opened} opened, {closed} closed in the last
    {interval}s; {open} open"}, is logged C{interval} seconds after the first
    stream opened or closed since the previous summary, or as soon as the
    last open stream closes; nothing is logged while nothing happens.

    @param log: where lines go.
    @param per_stream: log each stream (the C{log_streams} option).
    @param clock: returns the reactor to schedule the summary on.
    @param open_count: returns how many streams are open now.
    @param interval: seconds a summary covers.
    """

    __slots__ = (
        "_clock",
        "_closed",
        "_log",
        "_open_count",
        "_opened",
        "_summary_log",
        "_timer",
        "interval",
    )

    def __init__(
        self,
        log: Logger,
        *,
        per_stream: bool,
        clock: Callable[[], IReactorTime],
        open_count: Callable[[], int],
        interval: float = SUMMARY_INTERVAL,
    ) -> None:
        self._log: TextLog | None = TextLog(log) if per_stream else None
        self._summary_log = log
        self._clock = clock
        self._open_count = open_count
        self.interval = interval
        self._opened = 0
        self._closed = 0
        self._timer: IDelayedCall | None = None

    def opened(
        self,
        peer: str,
        channels: tuple[str, ...],
        last_event_id: str | None,
        replayed: int,
        reset: bool,
    ) -> None:
        """A stream has started."""
        log = self._log
        if log is not None:
            log.emit(
                "stream opened for {peer}: {channels}, resuming from {last_event_id!r}, "
                "{replayed} events replayed",
                peer=peer,
                channels=list(channels),
                last_event_id=last_event_id,
                replayed=replayed,
                reset=reset,
            )
            return
        self._opened += 1
        if self._timer is None:
            self._arm()

    def closed(self, peer: str, channels: tuple[str, ...], reason: str) -> None:
        """A stream has ended."""
        log = self._log
        if log is not None:
            log.emit(
                "stream closed for {peer}: {reason}",
                peer=peer,
                channels=list(channels),
                reason=reason,
            )
            return
        self._closed += 1
        if not self._open_count():
            # Nothing open any more: say so now, and leave no timer behind.
            self.flush()
        elif self._timer is None:
            self._arm()

    def flush(self) -> None:
        """Log the pending summary now (if anything happened) and stop its timer."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        opened, closed = self._opened, self._closed
        if not opened and not closed:
            return
        self._opened = self._closed = 0
        self._summary_log.info(
            "streams: {opened} opened, {closed} closed in the last {interval}s; {open} open",
            opened=opened,
            closed=closed,
            interval=self.interval,
            open=self._open_count(),
        )

    def _arm(self) -> None:
        self._timer = self._clock().callLater(self.interval, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.flush()
