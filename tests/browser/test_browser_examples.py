"""The examples in a real browser: live updates, reconnects and replay as users see them."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any
from urllib.parse import urlencode

from example_server import ExampleServer, run_example
from playwright.sync_api import expect
from support import free_port, http_request

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def knock(port: int, name: str) -> None:
    """POST /knock straight to the server, as another user's browser would."""
    status, _, _ = http_request(
        port, "POST", "/knock", body=urlencode({"name": name}).encode(), headers=FORM
    )
    assert status == 200


def test_bottle_knock_shows_in_other_tab(new_page: Any, screenshot: Any) -> None:
    """A knock submitted in one tab appears in the other, which never reloads."""
    with run_example("bottle_app") as server:
        watcher = new_page()
        watcher.goto(server.url + "/")
        expect(watcher.locator("#status")).to_have_text("live")
        watcher.evaluate("window.loadedOnce = true")

        knocker = new_page()
        knocker.goto(server.url + "/hello/")
        knocker.fill("input[name=name]", "Ada")
        screenshot(knocker, "bottle-hello")
        knocker.click("input[type=submit]")
        expect(knocker.locator("body")).to_contain_text("Ada knocked!")

        expect(watcher.locator("#events li")).to_have_text(["Ada knocked"])
        knocker.goto(server.url + "/hello/")
        knocker.fill("input[name=name]", "Grace <b>")
        knocker.click("input[type=submit]")
        expect(watcher.locator("#events li")).to_have_text(["Ada knocked", "Grace <b> knocked"])
        assert watcher.evaluate("window.loadedOnce") is True
        screenshot(watcher, "bottle-knocks")


def test_page_reconnects_after_server_restart(new_page: Any) -> None:
    """After a restart on the same port the page's EventSource reconnects by itself."""
    port = free_port()
    server = ExampleServer("bottle_app", port)
    try:
        server.start()
        page = new_page()
        page.goto(server.url + "/")
        expect(page.locator("#status")).to_have_text("live")
        page.evaluate("window.loadedOnce = true")
        knock(port, "Before")
        expect(page.locator("#events li")).to_have_text(["Before knocked"])

        assert server.stop() in (0, -15)
        expect(page.locator("#status")).to_have_text("reconnecting…")
        server.start()
        # The library sent retry: 3000-4500 ms; the page comes back on its own.
        expect(page.locator("#status")).to_have_text("live", timeout=15_000)
        knock(port, "After")
        expect(page.locator("#events li")).to_have_text(["Before knocked", "After knocked"])
        assert page.evaluate("window.loadedOnce") is True
    finally:
        server.close()


def request_headers(head: bytes) -> dict[str, str]:
    """The headers of an HTTP request head, names in lower case."""
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}


class DroppingProxy:
    """
    A TCP proxy between the browser and the server that can cut every open
    connection and hold new ones until released.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.requests: list[bytes] = []
        self.released = threading.Event()
        self.released.set()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(downstream,), daemon=True).start()

    def _serve(self, downstream: socket.socket) -> None:
        with self.lock:
            self.open.append(downstream)
        self.released.wait()
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            downstream.close()
            return
        with self.lock:
            self.open.append(upstream)
        threading.Thread(target=self._pump, args=(upstream, downstream, False), daemon=True).start()
        self._pump(downstream, upstream, True)

    def _pump(self, source: socket.socket, sink: socket.socket, record: bool) -> None:
        try:
            while data := source.recv(65536):
                if record and data.startswith((b"GET ", b"POST ")):
                    with self.lock:
                        self.requests.append(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Drop every open connection (reset, as a failing network would)."""
        with self.lock:
            sockets, self.open = self.open, []
        for s in sockets:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                # shutdown() wakes the pump blocked in recv(); close() then resets.
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.closed = True
        self.released.set()
        self.listener.close()
        self.cut()


def test_page_replays_missed_events_exactly_once(new_page: Any) -> None:
    """Events broadcast while the connection is cut arrive after the reconnect, each once."""
    with run_example("bottle_app") as server:
        proxy = DroppingProxy(server.port)
        try:
            page = new_page()
            page.goto(f"http://127.0.0.1:{proxy.port}/")
            expect(page.locator("#status")).to_have_text("live")
            for n in range(1, 6):
                knock(server.port, f"#{n}")
            expected = [f"#{n} knocked" for n in range(1, 6)]
            expect(page.locator("#events li")).to_have_text(expected)

            proxy.released.clear()  # hold the reconnect until the events are out
            proxy.cut()
            expect(page.locator("#status")).to_have_text("reconnecting…")
            for n in range(6, 16):
                knock(server.port, f"#{n}")
            proxy.released.set()
            for n in range(16, 19):
                knock(server.port, f"#{n}")

            expected = [f"#{n} knocked" for n in range(1, 19)]
            expect(page.locator("#status")).to_have_text("live", timeout=15_000)
            expect(page.locator("#events li")).to_have_text(expected)
            streams = [request_headers(r) for r in proxy.requests if r.startswith(b"GET /sse?")]
            assert len(streams) == 2
            assert "last-event-id" not in streams[0]
            # The browser resumed after the 5th event, the last it had seen
            # (its id tagged with the channel by the page's client module).
            assert streams[1]["last-event-id"].endswith("-5 default")
        finally:
            proxy.close()
