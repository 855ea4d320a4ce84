"""
The WSGI container: twisted.web's, its environ completed the way WSGI servers
such as waitress give it, and its responses handed to the reactor without
making the WSGI thread wait on every piece.

twisted.web reads a request's whole body (de-chunking it) before the app is
called, but describes it as it came off the wire: a chunked body keeps
C{HTTP_TRANSFER_ENCODING: chunked} and an empty C{CONTENT_LENGTH}.
Frameworks then read nothing (Flask: an empty body) or try to de-chunk it a
second time (Bottle: a 400).  L{WSGIContainer} gives the app the body's real
length, no transfer coding, and C{wsgi.input_terminated}.

C{twisted.web.wsgi.WSGIResource} hands each piece of a response body to the
reactor with C{blockingCallFromThread}: the WSGI thread sleeps until the
reactor has written it (the reactor only queues it for the socket), then
hands over one more call to finish the request.  Each page thus costs two
reactor wake-ups and a thread sleep and wake-up on top of the application.
L{WSGIContainer} keeps everything the application sees (the environ,
C{start_response}, the C{write} callable, closing the body, the 500 for an
application error) and changes only the hand-off:

  - a body returned whole, as a list or tuple (Bottle, hand-written WSGI
    apps), is joined in the WSGI thread and handed to the reactor together
    with the status and headers, and the request finished, in one call the
    thread does not wait for;
  - other bodies (generators; Flask's and Django's response iterables) are
    handed over piece by piece without waiting, in order, then the request
    finished; every 256 KiB the thread waits for the reactor to catch up and,
    while the connection holds more than it can send (a client slow to read),
    for it to drain, so that a fast producer cannot queue more than that
    ahead of the client.  Each piece is on its way before the next is asked
    for, as PEP 3333 requires;
  - the C{write} callable still waits for the reactor, as in Twisted, and
    for a slow client the same way; called once the response has ended (the
    client went away), it raises C{ConnectionError}, so that the application
    stops.

What the application answers is checked the way WSGI servers such as
waitress check it: C{start_response} refuses a status or header HTTP cannot
carry (L{check_head}), a body returned without C{start_response} is an
error (a 500), and no more than the application's own C{Content-Length} is
sent (after a shorter body the connection closes).

The environ itself is twisted.web's, completed as above, built in one pass
(L{build_environ}: about 9 µs per request instead of 21).

Rendering: call in the reactor thread (twisted.web does).
"""

from __future__ import annotations

import re
import sys
import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterable, NamedTuple, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure
from twisted.web.http import INTERNAL_SERVER_ERROR, NO_BODY_CODES
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET
from twisted.web.wsgi import WSGIResource, _ErrorStream, _InputStream, _WSGIResponse
from zope.interface import implementer

from ._client import (
    close_after_response,
    cut_response,
    h2_stream,
    site_closing,
    unsent_bytes,
)
from ._lean import finish_response, split_host

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from twisted.python.threadpool import ThreadPool
    from twisted.web.server import Request

__all__ = ["WSGIContainer", "build_environ", "complete_environ"]


MAX_AHEAD = 256 * 1024
"""
Bytes of a piecewise body the WSGI thread may hand over before waiting for
the reactor, and for the connection to drain if its client reads slowly.
"""


class _EndedError(ConnectionError):
    """The WSGI C{write} callable was called after its response ended."""


@implementer(IPushProducer)
class _Drain:
    """
    What a piecewise body's connection says of its send buffer: registered
    as the request's streaming producer, it is paused while the connection
    holds more than it can send (Twisted's transports pause their producer
    past 64 KiB) and resumed once that went out.  Reactor thread.

    @ivar paused: whether the connection's buffer is full.
    @ivar waiting: fired when the WSGI thread may go on: the buffer drained,
        or the connection is going away.
    """

    def __init__(self) -> None:
        self.paused = False
        self.waiting: Deferred[None] | None = None

    def pauseProducing(self) -> None:
        """The connection's buffer is full."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The connection's buffer drained."""
        self.paused = False
        self.release()

    def stopProducing(self) -> None:
        """The connection is going away."""
        self.paused = False
        self.release()

    def release(self) -> None:
        """Let the WSGI thread waiting on this connection go on."""
        waiting, self.waiting = self.waiting, None
        if waiting is not None:
            waiting.callback(None)


class _Response(_WSGIResponse):
    """One request's WSGI call; see the module docstring for what differs."""

    _unflushed: weakref.WeakSet[Any] | None = None
    _head: _Head | None = None
    _length: int | None = None
    _sent = 0
    _too_long = False
    _ahead = 0
    _drain: _Drain | None = None
    _pause_timer: Any = None
    max_pause: float | None = 60.0

    def __init__(self, reactor: Any, threadpool: Any, application: Any, request: Any) -> None:
        # twisted.web's, with the environ built by build_environ.
        self.started = False
        self.reactor = reactor
        self.threadpool = threadpool
        self.application = application
        self.request = request
        request.notifyFinish().addBoth(self._finished)
        self.environ = build_environ(request)
        # The body is the application's (wsgi.input) for as long as it runs:
        # taken from the request, which would close it when the client goes
        # away (and once the response is finished); closed after the call.
        self._content = request.content
        request.content = None
        # The application sets every response header (no default Content-Type).
        request.defaultContentType = None

    def startResponse(
        self,
        status: str,
        headers: list[tuple[str, str]],
        excInfo: Any = None,  # noqa: N803 - twisted.web's name
    ) -> Callable[[bytes], None]:
        """
        The WSGI C{start_response} callable: twisted.web's, which checks the
        types of C{status} and C{headers}, and also checks that they can be
        sent (L{check_head}), so that a response head HTTP cannot carry is
        an error of the application, raised here.  WSGI thread.

        @raise ValueError: for a status or a header HTTP cannot carry.
        @raise RuntimeError: when called again without C{exc_info}
            (PEP 3333: a fatal error of the application).
        """
        if excInfo is None and self._head is not None:
            raise RuntimeError("start_response called a second time without exc_info")
        super().startResponse(status, headers, excInfo)  # type: ignore[no-untyped-call]
        code, reason, length = check_head(status, headers)
        bodiless = code in NO_BODY_CODES or self.request.method == b"HEAD"
        self._head = _Head(code, reason, headers)
        self._length = None if bodiless else length
        # Reset Content has no content (RFC 9110 15.3.6), but unlike 204 it
        # is framed as any response: its body is dropped, quietly (as if
        # already past a Content-Length of 0), and it says Content-Length: 0
        # (L{_sendHead}).  (Again with exc_info: the new status decides.)
        self._too_long = code == 205
        if code == 205:
            self._length = 0
        return self.write

    def write(self, data: bytes) -> None:
        """
        The WSGI C{write} callable: hand C{data} to the reactor (the status
        and headers first) and wait until it has been written there, as in
        twisted.web.  WSGI thread.

        @raise TypeError: if C{data} is not bytes.
        @raise ConnectionError: once the response has ended (the client went
            away, or its answer failed), so that the application stops
            producing it.
        """
        _check_bytes(data)
        if self._requestFinished:
            raise _EndedError("the response has ended: the client went away, or its answer failed")
        head = None if self.started else self._head
        data = self._fit(data)
        try:
            blockingCallFromThread(self.reactor, self._write_piece, head, data)
        finally:
            self.started = True
        self._handed(len(data))

    def _handed(self, size: int) -> None:
        """
        Count C{size} more bytes handed to the reactor; past L{MAX_AHEAD},
        wait until the reactor has written them and the connection can take
        more (L{_drained}).  WSGI thread.
        """
        self._ahead += size
        if self._ahead > MAX_AHEAD:
            self._ahead = 0
            # Calls run in order: once this one has, so has every write.
            blockingCallFromThread(self.reactor, self._drained)

    def _fit(self, piece: bytes) -> bytes:
        """
        C{piece}, cut to what the application's own C{Content-Length} still
        leaves room for (logged once): a client must not read the surplus
        as the start of the next response.  WSGI thread.
        """
        length = self._length
        if length is None:
            return piece
        room = length - self._sent
        if len(piece) > room:
            piece = piece[: max(room, 0)]
            if not self._too_long:
                self._too_long = True
                self._log.warn(
                    "WSGI application sent more than its Content-Length ({length} bytes)"
                    " for {path}; the surplus was not sent",
                    length=length,
                    path=self.environ.get("PATH_INFO"),
                )
        self._sent += len(piece)
        return piece

    def _short(self) -> bool:
        """
        Whether the body sent is shorter than the application's own
        C{Content-Length} (logged): the connection must close after it
        (over HTTP/2, the stream is reset instead).  WSGI thread.
        """
        length = self._length
        if length is None or self._sent >= length or self._requestFinished:
            # (A client that went away cut the body short itself.)
            return False
        h2 = h2_stream(self.request) is not None
        self._log.warn(
            "WSGI application sent {sent} bytes of the {length} its Content-Length"
            " announced for {path}; {cut}",
            sent=self._sent,
            length=length,
            path=self.environ.get("PATH_INFO"),
            cut="its stream is reset" if h2 else "the connection is closed after it",
        )
        return True

    def run(self) -> None:
        """
        Call the application, iterate its body and hand the response to the
        reactor; close the body (its C{close()}, once) however that ends.
        Called in a WSGI thread.
        """
        try:
            self._call()
        finally:
            content = self._content
            if content is not None:
                self._content = None
                content.close()

    def _call(self) -> None:
        """L{run}, but for closing the request's body after it.  WSGI thread."""
        reactor = self.reactor
        body: bytes | None = None
        try:
            result = self.application(self.environ, self.startResponse)
            try:
                if type(result) is list or type(result) is tuple:
                    # The whole body is known: nothing has to reach the client
                    # before the application is asked for more.
                    for piece in result:
                        _check_bytes(piece)
                    body = self._fit(b"".join(result))
                else:
                    self._iterate(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if self._head is None and not self._requestFinished:
                raise RuntimeError("the WSGI application did not call start_response")
            short = self._short()
        except _EndedError:
            pass  # write() after the end: nothing left to answer, nor to report
        except BaseException:  # noqa: BLE001 - any failure of the app is logged, as in Twisted
            reactor.callFromThread(self._error, self.started, *sys.exc_info())
        else:
            head = None if self.started else self._head
            reactor.callFromThread(self._complete, head, body, short)
        self.started = True

    def _iterate(self, result: Iterable[bytes]) -> None:
        """
        Hand the pieces of a body that is not a list or tuple to the reactor
        as they come, without waiting but every L{MAX_AHEAD} bytes (then
        also for a slow client to take them); stop at the client's
        disconnect, or once the body passes its C{Content-Length}.  WSGI
        thread.
        """
        reactor = self.reactor
        for piece in result:
            if piece:
                _check_bytes(piece)
                head = self._head
                if head is None:
                    raise RuntimeError("the WSGI application did not call start_response")
                piece = self._fit(piece)
                if piece:
                    reactor.callFromThread(self._write_piece, None if self.started else head, piece)
                    self.started = True
                    self._handed(len(piece))
                if self._too_long:
                    break
            if self._requestFinished:
                break

    def _drained(self) -> Deferred[None] | None:
        """
        Whether the WSGI thread may hand over more of the body now (L{None})
        or once the connection has sent what it holds (a L{Deferred}).  The
        first call registers the request's L{_Drain}; a client that reads
        nothing for C{max_pause} seconds loses its connection.  Reactor
        thread.
        """
        if self._requestFinished:
            return None
        drain = self._drain
        if drain is None:
            request = self.request
            if request.producer is not None:
                return None  # someone else's: no back-pressure to learn of
            drain = self._drain = _Drain()
            request.registerProducer(drain, True)
            # (Twisted's channel does not tell a producer registered late.)
            channel: Any = request.channel
            drain.paused = bool(getattr(channel, "_waitingForTransport", False))
            stream = h2_stream(request)
            if stream is not None:
                registered = getattr(stream[0], "producer_registered", None)
                if registered is not None:  # a StreamSite's HTTP/2 connection
                    registered(stream[1])
        if not drain.paused:
            return None
        waiting = drain.waiting = Deferred()
        if self.max_pause is not None:
            self._pause_timer = self.reactor.callLater(self.max_pause, self._stalled)
            waiting.addBoth(self._stop_pause_timer)
        return waiting

    def _stop_pause_timer(self, result: object) -> object:
        """The wait for the client ended: cancel its C{max_pause} clock."""
        timer, self._pause_timer = self._pause_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        return result

    def _stalled(self) -> None:
        """The client read nothing for C{max_pause} seconds: drop it.  Reactor thread."""
        self._pause_timer = None
        self._log.info(
            "dropped a client that read nothing of {path} for {seconds} s",
            path=self.request.path,
            seconds=self.max_pause,
        )
        self._requestFinished = True
        cut_response(self.request, "stalled", abort=True)
        if self._drain is not None:
            self._drain.release()

    def _finished(self, ignored: object) -> None:
        """The request ended (answered, or the client went): stop waiting on it."""
        self._requestFinished = True
        if self._drain is not None:
            self._drain.release()

    def _let_go(self) -> None:
        """Unregister the request's L{_Drain}, before the request ends.  Reactor thread."""
        drain = self._drain
        if drain is not None and self.request.producer is drain:
            self.request.unregisterProducer()

    def _write_piece(self, head: _Head | None, piece: bytes) -> None:
        """
        Write one piece of the body, after the status and headers C{head}
        unless they went before.  Reactor thread.
        """
        if self._requestFinished:
            return
        try:
            if head is not None:
                self._sendHead(head)
            self.request.write(piece)
        except Exception:  # noqa: BLE001 - reported, and the request ended
            self._abandon()

    def _complete(self, head: _Head | None, body: bytes | None, short: bool) -> None:
        """
        Write what is left of the response, the status and headers C{head}
        first unless they went before, and finish it; close the connection
        after it when the body was C{short} of its C{Content-Length}.
        Reactor thread.
        """
        if self._requestFinished:
            return
        request = self.request
        self._let_go()
        if short and h2_stream(request) is not None:
            # A stream ended short of its Content-Length is malformed (RFC
            # 9113, 8.1.1), and its connection is shared: it is reset
            # after what was written.
            try:
                if head is not None:
                    self._sendHead(head)
                if body:
                    request.write(body)
            except Exception:  # noqa: BLE001 - reported, and the request ended
                self._abandon()
                return
            cut_response(request, "body short of its Content-Length")
            return
        try:
            if head is None:
                # Bytes went out first (the WSGI write() callable, or pieces).
                if body:
                    request.write(body)
                if short:
                    close_after_response(request)
                request.finish()
            else:
                self._sendHead(head)
                if short:
                    close_after_response(request)
                # The whole response at once: head and body in one write.
                finish_response(request, body or b"")
        except Exception:  # noqa: BLE001 - reported, and the request ended
            self._abandon()
            return
        transport = request.transport
        unflushed = self._unflushed
        if unflushed is not None and unsent_bytes(transport):
            # Answered in the reactor turn the WSGI thread may have ended
            # in: a shutdown waiting for the pool must let these bytes out.
            unflushed.add(transport)

    def _sendHead(self, head: _Head) -> None:
        """
        Set the status and headers C{head} on the request.  On a server
        shutting down, the answer also says C{Connection: close} (its
        connection closes once the answer is out), whether or not the
        shutdown found the connection among those being read.  Reactor
        thread.
        """
        request = self.request
        code = head.code
        request.setResponseCode(code, head.reason)
        add = request.responseHeaders.addRawHeader
        if code == 204 or code == 205:
            # A 204 must not say Content-Length (RFC 9110 8.6), a 205's is 0.
            for name, value in head.headers:
                if name.lower() not in ("server", "date", "content-length"):
                    add(name.encode("latin-1"), value.encode("latin-1"))
            if code == 205:
                add(b"Content-Length", b"0")
        else:
            for name, value in head.headers:
                # Don't allow the application to control these required headers.
                if name.lower() not in ("server", "date"):
                    add(name.encode("latin-1"), value.encode("latin-1"))
        if site_closing(request):
            close_after_response(request)

    def _abandon(self) -> None:
        """
        Log the error being handled, which the response could not be sent
        for, and end the request: a 500 if nothing was written yet, else
        the connection dropped.  Reactor thread.
        """
        self._log.failure("cannot send the WSGI response to {path}", path=self.request.path)
        self._requestFinished = True
        request = self.request
        if not request.startedWriting and not request.finished:
            # The head may be half set: answer with none of it.
            request.responseHeaders = Headers()
            close_after_response(request)
        self._fail()

    def _error(self, started: bool, kind: Any, value: BaseException, traceback: Any) -> None:
        """Log an application error; answer 500 if nothing was sent yet.  Reactor thread."""
        self._log.failure("WSGI application error", failure=Failure(value, kind, traceback))
        if self._requestFinished:
            return
        self._fail()

    def _fail(self) -> None:
        """
        End a request whose response failed: a 500 if nothing was written
        yet, else the connection dropped.  Reactor thread.
        """
        request = self.request
        if request.finished or request._disconnected:
            return
        self._let_go()
        if request.startedWriting:
            cut_response(request, "the response failed")
            return
        try:
            request.setResponseCode(INTERNAL_SERVER_ERROR)
            request.finish()
        except Exception:  # noqa: BLE001 - the last resort
            self._log.failure("cannot answer 500 to {path}", path=request.path)
            request.loseConnection()


class _Head(NamedTuple):
    """A response's status and headers, as the application gave them, checked."""

    code: int
    reason: bytes
    headers: list[tuple[str, str]]


_STATUS = re.compile(r"([1-5][0-9]{2}) ([\t\x20-\x7e\x80-\xff]*)\Z")
_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+\Z")
# Control characters (RFC 9110 5.5: a field value is visible characters,
# spaces and tabs) and what Latin-1 cannot encode.
_NOT_IN_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")
_statuses: dict[str, tuple[int, bytes]] = {}
_names: set[str] = set()
# Headers about the connection, not the response, which only the server
# may send (PEP 3333; RFC 9110 7.6.1), as waitress and wsgiref refuse them.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)


def check_head(status: str, headers: list[tuple[str, str]]) -> tuple[int, bytes, int | None]:
    """
    Check that a WSGI application's response head can be sent, as WSGI
    servers do in C{start_response}; return its status code, its reason
    phrase and the C{Content-Length} it gives (L{None} without one).

    C{status} must be as L{parse_status} reads it; header names must be
    HTTP tokens and not hop-by-hop (C{Connection}, C{Transfer-Encoding}
    and the others PEP 3333 reserves to the server), values Latin-1
    without control characters but tabs (CR, LF, NUL and the others: RFC
    9110 5.5), and a C{Content-Length} a number of bytes (the same one if
    given twice).

    >>> check_head("404 Not Found", [("Content-Length", "9")])
    (404, b'Not Found', 9)
    >>> check_head("200", [])
    Traceback (most recent call last):
    ...
    ValueError: invalid WSGI status '200': three digits (100 to 599), a space and a reason phrase

    @raise ValueError: for anything HTTP cannot carry.
    """
    code, reason = parse_status(status)
    length: int | None = None
    for name, value in headers:
        if name not in _names:
            if _TOKEN.match(name) is None:
                raise ValueError(f"invalid WSGI response header name {name!r}: not an HTTP token")
            if name.lower() in _HOP_BY_HOP:
                raise ValueError(
                    f"WSGI response header {name!r} is hop-by-hop: the server sets it (PEP 3333)"
                )
            if len(_names) < 1024:
                _names.add(name)
        if not (value.isascii() and value.isprintable()) and _NOT_IN_VALUE.search(value):
            raise ValueError(
                f"invalid value of the WSGI response header {name}: {value!r}"
                " (Latin-1 without control characters but tabs)"
            )
        if len(name) == 14 and name.lower() == "content-length":
            digits = value.strip(" \t")
            if not (digits.isascii() and digits.isdigit()) or (
                length is not None and int(digits) != length
            ):
                raise ValueError(f"invalid WSGI Content-Length {value!r}")
            length = int(digits)
    return code, reason, length


def parse_status(status: str) -> tuple[int, bytes]:
    """
    The code and the reason phrase of a WSGI application's C{status}:
    three digits, a space and a reason phrase of printable Latin-1
    characters (tabs and spaces included, CR and LF not).  The code is a
    final one, 200 to 599: an interim response (1xx) has no body and is
    followed by the final one (RFC 9110 15.2), which a WSGI application
    cannot send after it, and C{101 Switching Protocols} would tell the
    client to stop speaking HTTP.

    >>> parse_status("201 Created")
    (201, b'Created')
    >>> parse_status("103 Early Hints")
    Traceback (most recent call last):
    ...
    ValueError: invalid WSGI status '103 Early Hints': an interim (1xx) status ...

    @raise ValueError: for a status HTTP cannot carry.
    """
    parsed = _statuses.get(status)
    if parsed is None:
        match = _STATUS.match(status)
        if match is None:
            raise ValueError(
                f"invalid WSGI status {status!r}: three digits (100 to 599), a space"
                " and a reason phrase"
            )
        if match[1][0] == "1":
            raise ValueError(
                f"invalid WSGI status {status!r}: an interim (1xx) status cannot answer a request"
            )
        parsed = int(match[1]), match[2].encode("latin-1")
        if len(_statuses) < 256:
            _statuses[status] = parsed
    return parsed


def _check_bytes(piece: object) -> None:
    if not isinstance(piece, bytes):
        raise TypeError(f"WSGI body pieces must be bytes, not {type(piece).__name__}")


class WSGIContainer(WSGIResource):
    """
    A C{WSGIResource} whose environ describes the body the app will read.

    @ivar max_pause: seconds a client may read nothing of a streamed body
        (the WSGI thread waiting for it) before its connection is dropped;
        L{None}: no limit.
    """

    def __init__(self, reactor: Any, threadpool: ThreadPool, application: WSGIApplication) -> None:
        super().__init__(reactor, threadpool, application)  # type: ignore[no-untyped-call]
        self._unflushed: weakref.WeakSet[Any] = weakref.WeakSet()
        self.max_pause: float | None = 60.0

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
            waiting = [t for t in self._unflushed if t.connected and unsent_bytes(t)]
            if not waiting or clock.seconds() >= deadline:
                self._unflushed.clear()
                done.callback(None)
            else:
                clock.callLater(0.01, check)

        check()
        return done

    def render(self, request: Request) -> Any:
        """Build the environ, complete it, and run the app in the thread pool."""
        self.response_for(request).start()
        return NOT_DONE_YET

    def response_for(self, request: Request) -> _WSGIResponse:
        """The WSGI call that will answer C{request}, its environ completed.  Reactor thread."""
        response = _Response(
            self._reactor,
            self._threadpool,
            self._application,
            request,
        )
        response._unflushed = self._unflushed
        response.max_pause = self.max_pause
        return response


def build_environ(request: Request) -> dict[str, Any]:
    """
    The environ of C{request}: twisted.web's, completed by
    L{complete_environ}, built in one pass (a third of the time).  Over a
    UNIX socket, where twisted.web's own fails (the connection has no IP
    addresses), the addresses are L{_socket_addresses}'s.

    A request header whose name has an underscore (C{X_Auth_User}) is left
    out, as waitress, gunicorn and Django's development server leave it
    out: its key (C{HTTP_X_AUTH_USER}) would be that of the header with
    dashes, which a reverse proxy sets, and its value would replace that
    header's or stand in for it.
    """
    prepath, postpath = request.prepath, request.postpath
    query = request.uri.partition(b"?")[2]
    headers = request.requestHeaders
    content_type = headers.getRawHeaders(b"content-type")
    content_length = headers.getRawHeaders(b"content-length")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method.decode("latin-1"),
        "SCRIPT_NAME": (b"/" + b"/".join(prepath)).decode("latin-1") if prepath else "",
        "PATH_INFO": (b"/" + b"/".join(postpath)).decode("latin-1") if postpath else "",
        "QUERY_STRING": query.decode("latin-1"),
        "CONTENT_TYPE": content_type[-1].decode("latin-1") if content_type else "",
        "CONTENT_LENGTH": content_length[-1].decode("latin-1") if content_length else "",
        "SERVER_PROTOCOL": request.clientproto.decode("latin-1"),
    }
    peer: Any = request.getClientAddress()
    local: Any = request.getHost()
    if isinstance(getattr(peer, "host", None), str) and isinstance(
        getattr(local, "port", None), int
    ):
        # TCP (IPv4, IPv6): twisted.web's.
        environ["REMOTE_ADDR"] = peer.host
        environ["REMOTE_PORT"] = str(peer.port)
        environ["SERVER_NAME"] = _server_name(request, local.host)
        environ["SERVER_PORT"] = str(local.port)
    else:
        _socket_addresses(environ, request)
    coded = False
    for name, values in headers.getAllRawHeaders():
        if b"_" in name:
            # X_Auth_User would pass for (or overwrite) X-Auth-User.
            continue
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if len(values) == 1:
            environ[key] = values[0].decode("latin-1").replace("\n", " ")
        else:
            # RFC 9110 joins with ", "; cookie pairs with "; " (see complete_environ).
            separator = "; " if key == "HTTP_COOKIE" else ", "
            environ[key] = separator.join([v.decode("latin-1") for v in values]).replace("\n", " ")
        if key == "HTTP_TRANSFER_ENCODING":
            coded = True
    environ["wsgi.version"] = (1, 0)
    environ["wsgi.url_scheme"] = "https" if request.isSecure() else "http"
    environ["wsgi.run_once"] = False
    environ["wsgi.multithread"] = True
    environ["wsgi.multiprocess"] = False
    environ["wsgi.errors"] = _ErrorStream()
    environ["wsgi.input"] = _InputStream(request.content)
    # What complete_environ changes.
    environ["wsgi.input_terminated"] = True
    if coded:
        del environ["HTTP_TRANSFER_ENCODING"]
    if coded or not environ["CONTENT_LENGTH"]:
        length = _remaining(request.content)
        if coded or length:
            environ["CONTENT_LENGTH"] = str(length)
    if not environ["CONTENT_LENGTH"]:
        del environ["CONTENT_LENGTH"]
    if not environ["CONTENT_TYPE"]:
        del environ["CONTENT_TYPE"]
    return environ


def _server_name(request: Request, local: str) -> str:
    """
    C{SERVER_NAME}: the host of the C{Host} header (an IPv6 address
    without its brackets), or C{local}, the server's own address, when the
    header is missing, empty or not a valid host (PEP 3333: never empty).
    """
    host = request.getHeader(b"host")
    if host is not None:
        parts = split_host(host)
        if parts is not None and parts[0]:
            return parts[0].decode("latin-1")
    return local


def _socket_addresses(environ: dict[str, Any], request: Request) -> None:
    """
    Set C{REMOTE_ADDR}, C{SERVER_NAME} and C{SERVER_PORT} in C{environ} for
    a request whose connection has no IP addresses: a UNIX socket's, where
    a reverse proxy on the same host is the client.

    C{REMOTE_ADDR} is C{"localhost"} (as waitress gives it) and there is no
    C{REMOTE_PORT}.  C{SERVER_NAME} and C{SERVER_PORT} come from the
    C{Host} header, as the URL the client asked for: its name and port, or
    the scheme's default port (80, or 443 over TLS); without a C{Host}
    header, C{localhost}.
    """
    environ["REMOTE_ADDR"] = "localhost"
    environ.pop("REMOTE_PORT", None)
    host = request.getHeader(b"host")
    parts = split_host(host) if host is not None else None
    name, port = parts if parts is not None else (b"", b"")
    environ["SERVER_NAME"] = name.decode("latin-1") if name else "localhost"
    if name and port:
        environ["SERVER_PORT"] = port.decode("latin-1")
    else:
        environ["SERVER_PORT"] = "443" if request.isSecure() else "80"


def complete_environ(environ: dict[str, Any], request: Request) -> None:
    """
    Complete the environ twisted.web built the way waitress builds it.

    - The body twisted.web has already read in full: its length in
      C{CONTENT_LENGTH} when it came with a transfer coding (chunked) or,
      over HTTP/2, without a length; no C{HTTP_TRANSFER_ENCODING}; and
      C{wsgi.input_terminated = True} (reading C{wsgi.input} to its end is
      always safe).
    - No C{CONTENT_LENGTH} or C{CONTENT_TYPE} when the request has none
      (twisted.web sets them to C{""}, which breaks the common
      C{int(environ.get("CONTENT_LENGTH", 0))}).
    - A header sent several times is joined with C{", "} (RFC 9110), not
      C{","}; C{Cookie} headers with C{"; "}, as cookie parsers expect.
    - A header whose name has an underscore is left out (see
      L{build_environ}).
    """
    headers: dict[str, Sequence[bytes]] = {}
    underscored: list[str] = []
    for name, values in request.requestHeaders.getAllRawHeaders():
        key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if b"_" in name:
            underscored.append(key)
            continue
        headers[key] = values
        if len(values) > 1 and key in environ:
            environ[key] = _joined(key, values)
    for key in underscored:
        # twisted.web gave the key the value of whichever header came last.
        if key in headers:
            environ[key] = _joined(key, headers[key])
        else:
            environ.pop(key, None)
    environ["wsgi.input_terminated"] = True
    coded = environ.pop("HTTP_TRANSFER_ENCODING", None) is not None
    if coded or not environ.get("CONTENT_LENGTH"):
        # Chunked over HTTP/1.1, or an HTTP/2 body sent without a length.
        length = _remaining(request.content)
        if coded or length:
            environ["CONTENT_LENGTH"] = str(length)
    if not environ.get("CONTENT_LENGTH"):
        environ.pop("CONTENT_LENGTH", None)
    if not environ.get("CONTENT_TYPE"):
        environ.pop("CONTENT_TYPE", None)


def _joined(key: str, values: Sequence[bytes]) -> str:
    """
    The environ value of the header of C{key} sent as C{values}: joined
    with C{", "} (RFC 9110); cookie pairs with C{"; "} (RFC 6265; HTTP/2
    sends each cookie in a header of its own, RFC 9113 8.2.3).
    """
    separator = "; " if key == "HTTP_COOKIE" else ", "
    return separator.join([v.decode("latin-1") for v in values]).replace("\n", " ")


def _remaining(content: Any) -> int:
    """The bytes left to read in a request body's file (none: C{0})."""
    if content is None:
        return 0
    position = content.tell()
    content.seek(0, 2)
    end = content.tell()
    content.seek(position)
    return int(end - position)
