"""The Flask example, started exactly as README.md says, read by a real stream client."""

from __future__ import annotations

from urllib.parse import urlencode

from example_server import run_example
from support import StreamClient, http_request

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def test_flask_example_pages() -> None:
    """GET / serves the live page and GET /hello/ the knock form."""
    with run_example("flask_app") as server:
        status, headers, body = http_request(server.port, "GET", "/")
        assert status == 200
        assert headers["content-type"].startswith("text/html")
        assert b'import { openStream } from "/sse.js"' in body
        assert b'openStream({ url: "/sse" })' in body
        status, _, body = http_request(server.port, "GET", "/hello/")
        assert status == 200
        assert b'<form action="/knock" method="post">' in body


def test_flask_example_knock_reaches_stream() -> None:
    """POST /knock in the Flask app reaches every connected stream, in order."""
    with run_example("flask_app") as server:
        with StreamClient(server.port) as first, StreamClient(server.port) as second:
            assert first.status == second.status == 200
            for name in ["Ada", "Grace <b>&"]:
                status, _, body = http_request(
                    server.port,
                    "POST",
                    "/knock",
                    body=urlencode({"name": name}).encode(),
                    headers=FORM,
                )
                assert status == 200
            assert b"Grace &lt;b&gt;&amp; knocked!" in body
            for client in (first, second):
                events = client.wait_events(2)
                assert [e.data for e in events] == ["Ada knocked", "Grace <b>& knocked"]
                assert [e.type for e in events] == ["message", "message"]
                assert events[0].last_event_id != events[1].last_event_id != ""
        assert server.stop() in (0, -15)
