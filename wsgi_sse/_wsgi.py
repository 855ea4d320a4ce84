"""
twisted.web's WSGI container, without making the WSGI thread wait for the
reactor on every piece of a response.

C{twisted.web.wsgi.WSGIResource} hands each piece of a response body to the
reactor with C{blockingCallFromThread}: the WSGI thread sleeps until the
reactor has written it (the reactor only queues it for the socket), then
hands over one more call to finish the request.  Each page thus costs two
reactor wake-ups and a thread sleep and wake-up on top of the application.

L{WSGIResource} keeps everything the application sees (the environ,
C{start_response}, the C{write} callable, closing the body, the 500 for an
application error) and changes only the hand-off:

  - a body returned whole, as a list or tuple (Bottle, hand-written WSGI
    apps), is joined in the WSGI thread and handed to the reactor together
    with the status and headers, and the request finished, in one call the
    thread does not wait for;
  - other bodies (generators; Flask's and Django's response iterables) are
    handed over piece by piece without waiting, in order, then the request
    finished; every 256 KiB the thread waits for the reactor to catch up, so
    that a fast producer cannot queue more than that ahead of it.  Each
    piece is on its way before the next is asked for, as PEP 3333 requires;
  - the C{write} callable still waits for the reactor, as in Twisted.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure
from twisted.web.http import INTERNAL_SERVER_ERROR
from twisted.web.server import NOT_DONE_YET
from twisted.web.wsgi import WSGIResource as _TwistedWSGIResource
from twisted.web.wsgi import _WSGIResponse

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from twisted.python.threadpool import ThreadPool

__all__ = ["WSGIResource"]

MAX_AHEAD = 256 * 1024
"""Bytes of a piecewise body the WSGI thread may hand over before waiting for the reactor."""


def _nothing() -> None:
    pass


class _Response(_WSGIResponse):
    """One request's WSGI call; see the module docstring for what differs."""

    _unflushed: weakref.WeakSet[Any] | None = None

    def run(self) -> None:
        """
        Call the application, iterate its body and hand the response to the
        reactor.  Called in a WSGI thread.
        """
        reactor = self.reactor
        body: bytes | None = None
        try:
            result = self.application(self.environ, self.startResponse)
            if type(result) is list or type(result) is tuple:
                # The whole body is known: nothing has to reach the client
                # before the application is asked for more.
                for piece in result:
                    _check_bytes(piece)
                body = b"".join(result)
            else:
                ahead = 0
                for piece in result:
                    if piece:
                        _check_bytes(piece)
                        reactor.callFromThread(self._write_piece, self.started, piece)
                        self.started = True
                        ahead += len(piece)
                        if ahead > MAX_AHEAD:
                            # Calls run in order: once this one has, so has every write.
                            blockingCallFromThread(reactor, _nothing)
                            ahead = 0
                    if self._requestFinished:
                        break
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        except BaseException:  # noqa: BLE001 - any failure of the app is logged, as in Twisted
            reactor.callFromThread(self._error, self.started, *sys.exc_info())
        else:
            reactor.callFromThread(self._complete, self.started, body)
        self.started = True

    def _write_piece(self, started: bool, piece: bytes) -> None:
        """Write one piece of the body (the status and headers first).  Reactor thread."""
        if self._requestFinished:
            return
        if not started:
            self._sendResponseHeaders()  # type: ignore[no-untyped-call]
        self.request.write(piece)

    def _complete(self, started: bool, body: bytes | None) -> None:
        """Write what is left of the response and finish it.  Reactor thread."""
        if self._requestFinished:
            return
        if not started:
            self._sendResponseHeaders()  # type: ignore[no-untyped-call]
        if body:
            self.request.write(body)
        self.request.finish()
        transport = self.request.transport
        unflushed = self._unflushed
        if unflushed is not None and _buffered(transport):
            # Answered in the reactor turn the WSGI thread may have ended
            # in: a shutdown waiting for the pool must let these bytes out.
            unflushed.add(transport)

    def _error(self, started: bool, kind: Any, value: BaseException, traceback: Any) -> None:
        """Log an application error; answer 500 if nothing was sent yet.  Reactor thread."""
        self._log.failure("WSGI application error", failure=Failure(value, kind, traceback))
        if self._requestFinished:
            return
        if started:
            self.request.loseConnection()
        else:
            self.request.setResponseCode(INTERNAL_SERVER_ERROR)
            self.request.finish()


def _buffered(transport: Any) -> bool:
    """Whether C{transport} still holds bytes for the socket."""
    return bool(getattr(transport, "dataBuffer", b"") or getattr(transport, "_tempDataLen", 0))


def _check_bytes(piece: object) -> None:
    if not isinstance(piece, bytes):
        raise TypeError(f"WSGI body pieces must be bytes, not {type(piece).__name__}")


class WSGIResource(_TwistedWSGIResource):
    """
    C{twisted.web.wsgi.WSGIResource}, handing a whole-body response to the
    reactor in one call (see the module docstring).  Same arguments: the
    reactor, the thread pool the application runs in, the application.
    """

    def __init__(self, reactor: Any, threadpool: ThreadPool, application: WSGIApplication) -> None:
        super().__init__(reactor, threadpool, application)  # type: ignore[no-untyped-call]
        self._unflushed: weakref.WeakSet[Any] = weakref.WeakSet()

    def flushed(self, timeout: float = 1.0) -> Deferred[None]:
        """
        Fire once the answers finished so far have left Twisted's buffers
        for the kernel, or after C{timeout} seconds (a client that does not
        read).  For shutdown: the reactor drops what its connections still
        buffer when it stops.  Reactor thread.
        """
        done: Deferred[None] = Deferred()
        clock = self._reactor
        deadline = clock.seconds() + timeout

        def check() -> None:
            waiting = [t for t in self._unflushed if t.connected and _buffered(t)]
            if not waiting or clock.seconds() >= deadline:
                self._unflushed.clear()
                done.callback(None)
            else:
                clock.callLater(0.01, check)

        check()
        return done

    def render(self, request: Any) -> int:
        """Start the application in the thread pool.  Reactor thread."""
        response = _Response(  # type: ignore[no-untyped-call]
            self._reactor, self._threadpool, self._application, request
        )
        response._unflushed = self._unflushed
        response.start()  # type: ignore[no-untyped-call]
        return NOT_DONE_YET
