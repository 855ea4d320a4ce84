"""The holding WSGI wrapper on values: which responses it holds, and close() on app iterables."""

from __future__ import annotations

from typing import Any

from wsgi_sse import Hub, StreamOptions, hold_headers
from wsgi_sse._streams import Streams
from wsgi_sse._views import HoldingWSGIResource


class Reactor:
    """Records what the wrapper hands to the reactor thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def callFromThread(self, f: Any, *args: Any) -> None:
        self.calls.append((f, *args))


class Response:
    """Stands for Twisted's _WSGIResponse: the flag the wrapper sets."""

    _requestFinished = False


class Result:
    """An app iterable that counts close() calls."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.closed = 0

    def __iter__(self) -> Any:
        return iter(self.chunks)

    def close(self) -> None:
        self.closed += 1


def run(app: Any, max_buffer: int = 1 << 20) -> tuple[Any, Reactor, Response, list[Any]]:
    reactor = Reactor()
    options = StreamOptions(max_buffer=max_buffer)
    resource = HoldingWSGIResource(reactor, None, app, Streams(Hub(), options=options))  # type: ignore[arg-type]
    response = Response()
    started: list[Any] = []
    wrapped = resource._holding(response, None, "x-0")  # type: ignore[arg-type]
    result = wrapped({}, lambda status, headers, exc_info=None: started.append((status, headers)))
    return result, reactor, response, started


def test_ordinary_response_is_returned_untouched() -> None:
    """A response without Grip-Hold goes to Twisted as the app returned it."""
    body = Result([b"a", b"b"])

    def app(environ: Any, start_response: Any) -> Result:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return body

    result, reactor, response, started = run(app)
    assert result is body
    assert started == [("200 OK", [("Content-Type", "text/plain")])]
    assert reactor.calls == [] and not response._requestFinished


def test_lazy_ordinary_response_keeps_every_chunk_and_its_close() -> None:
    """A generator app's chunks read ahead are all passed on; close() reaches the app."""
    closed: list[bool] = []

    def app(environ: Any, start_response: Any) -> Any:
        try:
            yield b""
            start_response("200 OK", [])
            yield b"a"
            yield b"b"
        finally:
            closed.append(True)

    result, reactor, _, started = run(app)
    assert started == [("200 OK", [])]
    assert list(result) == [b"", b"a", b"b"]
    result.close()
    assert closed == [True] and reactor.calls == []


def test_held_response_is_collected_closed_and_handed_to_the_reactor() -> None:
    """A hold: body collected (write() and iterable), app closed once, request kept from Twisted."""
    body = Result([b": two\n\n"])

    def app(environ: Any, start_response: Any) -> Result:
        write = start_response("200 OK", hold_headers("a"))
        write(b": one\n\n")
        return body

    result, reactor, response, started = run(app)
    assert list(result) == [] and started == []
    assert body.closed == 1 and response._requestFinished
    ((_, _, state, mark, _),) = reactor.calls
    assert state.hold.channels == ("a",) and state.body == [b": one\n\n", b": two\n\n"]
    assert mark == "x-0"


def test_held_body_over_max_buffer_is_an_invalid_hold() -> None:
    """A first body larger than max_buffer is refused instead of buffered without bound."""
    body = Result([b"x" * 600, b"x" * 600])

    def app(environ: Any, start_response: Any) -> Result:
        start_response("200 OK", hold_headers("a"))
        return body

    _, reactor, _, _ = run(app, max_buffer=1000)
    ((_, _, state, _, _),) = reactor.calls
    assert state.hold is None and "larger than max_buffer" in state.error
    assert body.closed == 1


def test_error_after_a_hold_replaces_it() -> None:
    """start_response again with exc_info drops the hold and goes to Twisted (an error page)."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", hold_headers("a"))
        start_response("500 Oops", [], (RuntimeError, RuntimeError("x"), None))
        return [b"oops"]

    result, reactor, _, started = run(app)
    assert result == [b"oops"] and reactor.calls == []
    assert started == [("500 Oops", [])]


def test_held_body_of_str_raises_in_the_view_thread() -> None:
    """A held body that is not bytes raises there (Twisted then answers 500), and holds nothing."""
    import pytest

    body = Result(["text"])  # type: ignore[list-item]

    def app(environ: Any, start_response: Any) -> Result:
        start_response("200 OK", hold_headers("a"))
        return body

    with pytest.raises(TypeError, match="must be bytes"):
        run(app)
    assert body.closed == 1
