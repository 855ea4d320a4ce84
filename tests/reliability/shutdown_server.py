"""
The .tac file the shutdown test runs as ``twistd -ny shutdown_server.py``:
rel_app served by make_application() on $WSGI_SSE_LISTEN.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rel_app import app  # noqa: E402

from wsgi_sse import make_application  # noqa: E402

application = make_application(app)
