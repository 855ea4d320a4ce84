"""
A request answered by twisted.web with no WSGI: a leaf resource that
answers ``POST /knock`` with ``ok`` (its form read by twisted.web, as every
request's is), no access log.  A rung of ``benchmarks/requestcost.py``:
what twisted.web's channel and request cost per connection.

    python twisted_web_server.py PORT [--wsgi]

With ``--wsgi``: the same answer from ``minimal_app.py`` under
twisted.web's own ``WSGIResource`` (the reactor's thread pool).
"""

import sys

from twisted.internet import reactor
from twisted.web import resource, server, wsgi


class Knock(resource.Resource):
    isLeaf = True

    def render_POST(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return b"ok\n"


if "--wsgi" in sys.argv:
    from minimal_app import app

    root = wsgi.WSGIResource(reactor, reactor.getThreadPool(), app)
else:
    root = Knock()
site = server.Site(root)
site.log = lambda request: None  # no access log, as the other rungs
reactor.listenTCP(int(sys.argv[1]), site, backlog=2048, interface="127.0.0.1")
reactor.run()
