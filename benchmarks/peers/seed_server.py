"""
The seed blog's design, ported faithfully to Python 3: a twisted.web
resource that keeps a list of requests and calls ``request.write`` on each,
broadcast through crochet's ``run_in_reactor``, behind the same Bottle app as
wsgi-sse's example.

    WSGI_SSE_LISTEN=tcp:8006:interface=127.0.0.1 twistd -ny seed_server.py

Differences from the blog, all needed to run it at all:
- bytes on the wire (``request.write`` takes bytes in Python 3), ``print()``;
- the blog wires ``broadcast_message_async`` (the undecorated method) into
  the app, which would call ``request.write`` from a WSGI thread; the
  crochet-decorated ``broadcast_message`` is what the blog means and uses;
- the example app calls ``wsgi_sse.broadcast()``; here that is pointed at the
  seed resource instead of a wsgi-sse hub, so the view code is identical;
- the listening port asks for an accept queue of 1024 (Twisted's default is
  50, and with thousands of clients connecting at once the kernel then drops
  connections and the clients retry 1, 3, 7... seconds later: the seed's
  10,000-client runs would not finish).  wsgi-sse asks for 2048.
"""

import os
import sys

import crochet

crochet.no_setup()

from twisted.application import internet, service  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.python import threadpool  # noqa: E402
from twisted.web import resource, server, wsgi  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "examples", "bottle_app"))


# ---- sse.py -----------------------------------------------------------------
crochet.setup()  # as in the blog: a no-op after no_setup() under twistd


def _format_sse(msg, event=None):
    data = []
    if event is not None:
        data.append("event: {}\n".format(event))
    for line in msg.splitlines():
        data.append("data: {}\n".format(line))
    data.append("\n")
    return "".join(data)


class SSEResource(resource.Resource):
    def __init__(self):
        resource.Resource.__init__(self)
        self._listeners = []

    def add_listener(self, request):
        print("listener connected", request)
        self._listeners.append(request)
        request.notifyFinish().addBoth(self.remove_listener, request)

    def remove_listener(self, reason, listener):
        print("listener disconnected", listener, "reason", reason)
        self._listeners.remove(listener)

    @crochet.run_in_reactor
    def broadcast_message(self, msg, event=None):
        self.broadcast_message_async(msg, event)

    def broadcast_message_async(self, msg, event=None):
        sse = _format_sse(msg, event).encode("utf-8")
        for listener in self._listeners:
            listener.write(sse)

    def render_GET(self, request):
        request.setHeader("Content-Type", "text/event-stream")
        self.add_listener(request)
        return server.NOT_DONE_YET


# ---- server.py --------------------------------------------------------------
class WsgiRoot(resource.Resource):
    def __init__(self, wsgi_resource):
        resource.Resource.__init__(self)
        self.wsgi_resource = wsgi_resource

    def getChild(self, path, request):
        path0 = request.prepath.pop(0)
        request.postpath.insert(0, path0)
        return self.wsgi_resource


def get_wsgi_resource(wsgi_app):
    pool = threadpool.ThreadPool()
    pool.start()
    reactor.addSystemEventTrigger("after", "shutdown", pool.stop)
    return wsgi.WSGIResource(reactor, pool, wsgi_app)


class _SeedBroadcaster:
    """Routes the example view's ``broadcast()`` to the seed resource."""

    def __init__(self, sse_resource):
        self.sse_resource = sse_resource

    def broadcast(self, data, *, event=None, channel=None, retry=None):
        self.sse_resource.broadcast_message(data, event)


class QuietSSEResource(SSEResource):
    """The same resource without a print per connection (seed_quiet_server.py)."""

    def add_listener(self, request):
        self._listeners.append(request)
        request.notifyFinish().addBoth(self.remove_listener, request)

    def remove_listener(self, reason, listener):
        self._listeners.remove(listener)


def start(quiet=False, backlog=1024):
    sse_resource = QuietSSEResource() if quiet else SSEResource()
    from app import app as wsgi_app

    import wsgi_sse

    wsgi_sse.set_broadcaster(_SeedBroadcaster(sse_resource))
    root = WsgiRoot(get_wsgi_resource(wsgi_app))
    root.putChild(b"sse", sse_resource)
    main_site = server.Site(root)
    listen = os.environ.get("WSGI_SSE_LISTEN", "tcp:8005")
    port = int(listen.split(":")[1])
    # backlog: see the module docstring.
    srv = internet.TCPServer(port, main_site, backlog=backlog, interface="127.0.0.1")
    application = service.Application("twisted_wsgi_sse_integration")
    srv.setServiceParent(application)
    return application


if __name__ != "seed_server":  # run by twistd, not imported by seed_quiet_server.py
    application = start()
