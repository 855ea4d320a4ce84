"""
The shipped browser client (/sse.js) in Chromium: tabs of one origin share
one stream connection, hand it over without losing events, resume after
reloads, get only their own channels, and fall back to one EventSource each.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from typing import Any
from urllib.parse import urlencode

import pytest
from playwright.sync_api import expect
from support import ROOT, free_port, http_request, serve, wait_until

import wsgi_sse
from wsgi_sse import Allowed, StreamRequest, stream_token

SECRET = "t" * 40

PAGE = (ROOT / "docs" / "browser-client-page.html").read_bytes()


def _bottle_app() -> Any:
    """The Bottle example's WSGI app, imported from its file."""
    spec = importlib.util.spec_from_file_location(
        "bottle_knocks", ROOT / "examples" / "bottle_app" / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.app


def page_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """
    Serve the documentation's example page at every path; at /blank an
    empty page; and at /token a stream token for the channels named
    (issued two minutes ago, so expired, with C{expired=1}).
    """
    if environ["PATH_INFO"] == "/blank":
        start_response("200 OK", [("Content-Type", "text/html")])
        return [b"<!doctype html><title>blank</title>"]
    if environ["PATH_INFO"] == "/token":
        from urllib.parse import parse_qs

        query = parse_qs(environ["QUERY_STRING"])
        issued = time.time() - (120 if query.get("expired") else 0)
        token = stream_token(query["channel"], ttl=60, secret=SECRET, now=issued)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [token.encode()]
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [PAGE]


def knock(port: int, name: str) -> None:
    """POST /knock to the Bottle example, as another user's browser would."""
    body = urlencode({"name": name}).encode()
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    assert http_request(port, "POST", "/knock", body=body, headers=headers)[0] == 200


def open_tabs(context: Any, server: Any, channels: tuple[str, ...]) -> dict[str, Any]:
    """A live tab of the page on each channel, the server holding one stream for them all."""
    tabs = {}
    for channel in channels:
        tabs[channel] = context.new_page()
        tabs[channel].goto(f"{server.url}/page?channel={channel}")
        expect(tabs[channel].locator("#status")).to_have_text("live")
    wait_for_channels(server, tabs[channels[0]], dict.fromkeys(channels, 1))
    return tabs


def wait_for_channels(server: Any, tab: Any, counts: dict[str, int]) -> None:
    """Wait until the server's stream subscribers per channel are C{counts}."""
    for _ in range(400):
        if server.call(server.service.hub.channel_counts) == counts:
            return
        tab.wait_for_timeout(25)
    assert server.call(server.service.hub.channel_counts) == counts


@pytest.mark.parametrize("locks", [True, False], ids=["web-locks", "no-web-locks"])
def test_six_tabs_one_connection_and_hand_over(context: Any, locks: bool) -> None:
    """
    Six tabs of the Bottle page hold one stream; closing its holder loses
    nothing, with Web Locks or (as on plain-HTTP sites) without.
    """
    if not locks:
        context.add_init_script("delete Navigator.prototype.locks;")
    with serve(_bottle_app()) as server:
        tabs = []
        for _ in range(6):
            tab = context.new_page()
            tab.goto(server.url + "/")
            expect(tab.locator("#status")).to_have_text("live")
            tabs.append(tab)
        server.wait_clients(1)
        for n in range(1, 4):
            knock(server.port, f"#{n}")
        expected = [f"#{n} knocked" for n in range(1, 4)]
        for tab in tabs:
            expect(tab.locator("#events li")).to_have_text(expected)
        assert server.client_count() == 1

        # The first tab holds the connection; close it and knock at once,
        # while the next tab takes over.
        tabs.pop(0).close()
        for n in range(4, 9):
            knock(server.port, f"#{n}")
        expected = [f"#{n} knocked" for n in range(1, 9)]
        for tab in tabs:
            # Without Web Locks a holder whose goodbye was not heard is
            # noticed by the pings (5 to 8 s, docs/browser-client.md).
            expect(tab.locator("#events li")).to_have_text(expected, timeout=15_000)
        server.wait_clients(1)
        snapshot = server.call(server.service.sse_resource.snapshot)
        # One stream per holder: the first, then the one that took over.
        assert snapshot["connects"] == 2


def test_reload_resumes(context: Any) -> None:
    """A tab that comes back gets what it missed and nothing twice, alone or beside another."""
    with serve(page_app) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        url = server.url + "/page?channel=a"
        tab = context.new_page()
        tab.goto(url)
        expect(tab.locator("#status")).to_have_text("live")
        publish("1", channel="a")
        expect(tab.locator("#events li")).to_have_text(["a: 1"])

        tab.goto("about:blank")
        server.wait_clients(0)
        publish("2", channel="a")
        publish("3", channel="a")
        tab.goto(url)  # alone: it holds the connection and resumes from "1"
        expect(tab.locator("#events li")).to_have_text(["a: 2", "a: 3"])
        tab.reload()
        expect(tab.locator("#status")).to_have_text("live")
        publish("4", channel="a")
        expect(tab.locator("#events li")).to_have_text(["a: 4"])

        other = context.new_page()
        other.goto(url)
        expect(other.locator("#status")).to_have_text("live")
        tab.goto("about:blank")  # the holder leaves; the other tab takes over
        publish("5", channel="a")
        expect(other.locator("#events li")).to_have_text(["a: 5"])
        tab.goto(url)  # beside a holder: caught up by it, from "4"
        expect(tab.locator("#events li")).to_have_text(["a: 5"])
        publish("6", channel="a")
        expect(tab.locator("#events li")).to_have_text(["a: 5", "a: 6"])
        expect(other.locator("#events li")).to_have_text(["a: 5", "a: 6"])
        assert server.client_count() == 1


def test_each_tab_gets_its_own_channels(context: Any) -> None:
    """Tabs asking for different channels share one stream of the union and see only theirs."""
    with serve(page_app) as server:
        tabs = {}
        for query in ("channel=a", "channel=b", "channel=a&channel=b"):
            tab = context.new_page()
            tab.goto(f"{server.url}/page?{query}")
            expect(tab.locator("#status")).to_have_text("live")
            tabs[query] = tab
        wait_for_channels(server, tabs["channel=a"], {"a": 1, "b": 1})
        assert server.client_count() == 1
        publish = server.service.broadcaster.broadcast_and_wait
        publish("1", channel="a")
        publish("2", channel="b")
        publish("3", channel="a")
        expect(tabs["channel=a&channel=b"].locator("#events li")).to_have_text(
            ["a: 1", "b: 2", "a: 3"]
        )
        expect(tabs["channel=a"].locator("#events li")).to_have_text(["a: 1", "a: 3"])
        expect(tabs["channel=b"].locator("#events li")).to_have_text(["b: 2"])

        # A new channel in the union: the stream reconnects, resuming.
        tabs["channel=b"].evaluate("stream.setChannels(['c'])")
        wait_for_channels(server, tabs["channel=a"], {"a": 1, "b": 1, "c": 1})
        assert server.client_count() == 1
        publish("4", channel="c")
        publish("5", channel="b")
        publish("6", channel="a")
        expect(tabs["channel=b"].locator("#events li")).to_have_text(["b: 2", "c: 4"])
        expect(tabs["channel=a&channel=b"].locator("#events li")).to_have_text(
            ["a: 1", "b: 2", "a: 3", "b: 5", "a: 6"]
        )
        expect(tabs["channel=a"].locator("#events li")).to_have_text(["a: 1", "a: 3", "a: 6"])


def test_fallback_without_locks_or_broadcast_channel(context: Any) -> None:
    """Without Web Locks and BroadcastChannel each tab opens its own EventSource."""
    context.add_init_script("delete window.BroadcastChannel; delete Navigator.prototype.locks;")
    with serve(page_app) as server:
        tabs = []
        for _ in range(2):
            tab = context.new_page()
            tab.goto(server.url + "/page?channel=a")
            expect(tab.locator("#status")).to_have_text("live")
            assert tab.evaluate("stream.mode") == "single"
            tabs.append(tab)
        server.wait_clients(2)
        server.service.broadcaster.broadcast_and_wait("1", channel="a")
        for tab in tabs:
            expect(tab.locator("#events li")).to_have_text(["a: 1"])
        tabs[0].reload()
        expect(tabs[0].locator("#status")).to_have_text("live")
        server.service.broadcaster.broadcast_and_wait("2", channel="a")
        expect(tabs[0].locator("#events li")).to_have_text(["a: 2"])
        expect(tabs[1].locator("#events li")).to_have_text(["a: 1", "a: 2"])


TOKEN_STREAM = """
async (expiredFirst) => {
  const { openStream } = await import("/sse.js");
  window.tokenCalls = 0;
  const stream = openStream({
    url: "/sse",
    channels: ["secret"],
    share: false,
    token: async (channels) => {
      const query = channels.map((c) => "channel=" + c).join("&");
      const expired = expiredFirst && window.tokenCalls++ === 0 ? "&expired=1" : "";
      return (await fetch("/token?" + query + expired)).text();
    },
  });
  window.got = [];
  stream.addEventListener("message", (e) => window.got.push(e.channel + ": " + e.data));
  window.tokenStream = stream;
}
"""


def test_token_function_and_reconnect_after_refusal(context: Any) -> None:
    """
    The client fetches a token for its channels before connecting; refused
    (an expired token: 403), it asks with a new one whether the channel
    itself is refused (it is not), waits a random delay and connects again.
    """
    with serve(page_app, authorize=lambda request: False, token_secret=SECRET) as server:
        tab = context.new_page()
        tab.goto(server.url + "/blank")
        tab.evaluate(TOKEN_STREAM, True)
        tab.wait_for_function("window.tokenStream.status === 'live'")
        # The expired one, the one asking about the channel, the one connecting.
        assert tab.evaluate("window.tokenCalls") == 3
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["refused"] == {"403": 1}  # the expired token
        server.service.broadcaster.broadcast_and_wait("for token holders", channel="secret")
        tab.wait_for_function("window.got.length === 1")
        assert tab.evaluate("window.got") == ["secret: for token holders"]


def test_token_function_after_disconnect(context: Any) -> None:
    """
    A token stream ended by disconnect() is refused on the browser's own
    reconnect (its token was made before): the client asks its token
    function for a new one, and the view that makes it decides anew.
    """
    minted: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        # The page's tokens are ada's.
        if environ["PATH_INFO"] != "/token":
            return page_app(environ, start_response)
        minted.append(stream_token("secret", identity="ada", secret=SECRET))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [minted[-1].encode()]

    with serve(app, authorize=lambda request: False, token_secret=SECRET, retry=200) as server:
        tab = context.new_page()
        tab.goto(server.url + "/blank")
        tab.evaluate(TOKEN_STREAM, False)
        tab.wait_for_function("window.tokenStream.status === 'live'")
        server.wait_clients(1)
        assert len(minted) == 1
        wsgi_sse.disconnect(identity="ada", hub=server.service.hub)
        # The browser's reconnect (refused), the one asking about the
        # channel, the one connecting.
        wait_until(lambda: len(minted) == 3, what="new tokens")
        server.wait_clients(1)
        tab.wait_for_function("window.tokenStream.status === 'live'")
        snapshot = server.call(server.service.sse_resource.snapshot)
        assert snapshot["refused"] == {"403": 1}
        server.service.broadcaster.broadcast_and_wait("after", channel="secret")
        tab.wait_for_function("window.got.length === 1")
        assert tab.evaluate("window.got") == ["secret: after"]


@pytest.mark.parametrize("locks", [True, False], ids=["web-locks", "no-web-locks"])
def test_crashed_holder_hands_over(context: Any, locks: bool) -> None:
    """When the holding tab crashes (it says no goodbye), another takes over without loss."""
    if not locks:
        context.add_init_script("delete Navigator.prototype.locks;")
    with serve(page_app) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        tabs = []
        for _ in range(3):
            tab = context.new_page()
            tab.goto(server.url + "/page?channel=a")
            expect(tab.locator("#status")).to_have_text("live")
            tabs.append(tab)
        assert tabs[0].evaluate("stream.holdsConnection") is True
        publish("1", channel="a")
        for tab in tabs:
            expect(tab.locator("#events li")).to_have_text(["a: 1"])
        crashed = tabs.pop(0)
        # Page.crash never answers: send it without waiting for an answer.
        session = context.new_cdp_session(crashed)._impl_obj
        session._loop.create_task(session.send("Page.crash", None, None))
        crashed.wait_for_event("crash")
        publish("2", channel="a")
        publish("3", channel="a")
        for tab in tabs:
            # Without Web Locks the others notice within seconds (pings).
            expect(tab.locator("#events li")).to_have_text(["a: 1", "a: 2", "a: 3"], timeout=15_000)
        assert sum(tab.evaluate("stream.holdsConnection") for tab in tabs) == 1
        server.wait_clients(1)


@pytest.mark.parametrize("beside", [True, False], ids=["beside-a-holder", "alone"])
def test_a_tab_that_comes_back_gets_what_its_channel_missed(context: Any, beside: bool) -> None:
    """
    A tab leaves (its channel leaves the shared connection), an event is
    published on its channel, the tab comes back: it gets the event, from
    the server's replay, whether another tab holds the connection (which
    reconnects from the returning tab's position) or not.
    """
    with serve(page_app, retry=200) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        holder = None
        if beside:
            holder = context.new_page()
            holder.goto(server.url + "/page?channel=a")
            expect(holder.locator("#status")).to_have_text("live")
        tab = context.new_page()
        tab.goto(server.url + "/page?channel=d")
        expect(tab.locator("#status")).to_have_text("live")
        publish("seen", channel="d")
        expect(tab.locator("#events li")).to_have_text(["d: seen"])
        tab.goto("about:blank")  # away
        if holder is not None:
            wait_for_channels(server, holder, {"a": 1})
        else:
            server.wait_clients(0)
        publish("missed", channel="d")
        publish("other", channel="a")
        if holder is not None:
            expect(holder.locator("#events li")).to_have_text(["a: other"])
        tab.goto(server.url + "/page?channel=d")  # back
        expect(tab.locator("#status")).to_have_text("live")
        wait_for_channels(server, tab, {"a": 1, "d": 1} if beside else {"d": 1})
        publish("after", channel="d")
        expect(tab.locator("#events li")).to_have_text(["d: missed", "d: after"])
        if holder is not None:
            # The holder's own events, replayed too, are not shown twice.
            publish("last", channel="a")
            expect(holder.locator("#events li")).to_have_text(["a: other", "a: last"])


def test_a_crashed_tabs_channels_leave_the_shared_connection(context: Any) -> None:
    """
    A tab that crashes says no goodbye: the holding tab learns of it from the
    tab's own Web Lock, which the browser hands over, and reconnects without
    its channels (the others' events still arrive, none twice).
    """
    with serve(page_app, retry=200) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        holder = context.new_page()
        holder.goto(server.url + "/page?channel=a")
        expect(holder.locator("#status")).to_have_text("live")
        tabs = []
        for channel in ("c", "d"):
            tab = context.new_page()
            tab.goto(server.url + f"/page?channel={channel}")
            expect(tab.locator("#status")).to_have_text("live")
            tabs.append(tab)
        wait_for_channels(server, holder, {"a": 1, "c": 1, "d": 1})
        session = context.new_cdp_session(tabs[0])._impl_obj
        session._loop.create_task(session.send("Page.crash", None, None))
        tabs[0].wait_for_event("crash")
        wait_until(lambda: server.call(server.service.hub.channel_counts) == {"a": 1, "d": 1})
        assert holder.evaluate("stream.peers.size") == 1
        expect(holder.locator("#status")).to_have_text("live")
        publish("1", channel="a")
        publish("2", channel="d")
        expect(holder.locator("#events li")).to_have_text(["a: 1"])
        expect(tabs[1].locator("#events li")).to_have_text(["d: 2"])


# Date.now() of one tab, to be moved on (its timers keep real time).
SKEWED_CLOCK = "() => { const real = Date.now; window.skew = 0; Date.now = () => real() + skew; }"


def _ask_who_is_there(holder: Any) -> None:
    """Move the holder's clock 11 s on, and give it 2.5 s to ask who is there and hear back."""
    holder.evaluate("skew += 11000")
    holder.wait_for_timeout(2500)


def test_without_web_locks_a_crashed_tab_leaves_and_a_busy_one_comes_back(
    context: Any,
) -> None:
    """
    Without Web Locks the holding tab asks who is there every 10 s (its
    clock is moved on here): a crashed tab's channel leaves the connection, a
    tab that answers stays; a tab busy for seconds (a long task) is
    forgotten too, and once it is free it says hello again and gets what its
    channel missed meanwhile.
    """
    context.add_init_script("delete Navigator.prototype.locks;")
    with serve(page_app, retry=200) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        holder = context.new_page()
        holder.goto(server.url + "/page?channel=a")
        expect(holder.locator("#status")).to_have_text("live")
        holder.evaluate(SKEWED_CLOCK)
        tabs = {}
        for channel in ("c", "d", "e"):
            tab = context.new_page()
            tab.goto(server.url + f"/page?channel={channel}")
            expect(tab.locator("#status")).to_have_text("live")
            tabs[channel] = tab
        wait_for_channels(server, holder, {"a": 1, "c": 1, "d": 1, "e": 1})
        assert holder.evaluate("stream.holdsConnection")
        publish("seen", channel="d")
        expect(tabs["d"].locator("#events li")).to_have_text(["d: seen"])

        session = context.new_cdp_session(tabs["c"])._impl_obj
        session._loop.create_task(session.send("Page.crash", None, None))
        tabs["c"].wait_for_event("crash")
        tabs["d"].evaluate(BUSY.replace("1500", "9000"))  # 9 s without a turn of its event loop
        started = time.monotonic()
        _ask_who_is_there(holder)  # (the crashed and busy tabs answered the ask before)
        _ask_who_is_there(holder)
        wait_for_channels(server, holder, {"a": 1, "e": 1})
        publish("missed", channel="d")
        publish("other", channel="e")
        expect(tabs["e"].locator("#events li")).to_have_text(["e: other"])
        assert time.monotonic() - started < 9, "the busy tab woke up too soon for the test"

        wait_for_channels(server, holder, {"a": 1, "d": 1, "e": 1})
        publish("after", channel="d")
        expect(tabs["d"].locator("#events li")).to_have_text(["d: seen", "d: missed", "d: after"])
        expect(tabs["e"].locator("#events li")).to_have_text(["e: other"])
        assert server.client_count() == 1


STALE_ID = """
if (location.search.includes("stale=1")) {
  const key = "wsgi-sse:" + new URL("/sse", location.href).href + ":lastEventId";
  sessionStorage.setItem(key, "not-an-id-of-this-server");
}
"""


def test_init_and_reset_reach_every_tab(context: Any) -> None:
    """The init snapshot reaches tabs that join later; a tab that cannot be caught up gets reset."""
    with serve(page_app, initial=lambda request: "snapshot") as server:
        publish = server.service.broadcaster.broadcast_and_wait
        first = context.new_page()
        first.goto(server.url + "/page?channel=a")
        expect(first.locator("#events li")).to_have_text(["init: snapshot"])
        publish("1", channel="a")
        expect(first.locator("#events li")).to_have_text(["init: snapshot", "a: 1"])

        second = context.new_page()  # joins the connection: the snapshot, then what followed
        second.goto(server.url + "/page?channel=a")
        expect(second.locator("#events li")).to_have_text(["init: snapshot", "a: 1"])

        context.add_init_script(STALE_ID)
        third = context.new_page()  # resumes from an id nobody knows
        third.goto(server.url + "/page?channel=a&stale=1")
        expect(third.locator("#events li")).to_have_text(["reset"])
        publish("2", channel="a")
        expect(third.locator("#events li")).to_have_text(["reset", "a: 2"])
        expect(second.locator("#events li")).to_have_text(["init: snapshot", "a: 1", "a: 2"])
        assert server.client_count() == 1


def test_a_new_tab_past_the_kept_init_gets_a_reset(context: Any) -> None:
    """
    A new tab beside a holder whose init has left the events the tabs keep
    (more than 500 since) gets a reset, then the live events; with the init
    still kept, the snapshot and what followed.
    """
    with serve(page_app, retry=200, initial=lambda request: "snapshot") as server:
        publish = server.service.broadcaster.broadcast_and_wait
        holder = context.new_page()
        holder.goto(server.url + "/page?channel=a")
        expect(holder.locator("#events li")).to_have_text(["init: snapshot"])
        publish("0", channel="a")
        kept = context.new_page()
        kept.goto(server.url + "/page?channel=a")
        expect(kept.locator("#events li")).to_have_text(["init: snapshot", "a: 0"])
        for n in range(1, 501):
            publish(str(n), channel="a")
        expect(holder.locator("#events li")).to_have_count(502)
        late = context.new_page()
        late.goto(server.url + "/page?channel=a")
        expect(late.locator("#status")).to_have_text("live")
        publish("after", channel="a")
        expect(late.locator("#events li")).to_have_text(["reset", "a: after"])
        assert server.client_count() == 1


# Every event a stream dispatches to the page, in order, in window.dispatched.
RECORD_DISPATCHED = """
window.dispatched = [];
const dispatch = EventTarget.prototype.dispatchEvent;
EventTarget.prototype.dispatchEvent = function (event) {
  if (event.constructor.name === "StreamEvent" && event.type !== "statuschange") {
    window.dispatched.push(event.type + ": " + event.data);
  }
  return dispatch.call(this, event);
};
"""

BUSY = "setTimeout(() => { const t = performance.now(); while (performance.now() - t < 1500); })"


def test_a_tab_joining_a_busy_holder_gets_the_init_once(context: Any) -> None:
    """
    The holder, busy for 1.5 s, has the init and an event queued when a new
    tab opens: the tab gets them in the holder's catch-up and in its own
    queue, and shows each once, in order (the init was shown twice, the
    second time after the event, which the page then lost).
    """
    release = threading.Event()

    def initial(request: StreamRequest) -> str:
        release.wait(10)  # the holder's init is sent when the test says
        return "snapshot"

    context.add_init_script(RECORD_DISPATCHED)
    with serve(page_app, retry=200, initial=initial) as server:
        publish = server.service.broadcaster.broadcast_and_wait
        holder = context.new_page()
        holder.goto(server.url + "/page?channel=a")
        holder.wait_for_function("stream.holdsConnection")
        holder.evaluate(BUSY)
        time.sleep(0.2)
        release.set()  # the init, then an event, reach the busy holder
        time.sleep(0.3)
        publish("1", channel="a")
        time.sleep(0.2)
        tab = context.new_page()  # opens while the holder is still busy
        tab.goto(server.url + "/page?channel=a")
        expect(tab.locator("#status")).to_have_text("live")
        expect(holder.locator("#events li")).to_have_text(["init: snapshot", "a: 1"])
        publish("2", channel="a")
        expect(tab.locator("#events li")).to_have_text(["init: snapshot", "a: 1", "a: 2"])
        assert tab.evaluate("window.dispatched") == [
            "init: snapshot",
            "message: 1",
            "message: 2",
        ]


def test_module_works_as_a_static_file(context: Any) -> None:
    """The module served by the app itself (client_path=None) works the same."""
    script = (ROOT / "wsgi_sse" / "static" / "wsgi-sse.js").read_bytes()

    def static_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ["PATH_INFO"] == "/static/wsgi-sse.js":
            start_response("200 OK", [("Content-Type", "text/javascript")])
            return [script]
        return page_app(environ, start_response)

    with serve(static_app, client_path=None) as server:
        assert b"export function" not in http_request(server.port, "GET", "/sse.js")[2]
        tab = context.new_page()
        tab.goto(server.url + "/blank")
        tab.evaluate(
            """async () => {
              const { openStream } = await import("/static/wsgi-sse.js");
              window.got = [];
              window.s = openStream({ channels: ["x"] });
              window.s.addEventListener("message", (e) => window.got.push(e.data));
            }"""
        )
        tab.wait_for_function("window.s.status === 'live'")
        server.service.broadcaster.broadcast_and_wait("hi", channel="x")
        tab.wait_for_function("window.got.length === 1")
        assert tab.evaluate("window.got") == ["hi"]


def user_channels(request: StreamRequest) -> Allowed:
    """Everyone may read "public"; a user logged in (cookie "user") also "user-<name>"."""
    user = request.cookies.get("user")
    channels = {"public"} | ({f"user-{user}"} if user else set())
    return Allowed(channels, identity=user)


@pytest.mark.parametrize("holder", ["stale", "other"])
def test_a_channel_refused_after_logout_is_dropped_and_its_tab_told(
    context: Any, holder: str
) -> None:
    """
    After a logout, a stale tab's user channel is refused: the shared stream
    reconnects without it, every tab keeps "public", the stale tab is told
    (whichever tab holds the connection).
    """
    with serve(page_app, authorize=user_channels, retry=200) as server:
        context.add_cookies([{"name": "user", "value": "ada", "url": server.url}])
        queries = {"stale": "channel=public&channel=user-ada", "other": "channel=public"}
        tabs = {}
        for name in sorted(queries, key=lambda n: n != holder):  # the holder first
            tabs[name] = context.new_page()
            tabs[name].goto(f"{server.url}/page?{queries[name]}")
            expect(tabs[name].locator("#status")).to_have_text("live")
        stale, other = tabs["stale"], tabs["other"]
        assert tabs[holder].evaluate("stream.holdsConnection")
        wait_for_channels(server, stale, {"public": 1, "user-ada": 1})
        publish = server.service.broadcaster.broadcast_and_wait
        publish("hello ada", channel="user-ada")
        expect(stale.locator("#events li")).to_have_text(["user-ada: hello ada"])

        # The logout: the session goes, then its streams are ended.
        context.clear_cookies()
        assert server.call(server.service.hub.revoke, "ada") == 1
        wait_for_channels(server, stale, {"public": 1})
        publish("news", channel="public")
        expect(stale.locator("#events li")).to_have_text(
            ["user-ada: hello ada", "refused: user-ada", "public: news"]
        )
        expect(other.locator("#events li")).to_have_text(["public: news"])
        assert server.client_count() == 1
        # The stream, the HEAD asking for its answer, then the one asking about
        # user-ada alone ("public" was allowed).
        assert server.call(server.service.sse_resource.snapshot)["refused"] == {"403": 3}

        # A new login, in a new tab asking for the channel: it is asked for again.
        context.add_cookies([{"name": "user", "value": "ada", "url": server.url}])
        again = context.new_page()
        again.goto(f"{server.url}/page?channel=user-ada")
        wait_for_channels(server, again, {"public": 1, "user-ada": 1})
        publish("welcome back", channel="user-ada")
        expect(again.locator("#events li")).to_have_text(["user-ada: welcome back"])
        expect(stale.locator("#events li").last).to_have_text("user-ada: welcome back")


def test_a_tab_with_its_own_connection_drops_a_refused_channel_too(context: Any) -> None:
    """Without sharing (no BroadcastChannel), a tab's refused channel is dropped and reported."""
    context.add_init_script("delete window.BroadcastChannel; delete Navigator.prototype.locks;")
    with serve(page_app, authorize=user_channels, retry=200) as server:
        context.add_cookies([{"name": "user", "value": "bob", "url": server.url}])
        tab = context.new_page()
        tab.goto(f"{server.url}/page?channel=public&channel=user-bob")
        expect(tab.locator("#status")).to_have_text("live")
        assert tab.evaluate("stream.mode") == "single"
        context.clear_cookies()
        assert server.call(server.service.hub.revoke, "bob") == 1
        wait_for_channels(server, tab, {"public": 1})
        server.service.broadcaster.broadcast_and_wait("news", channel="public")
        expect(tab.locator("#events li")).to_have_text(["refused: user-bob", "public: news"])
        expect(tab.locator("#status")).to_have_text("live")


def test_tabs_resume_on_another_process_from_the_shared_backplane(
    context: Any, tmp_path: Any
) -> None:
    """
    Tabs whose server stops reconnect to another process of a Redis
    deployment at the same address: it never saw what they missed, and
    replays it from Redis to the right tabs, without reset.
    """
    sys.path.insert(0, str(ROOT / "tests" / "redis"))
    from redis_support import running_redis

    from wsgi_sse.redis import RedisPublisher

    listen = f"tcp:{free_port()}:interface=127.0.0.1"
    with running_redis(tmp_path) as redis:
        options: dict[str, Any] = {"listen": listen, "retry": 200, "backplane_url": redis.url}
        with serve(page_app, **options) as old:
            tabs = open_tabs(context, old, ("a", "b"))
            old.service.broadcaster.broadcast_and_wait("seen", channel="a")
            expect(tabs["a"].locator("#events li")).to_have_text(["a: seen"])
        # No server listens: events published meanwhile (by a worker).
        with RedisPublisher(redis.url) as publisher:
            for data, channel in (("missed 1", "b"), ("missed 2", "a"), ("missed 3", "b")):
                publisher.broadcast(data, channel=channel)
        with serve(page_app, **options) as new:
            wait_for_channels(new, tabs["a"], {"a": 1, "b": 1})
            new.service.broadcaster.broadcast_and_wait("live", channel="a")
            expect(tabs["a"].locator("#events li")).to_have_text(
                ["a: seen", "a: missed 2", "a: live"]
            )
            expect(tabs["b"].locator("#events li")).to_have_text(["b: missed 1", "b: missed 3"])
            assert new.service.hub.stats.replays_fetched == 1
            assert new.call(new.service.sse_resource.snapshot)["resets"] == 0


def waiting_connections(port: int) -> int:
    """How many connections wait in the listen backlog of 127.0.0.1:C{port} (from /proc)."""
    local = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == local and fields[3] == "0A":  # listening
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"nothing listens on port {port}")


def test_a_tab_waits_for_a_restarted_process_to_read_the_shared_history(
    context: Any, tmp_path: Any
) -> None:
    """
    A process restarted while its backplane is slow to answer takes no
    connection until its reader has its place in the shared history: the
    tab's reconnection waits in the listen backlog, never refused, then
    gets what it missed meanwhile and what follows.
    """
    sys.path.insert(0, str(ROOT / "tests" / "redis"))
    sys.path.insert(0, str(ROOT / "tests" / "backplanes"))
    from backplane_support import GatedProxy
    from redis_support import running_redis

    from wsgi_sse.redis import RedisPublisher

    listen = f"tcp:{free_port()}:interface=127.0.0.1"
    with running_redis(tmp_path) as redis:
        with serve(page_app, listen=listen, retry=200, backplane_url=redis.url) as old:
            tab = context.new_page()
            tab.goto(f"{old.url}/page?channel=a")
            expect(tab.locator("#status")).to_have_text("live")
            wait_for_channels(old, tab, {"a": 1})
            old.service.broadcaster.broadcast_and_wait("seen", channel="a")
            expect(tab.locator("#events li")).to_have_text(["a: seen"])
        proxy = GatedProxy(redis.port)
        slow_url = proxy.url_for(redis.url)
        with proxy, serve(page_app, listen=listen, retry=200, backplane_url=slow_url) as new:
            # The tab reconnects: its connection waits, not taken, not refused.
            for _ in range(400):
                if waiting_connections(new.port):
                    break
                tab.wait_for_timeout(25)
            assert waiting_connections(new.port) == 1
            assert new.client_count() == 0
            expect(tab.locator("#status")).to_have_text("reconnecting")
            with RedisPublisher(redis.url) as publisher:
                publisher.broadcast("missed", channel="a")
            proxy.open()
            wait_for_channels(new, tab, {"a": 1})
            new.service.broadcaster.broadcast_and_wait("live", channel="a")
            expect(tab.locator("#events li")).to_have_text(["a: seen", "a: missed", "a: live"])
            expect(tab.locator("#status")).to_have_text("live")
