"""
Serve the Flask knock app and its event stream with Twisted.

    cd examples/flask_app && twistd -ny server.py

Listens on $WSGI_SSE_LISTEN, else tcp:8005.
"""

import os
import sys

# twistd does not put the .tac file's directory on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from app import app

from wsgi_sse import make_application

application = make_application(app)
