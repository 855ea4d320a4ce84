"""
A request answered by a bare Twisted protocol: the floor's answer to
``POST /knock`` (``ok``, then the connection closed) once the request's
head and body are in, with no HTTP library at all.  The lowest rung of
``benchmarks/requestcost.py``: what Twisted's reactor and TCP transport
cost per connection.

    python twisted_protocol_server.py PORT
"""

import sys

from twisted.internet import protocol, reactor

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"


class Answer(protocol.Protocol):
    def connectionMade(self):
        self.buffer = b""

    def dataReceived(self, data):
        if self.buffer is None:
            return  # answered: nothing more is read
        self.buffer += data
        head, found, body = self.buffer.partition(b"\r\n\r\n")
        if found:
            self.answer(head, body)

    def answer(self, head, body):
        """Answer ``ok`` once the whole body is in (its Content-Length)."""
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(body) >= length:
            self.buffer = None
            self.transport.write(ANSWER)
            self.transport.loseConnection()


def serve(protocol_class, backlog):
    """Listen on the port given on the command line, on 127.0.0.1, and run."""
    factory = protocol.Factory.forProtocol(protocol_class)
    reactor.listenTCP(int(sys.argv[1]), factory, backlog=backlog, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    serve(Answer, 2048)
