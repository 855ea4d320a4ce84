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
    finished; every 256 KiB the thread waits for the reactor to catch up, so
    that a fast producer cannot queue more than that ahead of it.  Each
    piece is on its way before the next is asked for, as PEP 3333 requires;
  - the C{write} callable still waits for the reactor, as in Twisted.

The environ itself is twisted.web's, completed as above, built in one pass
(L{build_environ}: about 9 µs per request instead of 21).

Rendering: call in the reactor thread (twisted.web does).
"""

from __future__ import annotations

import re
import sys
import weakref
from typing import TYPE_CHECKING, Any, Sequence

from twisted.internet.defer import Deferred
from twisted.internet.threads import blockingCallFromThread
from twisted.python.failure import Failure
from twisted.web.http import INTERNAL_SERVER_ERROR
from twisted.web.server import NOT_DONE_YET
from twisted.web.wsgi import WSGIResource, _ErrorStream, _InputStream, _WSGIResponse, _wsgiString

from ._client import close_after_response, site_closing
from ._lean import finish_response

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from twisted.python.threadpool import ThreadPool
    from twisted.web.server import Request

__all__ = ["WSGIContainer", "build_environ", "complete_environ"]


MAX_AHEAD = 256 * 1024
"""Bytes of a piecewise body the WSGI thread may hand over before waiting for the reactor."""


def _nothing() -> None:
    pass


class _Response(_WSGIResponse):
    """One request's WSGI call; see the module docstring for what differs."""

    _unflushed: weakref.WeakSet[Any] | None = None

    def __init__(self, reactor: Any, threadpool: Any, application: Any, request: Any) -> None:
        # twisted.web's, with the environ built by build_environ.
        self.started = False
        self.reactor = reactor
        self.threadpool = threadpool
        self.application = application
        self.request = request
        request.notifyFinish().addBoth(self._finished)
        self.environ = build_environ(request)
        # The application sets every response header (no default Content-Type).
        request.defaultContentType = None

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
            self._sendHead()
        self.request.write(piece)

    def _complete(self, started: bool, body: bytes | None) -> None:
        """Write what is left of the response and finish it.  Reactor thread."""
        if self._requestFinished:
            return
        if started:
            # Bytes went out first (the WSGI write() callable, or pieces).
            if body:
                self.request.write(body)
            self.request.finish()
        else:
            self._sendHead()
            # The whole response at once: head and body in one write.
            finish_response(self.request, body or b"")
        transport = self.request.transport
        unflushed = self._unflushed
        if unflushed is not None and _buffered(transport):
            # Answered in the reactor turn the WSGI thread may have ended
            # in: a shutdown waiting for the pool must let these bytes out.
            unflushed.add(transport)

    def _sendHead(self) -> None:
        """
        Set the status and headers the application gave on the request.  On
        a server shutting down, the answer also says C{Connection: close}
        (its connection closes once the answer is out), whether or not the
        shutdown found the connection among those being read.  Reactor
        thread.
        """
        self._sendResponseHeaders()  # type: ignore[no-untyped-call]
        if site_closing(self.request):
            close_after_response(self.request)

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


class WSGIContainer(WSGIResource):
    """A C{WSGIResource} whose environ describes the body the app will read."""

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
        environ["SERVER_NAME"] = _wsgiString(request.getRequestHostname())
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
    match = _HOST.match(host) if host is not None else None
    name = match.group("host") if match is not None else b""
    port = match.group("port") if match is not None else None
    environ["SERVER_NAME"] = name.decode("latin-1") if name else "localhost"
    if port is not None:
        environ["SERVER_PORT"] = port.decode("latin-1")
    else:
        environ["SERVER_PORT"] = "443" if request.isSecure() else "80"


_HOST = re.compile(rb"^\[?(?P<host>.*?)\]?(?::(?P<port>\d+))?$")
"""A C{Host} header's name (an IPv6 address without brackets) and port, as twisted.web reads it."""


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
