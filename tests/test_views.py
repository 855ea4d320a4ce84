"""Streams held by WSGI views (GRIP hold instructions), over real sockets."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any
from urllib.parse import parse_qs

import pytest
from support import StreamClient, exchange, http_request, serve

import wsgi_sse
from wsgi_sse import broadcast, broadcast_and_wait, close, hold_body, hold_headers

PAGE = b"<html>a page</html>"


class JobsApp:
    """
    A WSGI app whose C{/jobs/<id>/events} view holds the job's channel for
    users whose C{user} cookie is allowed, and serves other pages normally.
    """

    def __init__(self) -> None:
        self.allowed = {"ada"}
        self.calls = 0
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        path = environ["PATH_INFO"]
        parts = path.strip("/").split("/")
        if len(parts) == 3 and parts[0] == "jobs" and parts[2] == "events":
            with self.lock:
                self.calls += 1
            user = environ.get("HTTP_COOKIE", "").removeprefix("user=")
            if user not in self.allowed:
                start_response("403 Forbidden", [("Content-Type", "text/plain")])
                return [b"not yours\n"]
            headers = hold_headers(f"job-{parts[1]}")
            headers.append(("X-Job", parts[1]))
            start_response("200 OK", headers)
            return [hold_body({"job": parts[1], "state": "running"})]
        start_response("200 OK", [("Content-Type", "text/html"), ("Content-Length", "19")])
        return [PAGE]


def _held(server: Any, path: str, **kwargs: Any) -> StreamClient:
    headers = {"Cookie": "user=ada", **kwargs.pop("headers", {})}
    return StreamClient(server.port, path, headers=headers, **kwargs)


def test_view_holds_a_stream_on_its_channel() -> None:
    """A view's hold becomes a stream: its headers and first body, then the channel's events."""
    with serve(JobsApp()) as server:
        with _held(server, "/jobs/7/events") as client:
            assert client.status == 200
            assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert client.headers["x-job"] == "7"
            assert client.headers["x-accel-buffering"] == "no"
            (init,) = client.wait_events(1)
            assert (init.type, json.loads(init.data)) == ("init", {"job": "7", "state": "running"})
            server.wait_clients(1)
            assert broadcast_and_wait("other", channel="job-8") == 0
            assert broadcast_and_wait({"progress": 50}, channel="job-7") == 1
            events = client.wait_events(2)
            assert json.loads(events[1].data) == {"progress": 50}
            assert events[1].last_event_id.endswith("-2")
            assert [e.data for e in events].count("other") == 0
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert snapshot["held"] == 1
            assert snapshot["channels"] == {"job-7": 1}


def test_grip_headers_never_reach_the_client() -> None:
    """Grip-* headers (and the view's Content-Length) are removed from the held response."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response(
            "200 OK",
            [
                ("Content-Type", "text/html"),
                ("Grip-Hold", "stream"),
                ("Grip-Channel", "a; prev-id=3, b"),
                ("Grip-Channel", "c"),
                ("Grip-Keep-Alive", "\\n; format=cstring; timeout=20"),
                ("grip-set-meta", 'user="ada"'),
                ("Content-Length", "6"),
            ],
        )
        return [b": hi\n\n"]

    with serve(app) as server:
        with server.stream("/held") as client:
            client.wait_for(lambda c: b": hi" in c.body)
            head = {name for name in client.headers}
            assert not {n for n in head if n.startswith("grip")}
            assert "content-length" not in head
            assert client.chunked
            assert client.headers["content-type"] == "text/event-stream; charset=utf-8"
            server.wait_clients(1)
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert snapshot["channels"] == {"a": 1, "b": 1, "c": 1}


def test_events_published_while_the_view_runs_follow_its_first_body() -> None:
    """An event broadcast while the view is running is sent after the first body, not lost."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        broadcast("during the view", channel="news")
        time.sleep(0.05)  # the reactor publishes it before the hold is served
        start_response("200 OK", hold_headers("news"))
        return [hold_body("snapshot")]

    with serve(app) as server:
        with server.stream("/news") as client:
            events = client.wait_events(2)
            assert [(e.type, e.data) for e in events] == [
                ("init", "snapshot"),
                ("message", "during the view"),
            ]


def test_reconnect_replays_through_the_view_which_authorizes_again() -> None:
    """Last-Event-ID replays the missed events through the view, which authorizes again."""
    app = JobsApp()
    with serve(app) as server:
        with _held(server, "/jobs/1/events") as client:
            server.wait_clients(1)
            broadcast_and_wait("one", channel="job-1")
            events = client.wait_events(2)
        last = events[-1].last_event_id
        server.wait_clients(0)
        broadcast_and_wait("two", channel="job-1")
        broadcast_and_wait("elsewhere", channel="job-2")
        broadcast_and_wait("three", channel="job-1")
        with _held(server, "/jobs/1/events", headers={"Last-Event-ID": last}) as again:
            events = again.wait_events(3)
            assert [e.data for e in events[1:]] == ["two", "three"]
            assert events[-1].last_event_id != last
        assert app.calls == 2
        app.allowed = set()
        status, _, body = http_request(
            server.port, "GET", "/jobs/1/events", headers={"Cookie": "user=ada"}
        )
        assert (status, body) == (403, b"not yours\n")
        assert server.client_count() == 0


def test_close_delivers_what_came_before_then_ends() -> None:
    """close(channel) ends held streams after everything broadcast before it; others stay open."""
    with serve(JobsApp(), metrics_path="/metrics") as server:
        with _held(server, "/jobs/5/events") as job, _held(server, "/jobs/6/events") as other:
            server.wait_clients(2)

            def worker() -> None:
                for i in range(3):
                    broadcast({"step": i}, channel="job-5")
                broadcast({"done": True}, event="done", channel="job-5")
                close("job-5")

            thread = threading.Thread(target=worker)
            thread.start()
            thread.join()
            job.read_to_end()
            assert job.eof
            events = job.events
            assert [json.loads(e.data) for e in events[1:]] == [
                {"step": 0},
                {"step": 1},
                {"step": 2},
                {"done": True},
            ]
            assert events[-1].type == "done"
            server.wait_clients(1)
            assert broadcast_and_wait("still here", channel="job-6") == 1
            assert other.wait_events(2)[-1].data == "still here"
            with _held(server, "/jobs/5/events") as later:
                server.wait_clients(2)
                assert broadcast_and_wait("after", channel="job-5") == 1
                assert later.wait_events(2)[-1].data == "after"
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert snapshot["ended"] == 1
            _, _, metrics = http_request(server.port, "GET", "/metrics")
            assert b"\nwsgi_sse_ended_total 1\n" in metrics
            assert b"\nwsgi_sse_held_total 3\n" in metrics


def test_close_ends_sse_streams_too() -> None:
    """close(channel) ends /sse streams on the channel like held ones."""
    with serve(JobsApp()) as server:
        with server.stream("/sse?channel=room") as client:
            server.wait_clients(1)
            broadcast("bye", channel="room")
            close("room")
            client.read_to_end()
            assert [e.data for e in client.events] == ["bye"]


def test_close_rejects_bad_channels() -> None:
    """close() raises at the call for a channel that cannot exist."""
    import pytest

    with pytest.raises(TypeError):
        close(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        close("")
    with pytest.raises(ValueError, match="control"):
        close("a\nb")


def test_forty_held_streams_on_two_threads_leave_pages_responsive() -> None:
    """40 streams held through a view on a 2-thread pool: pages answer, streams get events."""
    with serve(JobsApp(), threads=2) as server:
        clients = [_held(server, f"/jobs/{i % 4}/events") for i in range(40)]
        try:
            for c in clients:
                c.wait_events(1)
            server.wait_clients(40)
            for _ in range(5):
                status, _, body = http_request(server.port, "GET", "/page", timeout=5)
                assert (status, body) == (200, PAGE)
            busy = server.call(lambda: len(server.service.threadpool.working))
            assert busy == 0
            for job in range(4):
                assert broadcast_and_wait(f"go {job}", channel=f"job-{job}") == 10
            for i, c in enumerate(clients):
                assert c.wait_events(2)[-1].data == f"go {i % 4}"
        finally:
            for c in clients:
                c.close()


def test_post_view_holds_a_stream() -> None:
    """A POST view reads its body and holds a stream (fetch-based clients)."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        form = parse_qs(environ["wsgi.input"].read(size).decode())
        if environ["REQUEST_METHOD"] != "POST":
            start_response("405 Method Not Allowed", [("Content-Type", "text/plain")])
            return [b"post only\n"]
        answer = f"answer-{form['q'][0]}"
        start_response("200 OK", hold_headers(answer))
        return [hold_body({"question": form["q"][0]})]

    with serve(app) as server:
        client = StreamClient(
            server.port,
            "/ask",
            method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Content-Length": "4"},
            body=b"q=42",
        )
        with client:
            (init,) = client.wait_events(1)
            assert json.loads(init.data) == {"question": "42"}
            server.wait_clients(1)
            broadcast("forty-two", channel="answer-42")
            close("answer-42")
            client.read_to_end()
            assert [e.data for e in client.events[1:]] == ["forty-two"]


def test_generator_view_holds_too() -> None:
    """A view that calls start_response lazily (a generator) can hold."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("200 OK", hold_headers("gen"))
        yield b""
        yield hold_body("first")

    with serve(app) as server:
        with server.stream("/gen") as client:
            assert client.wait_events(1)[0].data == "first"
            server.wait_clients(1)
            broadcast_and_wait("live", channel="gen")
            assert client.wait_events(2)[-1].data == "live"


def test_view_that_raises_gets_a_clean_500() -> None:
    """A view that raises (before or after choosing to hold) is a 500, and holds nothing."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["PATH_INFO"] == "/before":
            raise RuntimeError("boom")
        start_response("200 OK", hold_headers("x"))
        yield b": first\n\n"
        raise RuntimeError("boom in the body")

    with serve(app) as server:
        for path in ("/before", "/after"):
            status, _, _ = http_request(server.port, "GET", path)
            assert status == 500, path
        assert server.client_count() == 0


def test_invalid_holds_get_a_clean_500_naming_the_problem() -> None:
    """A hold with an invalid channel, no channel, or another mode is a 500 saying why."""
    cases = {
        "/bad-channel": ([("Grip-Hold", "stream"), ("Grip-Channel", "no spaces")], b"channel"),
        "/no-channel": ([("Grip-Hold", "stream")], b"without a Grip-Channel"),
        "/long-poll": ([("Grip-Hold", "response"), ("Grip-Channel", "a")], b"not supported"),
        "/gzip": (
            [("Grip-Hold", "stream"), ("Grip-Channel", "a"), ("Content-Encoding", "gzip")],
            b"compressed",
        ),
        "/bad-identity": (
            [("Grip-Hold", "stream"), ("Grip-Channel", "a"), ("Wsgi-Sse-Identity", "a%0Ab")],
            b"Wsgi-Sse-Identity: identity must be",
        ),
    }

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", cases[environ["PATH_INFO"]][0])
        return []

    with serve(app) as server:
        for path, (_, message) in cases.items():
            status, headers, body = http_request(server.port, "GET", path)
            assert status == 500, path
            assert body.startswith(b"invalid stream hold: ") and message in body, body
            assert not [n for n in headers if n.startswith("grip")]
        assert server.client_count() == 0
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["refused"] == {"500": 5}


def test_held_stream_carries_the_views_identity_without_sending_it() -> None:
    """hold_headers(identity=) feeds presence and disconnect(); the client never sees the header."""
    who = "Ada Łukasiewicz"  # beyond latin-1: percent-encoded UTF-8 in the header
    changes: list[Any] = []
    left = threading.Event()

    def on_presence(change: Any) -> None:
        changes.append(change)
        if not change.joined:
            left.set()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", hold_headers("job-7", identity=who))
        return [hold_body({"job": "7"})]

    with serve(app, on_presence=on_presence) as server:
        with server.stream("/jobs/7/events") as client:
            client.wait_events(1)
            server.wait_clients(1)
            assert not [n for n in client.headers if "identity" in n]
            assert b"ukasiewicz" not in client.body
            assert dict(wsgi_sse.presence("job-7").identities) == {who: 1}
            wsgi_sse.disconnect(identity=who)
            client.read_to_end()
        server.wait_clients(0)
        assert wsgi_sse.presence("job-7") == wsgi_sse.Presence("job-7", {}, 0)
        assert left.wait(10)
    assert [(c.identity, c.joined) for c in changes] == [(who, True), (who, False)]
    with pytest.raises(ValueError, match="identity"):
        hold_headers("job-7", identity="")


def test_held_stream_counts_toward_the_connection_cap() -> None:
    """Past max_connections a view's hold is told to come back later, like an /sse stream."""
    with serve(JobsApp(), max_connections=1) as server:
        with _held(server, "/jobs/1/events") as first:
            first.wait_events(1)
            status, headers, body = http_request(
                server.port, "GET", "/jobs/1/events", headers={"Cookie": "user=ada"}
            )
            assert status == 200 and body.startswith(b": too many connections\nretry: ")
            assert "retry-after" in headers
            status, _, body = http_request(server.port, "GET", "/sse")
            assert status == 200 and body.startswith(b": too many connections\nretry: ")
            refused = server.call(server.service.sse_resource.snapshot)["refused"]
            assert refused == {"503": 2}


def test_head_on_a_holding_view_answers_headers_only() -> None:
    """HEAD on a view that holds answers the stream's headers and subscribes nothing."""
    with serve(JobsApp()) as server:
        status, headers, body = http_request(
            server.port, "HEAD", "/jobs/1/events", headers={"Cookie": "user=ada"}
        )
        assert status == 200
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        assert body == b""
        assert server.client_count() == 0


def test_shutdown_ends_held_streams() -> None:
    """Stopping the server ends held streams cleanly, like /sse ones."""
    with serve(JobsApp()) as server:
        client = _held(server, "/jobs/1/events")
        client.wait_events(1)
        server.call(server.service.sse_resource.close)
        client.read_to_end()
        assert client.eof
        client.close()


def test_ordinary_responses_pass_through_unchanged() -> None:
    """A response without Grip-Hold keeps its status, headers and streamed body."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-Mine", "1")])
        yield b"a"
        yield b"b"

    with serve(app) as server:
        status, headers, body = http_request(server.port, "GET", "/x")
        assert (status, headers["x-mine"], body) == (201, "1", b"ab")


def test_close_during_the_view_ends_its_stream_after_the_events() -> None:
    """A channel closed while the view runs: its stream sends what came before, then ends."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        broadcast("last words", channel="job-9")
        close("job-9")
        time.sleep(0.05)  # the reactor handles both before the hold is served
        start_response("200 OK", hold_headers("job-9"))
        return [hold_body("running")]

    with serve(app) as server:
        with server.stream("/jobs/9/events") as client:
            client.read_to_end()
            assert [e.data for e in client.events] == ["running", "last words"]
        server.wait_clients(0)


def test_reconnect_after_close_replays_to_the_end_then_stays() -> None:
    """Resuming from before a close replays up to it and ends; from the close on, it stays."""
    with serve(JobsApp()) as server:
        with _held(server, "/jobs/3/events") as client:
            server.wait_clients(1)
            broadcast_and_wait("one", channel="job-3")
            before = client.wait_events(2)[-1].last_event_id
            broadcast("two", channel="job-3")
            close("job-3")
            client.read_to_end()
        # The close's id moved the page's lastEventId past it, without an event.
        assert [e.data for e in client.events[1:]] == ["one", "two"]
        closed_at = client.parser.last_event_id
        assert closed_at != client.events[-1].last_event_id
        with _held(server, "/jobs/3/events", headers={"Last-Event-ID": before}) as again:
            again.read_to_end()
            assert [e.data for e in again.events[1:]] == ["two"]
        with _held(server, "/jobs/3/events", headers={"Last-Event-ID": closed_at}) as after:
            after.wait_events(1)
            server.wait_clients(1)
            assert broadcast_and_wait("three", channel="job-3") == 1
            assert after.wait_events(2)[-1].data == "three"


def test_held_streams_get_heartbeats() -> None:
    """A held stream is kept alive by the server's heartbeat comments like /sse streams."""
    with serve(JobsApp(), heartbeat=0.1) as server:
        with _held(server, "/jobs/1/events") as client:
            client.wait_events(1)
            before = len(client.parser.comments)
            client.wait_for(lambda c: len(c.parser.comments) >= before + 2)


def test_held_stream_that_stops_reading_is_dropped_at_its_cap() -> None:
    """A held stream whose reader stops is aborted at max_buffer, like an /sse stream."""
    with serve(JobsApp(), max_buffer=64 * 1024) as server:
        slow = socket.socket()
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.connect(("127.0.0.1", server.port))
        request = "GET /jobs/1/events HTTP/1.1\r\nHost: x\r\nCookie: user=ada\r\n\r\n"
        slow.sendall(request.encode())
        try:
            server.wait_clients(1)
            payload = "x" * 16000
            for i in range(1000):  # 16 MB, past what the kernel's socket buffers can take
                broadcast(f"{i} {payload}", channel="job-1")
            server.wait_clients(0)
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert snapshot["dropped_by_reason"] == {"buffer": 1}
            assert server.call(lambda: server.service.hub.subscriber_count()) == 0
        finally:
            slow.close()


def test_unknown_last_event_id_through_the_view_is_a_reset_then_the_first_body() -> None:
    """A view's stream that cannot replay from the client's id sends reset, then its first body."""
    with serve(JobsApp()) as server:
        headers = {"Last-Event-ID": "not-from-this-server"}
        with _held(server, "/jobs/1/events", headers=headers) as client:
            events = client.wait_events(2)
            assert [e.type for e in events] == ["reset", "init"]
            snapshot = server.call(server.service.sse_resource.snapshot)
            assert (snapshot["resets"], snapshot["replays"]) == (1, 0)


def test_hold_with_a_header_http_cannot_carry_is_a_clean_500() -> None:
    """A held response whose header cannot be sent gets a 500, not a hung connection."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [*hold_headers("a"), ("X-Name", "Łukasz")])
        return []

    with serve(app) as server:
        status, _, body = http_request(server.port, "GET", "/", timeout=5)
        assert (status, body) == (500, b"invalid stream hold\n")
        assert server.client_count() == 0


def test_holding_views_get_the_completed_environ() -> None:
    """A chunked POST reaches a holding view with its real CONTENT_LENGTH, as any view gets it."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        size = int(environ.get("CONTENT_LENGTH") or 0)
        question = environ["wsgi.input"].read(size).decode()
        start_response("200 OK", hold_headers("answers"))
        return [hold_body({"question": question, "coding": environ.get("HTTP_TRANSFER_ENCODING")})]

    with serve(app) as server:
        headers = {"Transfer-Encoding": "chunked", "Content-Type": "text/plain"}
        with StreamClient(
            server.port, "/ask", method="POST", headers=headers, body=b"5\r\nhello\r\n0\r\n\r\n"
        ) as client:
            (init,) = client.wait_events(1)
            assert json.loads(init.data) == {"question": "hello", "coding": None}


def test_close_ends_a_stream_with_channel_tagged_ids() -> None:
    """close() ends a browser-client stream (channel-tagged ids) after its events, tag kept."""
    with serve(JobsApp()) as server:
        with server.stream("/sse?channel=a&channel=b&channelInId=1") as client:
            server.wait_clients(1)
            broadcast("last", channel="a")
            close("a")
            client.read_to_end()
            start, event = client.events
            assert start.type == "wsgi-sse:position" and " " not in start.last_event_id
            assert event.data == "last" and event.last_event_id.endswith(" a")
            assert client.parser.last_event_id.endswith(" a")
            assert client.parser.last_event_id != event.last_event_id
        server.wait_clients(0)
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0


def _failing_hold(monkeypatch: pytest.MonkeyPatch) -> Any:
    """
    A view that holds C{jobs}, in a server whose streams fail to set up
    after their head and first body went out (the heartbeat cannot start).
    """
    from wsgi_sse import _streams

    def broken(self: Any) -> None:
        raise RuntimeError("the heartbeat cannot start")

    monkeypatch.setattr(_streams.Streams, "_ensure_heartbeat", broken)

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", hold_headers("jobs"))
        return [hold_body({"job": "7"})]

    return app


def test_a_held_stream_failing_after_its_first_bytes_is_cut_short_over_http11(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    A held stream whose setup fails once its first body was written ends
    without the last chunk: its reader sees a truncated response, and the
    server keeps no stream for it.
    """
    with serve(_failing_hold(monkeypatch)) as server:
        request = f"GET /jobs HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
        raw = exchange(server.port, request, lambda _: False)  # to EOF
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ") and b"Transfer-Encoding: chunked" in head
        assert b'event: init\ndata: {"job":"7"}\n\n' in body
        assert not body.endswith(b"0\r\n\r\n")
        server.wait_clients(0)
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0


def test_a_held_stream_failing_after_its_first_bytes_is_reset_over_http10(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """
    Over HTTP/1.0 a stream's body ends with its connection: a held stream
    whose setup fails once its first body was written has its connection
    reset, never closed as if the response were whole.
    """
    with serve(_failing_hold(monkeypatch)) as server:
        request = f"GET /jobs HTTP/1.0\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
        with pytest.raises(ConnectionResetError):
            exchange(server.port, request, lambda _: False)
        server.wait_clients(0)


def _flask_app() -> Any:
    from flask import Flask

    from wsgi_sse.contrib.flask import hold_stream

    app = Flask(__name__)

    @app.get("/jobs/<int:job>/events")
    def job_events(job: int) -> Any:
        return hold_stream(f"job-{job}", initial={"job": job}, identity="ada")

    return app


def _bottle_app() -> Any:
    from bottle import Bottle

    from wsgi_sse.contrib.bottle import hold_stream

    app = Bottle()

    @app.get("/jobs/<job:int>/events")
    def job_events(job: int) -> Any:
        return hold_stream(f"job-{job}", initial={"job": job}, identity="ada")

    return app


@pytest.mark.parametrize("make_app", [_flask_app, _bottle_app], ids=["flask", "bottle"])
def test_flask_and_bottle_helpers_carry_the_identity(make_app: Any) -> None:
    """hold_stream(identity=) of the Flask and Bottle helpers feeds presence and disconnect()."""
    with serve(make_app()) as server:
        with server.stream("/jobs/7/events") as client:
            (init,) = client.wait_events(1)
            assert init.type == "init" and json.loads(init.data) == {"job": 7}
            server.wait_clients(1)
            assert not [n for n in client.headers if "identity" in n.lower()]
            assert dict(wsgi_sse.presence("job-7").identities) == {"ada": 1}
            wsgi_sse.disconnect(identity="ada")
            client.read_to_end()
        server.wait_clients(0)
