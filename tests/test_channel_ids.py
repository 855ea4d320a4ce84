"""Channel-tagged ids (?channelInId=1) and the browser client at /sse.js, over real sockets."""

from __future__ import annotations

import gzip
from typing import Any
from urllib.parse import quote

import pytest
from support import http_request, serve

from wsgi_sse import encode_event
from wsgi_sse._browser import tag


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers every request with its path."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["PATH_INFO"].encode()]


def test_tagged_ids_name_the_channel_and_plain_streams_are_untouched() -> None:
    """A tagged stream sees 'id: <id> <channel>'; a plain stream of the same events, plain ids."""
    with serve(app) as server:
        bc = server.service.broadcaster
        tagged = server.stream("/sse?channel=a&channel=b&channelInId=1")
        plain = server.stream("/sse?channel=a&channel=b")
        with tagged, plain:
            server.wait_clients(2)
            start = server.call(lambda: server.service.hub.last_id)
            bc.broadcast_and_wait("one", channel="a")
            bc.broadcast_and_wait("two", channel="b", event="knock")
            got = [(e.type, e.data, e.last_event_id) for e in tagged.wait_events(3)]
            ids = [e.last_event_id for e in plain.wait_events(2)]
            assert all(" " not in i for i in ids)
            assert got == [
                ("wsgi-sse:position", "", start),
                ("message", "one", f"{ids[0]} a"),
                ("knock", "two", f"{ids[1]} b"),
            ]
            plain.read_some(0.1)
            assert [e.type for e in plain.events] == ["message", "knock"]


def test_tagged_id_resumes_from_header_and_query() -> None:
    """A tagged id sent back (header or lastEventId query) replays after that event, tagged."""
    with serve(app) as server:
        bc = server.service.broadcaster
        with server.stream("/sse?channel=a&channel=b&channelInId=1") as first:
            server.wait_clients(1)
            bc.broadcast_and_wait("1", channel="a")
            resume = first.wait_events(2)[1].last_event_id
        server.wait_clients(0)
        bc.broadcast_and_wait("2", channel="b")
        bc.broadcast_and_wait("3", channel="a")
        base = "/sse?channel=a&channel=b&channelInId=1"
        for path, headers in (
            (base, {"Last-Event-ID": resume}),
            (f"{base}&lastEventId={resume.replace(' ', '%20')}", {}),
        ):
            with server.stream(path, headers=headers) as again:
                events = again.wait_events(2)
                assert [(e.type, e.data, e.last_event_id.split(" ")[1]) for e in events] == [
                    ("message", "2", "b"),
                    ("message", "3", "a"),
                ]
        assert server.call(server.service.sse_resource.snapshot)["replays"] == 2


def test_tagged_id_with_a_long_or_non_ascii_channel_resumes() -> None:
    """
    A tagged id is as long as its channel's name, and as UTF-8: sent back
    as the browser got it, it resumes like any other.
    """
    channels = ["c" * 120, "café"]
    with serve(app, max_channel_length=200, channel_pattern=r"\w+") as server:
        bc = server.service.broadcaster
        for channel in channels:
            path = f"/sse?channel={quote(channel)}&channelInId=1"
            with server.stream(path) as first:
                server.wait_clients(1)
                bc.broadcast_and_wait("1", channel=channel)
                resume = first.wait_events(2)[1].last_event_id
            assert resume.endswith(" " + channel)
            server.wait_clients(0)
            bc.broadcast_and_wait("2", channel=channel)
            # The browser sends the header as UTF-8 (the test client, as latin-1).
            header = resume.encode().decode("latin-1")
            for again_path, headers in (
                (path, {"Last-Event-ID": header}),
                (f"{path}&lastEventId={quote(resume)}", {}),
            ):
                with server.stream(again_path, headers=headers) as again:
                    assert again.status == 200
                    assert [e.data for e in again.wait_events(1)] == ["2"]


def test_a_tagged_stream_closed_before_its_first_event_resumes_from_its_start() -> None:
    """
    A tagged stream is told where it starts (an event the browser client
    keeps and does not show); closed before any event, it resumes from
    there and gets what was published meanwhile.  A stream resuming from
    its own id is not told again.
    """
    with serve(app) as server:
        bc = server.service.broadcaster
        bc.broadcast_and_wait("before", channel="a")
        path = "/sse?channel=a&channelInId=1"
        with server.stream(path) as first:
            (start,) = first.wait_events(1)
            first.read_some(0.1)
            assert len(first.events) == 1
        assert (start.type, start.data) == ("wsgi-sse:position", "")
        assert start.last_event_id == server.call(lambda: server.service.hub.last_id)
        server.wait_clients(0)
        bc.broadcast_and_wait("meanwhile", channel="a")
        with server.stream(path, headers={"Last-Event-ID": start.last_event_id}) as again:
            server.wait_clients(1)
            bc.broadcast_and_wait("live", channel="a")
            assert [(e.type, e.data) for e in again.wait_events(2)] == [
                ("message", "meanwhile"),
                ("message", "live"),
            ]
        assert server.call(server.service.sse_resource.snapshot)["replays"] == 1


def test_a_tagged_stream_with_an_init_starts_where_its_init_was_taken() -> None:
    """With an initial hook, the position comes first and is the init's own id."""
    with serve(app, initial=lambda request: {"n": 1}) as server:
        with server.stream("/sse?channel=a&channelInId=1") as client:
            start, init = client.wait_events(2)
    assert start.type == "wsgi-sse:position" and init.type == "init"
    assert start.last_event_id == init.last_event_id


def test_tagged_stream_unsubscribes_every_channel_when_it_ends() -> None:
    """When a tagged stream closes, none of its channels keeps a subscriber."""
    with serve(app) as server:
        with server.stream("/sse?channel=a&channel=b&channelInId=1"):
            server.wait_clients(1)
            assert server.call(lambda: server.service.hub.channel_counts()) == {"a": 1, "b": 1}
        server.wait_clients(0)
        assert server.call(lambda: server.service.hub.subscriber_count()) == 0


def test_tag_marks_every_event_of_a_batch() -> None:
    """Several events written at once each get the channel on their id line, data untouched."""
    wire = encode_event("id: not an id\nx", id="k-1") + encode_event("y", id="k-2", event="e")
    assert tag(wire, "news") == (
        b"id: k-1 news\ndata: id: not an id\ndata: x\n\nid: k-2 news\nevent: e\ndata: y\n\n"
    )


def test_client_script_served_with_validator() -> None:
    """/sse.js answers the ES module as JavaScript, and 304 for a current copy."""
    with serve(app) as server:
        status, headers, body = http_request(server.port, "GET", "/sse.js")
        assert status == 200
        assert headers["content-type"] == "text/javascript; charset=utf-8"
        assert b"export function openStream" in body
        status, _, body = http_request(
            server.port, "GET", "/sse.js", headers={"If-None-Match": headers["etag"]}
        )
        assert (status, body) == (304, b"")
        zipped = {"Accept-Encoding": "gzip, deflate"}
        status, headers, body = http_request(server.port, "GET", "/sse.js", headers=zipped)
        assert (status, headers["content-encoding"]) == (200, "gzip")
        assert b"export function openStream" in gzip.decompress(body)
        assert len(body) < 9000  # the whole client, gzipped, comments and all: under 9 KB
        again = {**zipped, "If-None-Match": headers["etag"]}
        status, headers, body = http_request(server.port, "GET", "/sse.js", headers=again)
        assert (status, body, "content-encoding" in headers) == (304, b"", False)
        status, headers, body = http_request(server.port, "HEAD", "/sse.js", headers=zipped)
        assert (status, body) == (200, b"")


@pytest.mark.parametrize(
    ("accept", "zipped"),
    [("gzip;q=0", False), ("gzip;q=0, *", False), ("*;q=0.5", True)],
)
def test_client_script_gzip_negotiation(accept: str, zipped: bool) -> None:
    """/sse.js is gzipped only when Accept-Encoding accepts gzip with a q above 0."""
    with serve(app) as server:
        headers = {"Accept-Encoding": accept}
        status, answer, body = http_request(server.port, "GET", "/sse.js", headers=headers)
        assert status == 200
        assert (answer.get("content-encoding") == "gzip") is zipped
        assert b"export function openStream" in (gzip.decompress(body) if zipped else body)


def test_client_script_if_none_match_lists_and_weak_tags() -> None:
    """If-None-Match as caches send it: a list, a weak tag or * is a 304 for a current copy."""
    with serve(app) as server:
        etag = http_request(server.port, "GET", "/sse.js")[1]["etag"]
        for value in (f'"old", {etag}', f"W/{etag}", "*"):
            status, _, body = http_request(
                server.port, "GET", "/sse.js", headers={"If-None-Match": value}
            )
            assert (status, body) == (304, b""), value
        status, _, _ = http_request(
            server.port, "GET", "/sse.js", headers={"If-None-Match": '"old"'}
        )
        assert status == 200


def test_client_path_moves_or_turns_off_the_script() -> None:
    """client_path serves the script elsewhere; None leaves the path to the WSGI app."""
    with serve(app, client_path="/static/live.js") as server:
        assert http_request(server.port, "GET", "/static/live.js")[0] == 200
        assert http_request(server.port, "GET", "/sse.js")[2] == b"/sse.js"
    with serve(app, client_path=None) as server:
        assert http_request(server.port, "GET", "/sse.js")[2] == b"/sse.js"


def test_the_browser_modules_docstring_examples_hold() -> None:
    """The position event's bytes are what its docstring shows."""
    import doctest

    from wsgi_sse import _browser

    failed, attempted = doctest.testmod(_browser)
    assert attempted >= 1 and failed == 0
