"""
A request's own address (C{request.host}, C{SERVER_PORT}) over real
sockets: the address each connection reached, on a port listening on one
address and on a port listening on every address.
"""

from __future__ import annotations

import json
import socket
from typing import Any

from support import serve
from twisted.web.resource import Resource


class Where(Resource):
    """Answer with the request's own address, as twisted.web gives it."""

    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        host = request.getHost()
        return json.dumps([type(host).__name__, host.host, host.port]).encode()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app that answers with its SERVER_PORT."""
    body = environ["SERVER_PORT"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def ask(sock: socket.socket, path: str) -> bytes:
    """GET C{path} (HTTP/1.1, then close) on the connected C{sock}; the body of its 200."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    return body


def get(address: str, port: int, path: str) -> bytes:
    """GET C{path} from C{address}:C{port} on a connection of its own; the body."""
    with socket.create_connection((address, port), timeout=10) as sock:
        return ask(sock, path)


def test_one_address_every_connection_gets_the_ports_address() -> None:
    """On 127.0.0.1: a Twisted resource's and a WSGI page's requests get 127.0.0.1, the port."""
    with serve(app, resources={"/where": Where()}) as server:
        port = server.port
        for _ in range(3):
            assert json.loads(get("127.0.0.1", port, "/where")) == [
                "IPv4Address",
                "127.0.0.1",
                port,
            ]
            assert get("127.0.0.1", port, "/page") == str(port).encode()


def test_every_address_each_connection_gets_the_address_it_reached() -> None:
    """On 0.0.0.0: a connection to 127.0.0.2 is told 127.0.0.2, one to 127.0.0.1 127.0.0.1."""
    with serve(app, resources={"/where": Where()}, listen="tcp:0:interface=0.0.0.0") as server:
        port = server.port
        for address in ("127.0.0.1", "127.0.0.2", "127.0.0.1", "127.0.0.3"):
            assert json.loads(get(address, port, "/where")) == ["IPv4Address", address, port]
            assert get(address, port, "/page") == str(port).encode()


def test_a_port_listening_anew_gives_its_new_number() -> None:
    """A port that stops and listens again (on a new ephemeral number) is not told the old one."""
    from twisted.internet import reactor

    with serve(app, resources={"/where": Where()}) as server:
        port: Any = server.call(
            lambda: reactor.listenTCP(0, server.service.site, interface="127.0.0.1")
        )
        try:
            first = port.getHost().port
            assert json.loads(get("127.0.0.1", first, "/where")) == [
                "IPv4Address",
                "127.0.0.1",
                first,
            ]
            server.call(port.stopListening)
            server.call(port.startListening)
            second = port.getHost().port
            assert second != first
            for _ in range(2):
                where = json.loads(get("127.0.0.1", second, "/where"))
                assert where == ["IPv4Address", "127.0.0.1", second]
        finally:
            server.call(port.stopListening)


def test_an_adopted_connection_gets_its_own_address() -> None:
    """A connection handed to the server (adoptStreamConnection, no listening port) is served."""
    from twisted.internet import reactor

    with serve(app, resources={"/where": Where()}) as server:
        with socket.socket() as listening:
            listening.bind(("127.0.0.1", 0))
            listening.listen(1)
            number = listening.getsockname()[1]
            with socket.create_connection(("127.0.0.1", number), timeout=10) as client:
                accepted, _ = listening.accept()
                with accepted:
                    accepted.setblocking(False)
                    server.call(
                        lambda: reactor.adoptStreamConnection(
                            accepted.fileno(), socket.AF_INET, server.service.site
                        )
                    )
                where = json.loads(ask(client, "/where"))
    assert where == ["IPv4Address", "127.0.0.1", number]
