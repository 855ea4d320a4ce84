"""
Event streams held by a bare Twisted protocol: what Twisted's reactor and
TCP transport alone cost per accepted stream, with no HTTP library.  A
``GET /sse`` is answered at once with the stream's head and opening lines
(as wsgi-sse answers it) and held open; any other request gets ``ok`` and
the connection is closed.  No events, no subscription, no limits: the
ceiling of a server built on Twisted, beside wsgi-sse in the accept
scenario of ``benchmarks/run.py``.

    python twisted_stream_server.py PORT
"""

import sys

from twisted.internet import protocol, reactor

OPENING = b": connected\nretry: 3000\n\n"
STREAM = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"%x\r\n%s\r\n" % (len(OPENING), OPENING)
)
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


class Stream(protocol.Protocol):
    def connectionMade(self):
        self.buffer = b""

    def dataReceived(self, data):
        if self.buffer is None:
            return  # a stream: nothing more is read
        self.buffer += data
        head, found, body = self.buffer.partition(b"\r\n\r\n")
        if not found:
            return
        if head.startswith(b"GET /sse"):
            self.buffer = None
            self.transport.write(STREAM)
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) >= length:
            self.transport.write(ANSWER)
            self.transport.loseConnection()


factory = protocol.Factory.forProtocol(Stream)
reactor.listenTCP(int(sys.argv[1]), factory, backlog=4096, interface="127.0.0.1")
reactor.run()
