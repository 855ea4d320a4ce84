"""
A request answered by twisted.web with no WSGI: a leaf resource that
answers ``POST /knock`` with ``ok`` (its form read by twisted.web, as every
request's is), no access log.  A rung of ``benchmarks/requestcost.py``:
what twisted.web's channel and request cost per connection.

    python twisted_web_server.py PORT [--wsgi | --stream]

With ``--wsgi``: the same answer from ``minimal_app.py`` under
twisted.web's own ``WSGIResource`` (the reactor's thread pool).  With
``--stream``: ``GET /sse`` answered at once with an event stream's head and
opening lines and held open (``request.write``, ``NOT_DONE_YET``), as
``twisted_stream_server.py`` answers it without twisted.web: what
twisted.web's channel and request cost per accepted stream, beside wsgi-sse
in the accept scenario of ``benchmarks/run.py``.
"""

import sys

from twisted.internet import reactor
from twisted.web import resource, server, wsgi


class Knock(resource.Resource):
    isLeaf = True

    def render_POST(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"ok\n"


class Streams(resource.Resource):
    isLeaf = True

    def __init__(self):
        super().__init__()
        self.open = set()

    def render_GET(self, request):
        if request.path != b"/sse":
            request.setHeader(b"content-type", b"text/plain")
            return b"ok\n"
        request.setHeader(b"content-type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"cache-control", b"no-cache")
        request.write(b": connected\nretry: 3000\n\n")
        self.open.add(request)
        request.notifyFinish().addBoth(lambda _: self.open.discard(request))
        return server.NOT_DONE_YET

    def render_POST(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"ok\n"


if "--wsgi" in sys.argv:
    from minimal_app import app

    root = wsgi.WSGIResource(reactor, reactor.getThreadPool(), app)
elif "--stream" in sys.argv:
    root = Streams()
else:
    root = Knock()
site = server.Site(root)
site.log = lambda request: None  # no access log, as the other rungs
reactor.listenTCP(int(sys.argv[1]), site, backlog=2048, interface="127.0.0.1")
reactor.run()
