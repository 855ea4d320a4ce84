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

from twisted_protocol_server import Answer, serve  # beside this file

OPENING = b": connected\nretry: 3000\n\n"
STREAM = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
    b"%x\r\n%s\r\n" % (len(OPENING), OPENING)
)


class Stream(Answer):
    def answer(self, head, body):
        if head.startswith(b"GET /sse"):
            self.buffer = None  # a stream: nothing more is read
            self.transport.write(STREAM)
        else:
            super().answer(head, body)


if __name__ == "__main__":
    serve(Stream, 4096)
