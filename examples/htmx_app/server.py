"""
Serve the htmx chat and its event stream with Twisted.

    cd examples/htmx_app && npm ci && twistd -ny server.py

The pages load htmx from ``node_modules/`` (``npm ci`` installs the pinned
versions of package.json), served at ``/vendor/``; set ``HTMX_NODE_MODULES``
to serve them from another ``node_modules`` directory.  Nothing is fetched
from a CDN.  Listens on $WSGI_SSE_LISTEN, else tcp:8005.
"""

import os
import sys

# twistd does not put the .tac file's directory on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from app import app, initial
from twisted.web.static import File

from wsgi_sse import make_application

HERE = os.path.dirname(os.path.abspath(__file__))
modules = os.environ.get("HTMX_NODE_MODULES") or os.path.join(HERE, "node_modules")
if not os.path.isdir(os.path.join(modules, "htmx.org")):
    sys.exit(f"server.py: no htmx in {modules}: run `npm ci` in {HERE}")

application = make_application(
    app,
    initial=initial,
    resources={"/vendor": File(modules)},
)
