"""
The .tac file the shutdown test runs as ``twistd -ny shutdown_server.py``:
rel_app served by make_application() on $WSGI_SSE_LISTEN.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rel_app import app

from wsgi_sse import make_application

application = make_application(app)
