"""
Streams held by WSGI views: the GRIP hold instruction in a view's response
turns it into an event stream, served by the reactor.

A view answers with C{Grip-Hold: stream} and C{Grip-Channel: a, b} (the
GRIP protocol of Pushpin and django-grip), its own headers and an optional
first body.  L{HoldingWSGIResource} runs the WSGI app like Twisted's
C{WSGIResource}; when the response carries the instruction, the body is
collected in the WSGI thread, which is then free, and the request is handed
to L{Streams<wsgi_sse._streams.Streams>} in the reactor thread: the
C{Grip-*} headers are removed, the head and first body sent, and the
connection stays open on the channels like any C{/sse} stream.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, NamedTuple
from urllib.parse import quote

from twisted.logger import Logger
from twisted.web.http_headers import Headers
from twisted.web.server import NOT_DONE_YET

from ._client import cut_response
from ._encoding import encode_event
from ._names import check_identity, validate_channel
from ._request import GripHold, Refused, parse_grip, parse_last_event_id
from ._streams import STREAM_HEADERS, Streams, peer_of
from ._wsgi import WSGIContainer, parse_status

if TYPE_CHECKING:
    from _typeshed import OptExcInfo
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from twisted.python.threadpool import ThreadPool
    from twisted.web.server import Request

__all__ = ["HoldingWSGIResource", "hold_body", "hold_headers"]

_GRIP_HOLD = "grip-hold"


def _channel_name(channel: object) -> str:
    name = validate_channel(channel)
    if "," in name or ";" in name:
        raise ValueError(f"channel {name!r} must not contain ',' or ';' (GRIP separators)")
    if name != name.strip():
        raise ValueError(f"channel {name!r} must not start or end with white space")
    return name


def hold_headers(*channels: str, identity: str | None = None) -> list[tuple[str, str]]:
    """
    The response headers that make a WSGI view's response an event stream
    on C{channels}: C{Grip-Hold}, C{Grip-Channel} and the stream's
    C{Content-Type} and C{Cache-Control}.  May be called in any thread.

    >>> hold_headers("job-42", "jobs")[:2]
    [('Grip-Hold', 'stream'), ('Grip-Channel', 'job-42, jobs')]

    C{identity} names who the stream belongs to, for
    L{presence<wsgi_sse.presence>} and L{disconnect<wsgi_sse.disconnect>}
    (the user the view authenticated); it travels to the server in a
    C{Wsgi-Sse-Identity} header, which is removed before the response is
    sent, like the C{Grip-*} headers.

    @raise TypeError: if a channel or the identity is not a str.
    @raise ValueError: for no channel, or a name that cannot be a channel
        (empty, control characters, C{,} or C{;}); for an identity a stream
        cannot carry (empty, longer than 256 characters, control
        characters).
    """
    if not channels:
        raise ValueError("hold at least one channel")
    names = [_channel_name(c) for c in channels]
    headers = [
        ("Grip-Hold", "stream"),
        ("Grip-Channel", ", ".join(dict.fromkeys(names))),
        ("Content-Type", "text/event-stream; charset=utf-8"),
        ("Cache-Control", "no-cache"),
    ]
    owner = check_identity(identity)
    if owner is not None:
        headers.append(("Wsgi-Sse-Identity", quote(owner, safe="")))
    return headers


def hold_body(initial: object = None) -> bytes:
    """
    The first body of a held stream: C{initial}, if not L{None}, as an
    C{init} event (C{addEventListener("init", ...)}), else nothing.  May be
    called in any thread.

    @raise TypeError: if C{initial} cannot be encoded (see
        L{broadcast<wsgi_sse.broadcast>}).
    """
    return b"" if initial is None else encode_event(initial, event="init")


class _Hold:
    """What the holding wrapper learned of one response (WSGI thread)."""

    __slots__ = ("body", "decided", "error", "hold", "status")

    def __init__(self) -> None:
        self.decided = False
        self.hold: GripHold | None = None
        self.error: str | None = None
        self.status = ""
        self.body: list[bytes] = []

    @property
    def holding(self) -> bool:
        return self.hold is not None or self.error is not None


class _Marks(NamedTuple):
    """Where the hub stood when a view started (reactor thread)."""

    last_id: str
    revocations: int


class _Chain:
    """The app's response, with the chunks read ahead of Twisted put back."""

    def __init__(self, first: list[bytes], rest: Iterator[bytes], result: Iterable[bytes]) -> None:
        self._first = first
        self._rest = rest
        self._result = result

    def __iter__(self) -> Iterator[bytes]:
        yield from self._first
        yield from self._rest

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            close()


class HoldingWSGIResource(WSGIContainer):
    """
    Run a WSGI app like Twisted's C{WSGIResource} (with the environ of
    L{WSGIContainer<wsgi_sse._wsgi.WSGIContainer>}), and turn the responses
    that carry a GRIP hold instruction into event streams.

    Responses without one are served as C{WSGIResource} serves them.  Call
    in the reactor thread (twisted.web does).

    @param reactor: the reactor.
    @param threadpool: the WSGI app's thread pool.
    @param application: the WSGI app.
    @param streams: the streams of the server's L{SSEResource
        <wsgi_sse.SSEResource>} (its C{streams} attribute): held streams
        share its limits, heartbeats, stats and shutdown.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        threadpool: ThreadPool,
        application: WSGIApplication,
        streams: Streams,
    ) -> None:
        super().__init__(reactor, threadpool, application)
        self.streams = streams
        self.max_pause = streams.options.max_pause

    def render(self, request: Request) -> int:
        """Run the app in the thread pool (reactor thread)."""
        response = self.response_for(request)
        # Where a stream the view holds starts: events published while the
        # view runs are sent after its first body; and the revocations made
        # while it runs, which must reach that stream.
        hub = self.streams.hub
        mark = _Marks(hub.last_id, hub.revocation_mark)
        response.application = self._holding(response, request, mark)
        response.start()
        return NOT_DONE_YET

    def _holding(self, response: Any, request: Request, mark: _Marks) -> WSGIApplication:
        app = self._application
        options = self.streams.options
        reactor = self._reactor
        max_body = options.max_buffer

        def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            # In a WSGI thread.
            state = _Hold()

            def intercept(
                status: str,
                headers: list[tuple[str, str]],
                exc_info: OptExcInfo | None = None,
            ) -> Callable[[bytes], object]:
                state.decided = True
                if exc_info is None and any(n.lower() == _GRIP_HOLD for n, _ in headers):
                    try:
                        state.hold = parse_grip(headers, options)
                        state.error = None
                    except ValueError as e:
                        state.hold = None
                        state.error = str(e)
                    state.status = status
                    return state.body.append
                state.hold = state.error = None
                return start_response(status, headers, exc_info)

            result: Iterable[bytes] = app(environ, intercept)
            if state.decided and not state.holding:
                # The common case: an ordinary response, served untouched.
                return result
            ahead: list[bytes] = []
            try:
                iterator = iter(result)
                if not state.decided:
                    # start_response is called by the first iteration at the
                    # latest (a generator app).
                    for chunk in iterator:
                        ahead.append(chunk)
                        if chunk or state.decided:
                            break
            except BaseException:
                # The body is closed whatever ends it (PEP 3333).
                close = getattr(result, "close", None)
                if close is not None:
                    close()
                raise
            if not state.holding:
                return _Chain(ahead, iterator, result)
            try:
                body = state.body
                body.extend(ahead)
                size = sum(len(b) for b in body)
                for chunk in iterator:
                    if not isinstance(chunk, bytes):
                        raise TypeError(f"a WSGI body must be bytes, not {type(chunk).__name__}")
                    body.append(chunk)
                    size += len(chunk)
                    if size > max_body:
                        state.hold = None
                        state.error = f"the first body is larger than max_buffer ({max_body} bytes)"
                        break
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            # The response is the stream's now: Twisted must not finish it
            # when this returns (it checks this flag in the reactor thread,
            # after the call below has run there).
            response._requestFinished = True
            reactor.callFromThread(self._hold, request, state, mark, response)
            return []

        return application

    def _hold(self, request: Request, state: _Hold, mark: _Marks, response: Any) -> None:
        """Serve a held response as a stream (reactor thread)."""
        # Twisted's response object lives as long as the stream (the request
        # holds its finish callback): let go of the environ and the app.
        response.environ = None
        response.application = None
        if getattr(request, "_disconnected", False) or request.finished:
            return
        try:
            self._serve_hold(request, state, mark)
        except Exception:  # noqa: BLE001 - a view's response we cannot send
            self.log.failure("cannot serve the stream a view held at {path}", path=request.path)
            if request.startedWriting:
                # Never seen as a whole answer: over HTTP/2 the stream is
                # reset (an END_STREAM would end it cleanly).
                cut_response(request, "the stream failed")
            elif not request.finished:
                request.responseHeaders = Headers()
                self.streams.finish_refused(request, Refused(500, "invalid stream hold"))

    def _serve_hold(self, request: Request, state: _Hold, mark: _Marks) -> None:
        streams = self.streams
        hold = state.hold
        if hold is None:
            self.log.error(
                "a view held an invalid stream at {path}: {error}",
                path=request.path,
                error=state.error,
            )
            streams.finish_refused(request, Refused(500, f"invalid stream hold: {state.error}"))
            return
        try:
            last_event_id = parse_last_event_id(
                request.getHeader(b"last-event-id"), (request.args or {}).get(b"lastEventId", [])
            )
            peer = peer_of(request)
            streams.check_limits(peer)
        except Refused as refused:
            streams.finish_refused(request, refused)
            return
        try:
            status, message = parse_status(state.status)
        except ValueError:
            streams.finish_refused(request, Refused(500, f"invalid status {state.status!r}"))
            return
        if streams.hub.revoked_since(mark.revocations, hold.identity, hold.channels):
            # disconnect() was called for this stream while its view ran: it
            # does not open on what the view decided before.  The view cannot
            # run again here, so the page is told to come back later; its
            # reconnect runs the view again, which decides anew.
            streams.finish_refused(
                request, Refused(503, "stream revoked while opening", transient=True)
            )
            return
        request.setResponseCode(status, message or None)
        for name, value in hold.headers:
            if name.lower() not in ("server", "date"):
                request.responseHeaders.addRawHeader(
                    name.encode("latin-1"), value.encode("latin-1")
                )
        if request.method == b"HEAD":
            for raw_name, raw_value in STREAM_HEADERS:
                request.setHeader(raw_name, raw_value)
            request.finish()
            return
        streams.stats.held += 1
        resume = last_event_id if last_event_id is not None else mark.last_id
        streams.open(
            request,
            hold.channels,
            peer,
            last_event_id,
            resume,
            first=b"".join(state.body),
            identity=hold.identity,
        )
