"""
The Bottle example as ``examples/bottle_app/server.py`` serves it, with its
WSGI threads under the normal scheduling policy (``sched_batch=False``).

    WSGI_SSE_LISTEN=tcp:8009:interface=127.0.0.1 twistd -ny wsgi_sse_no_sched_batch.py
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "examples", "bottle_app"))

from app import app  # noqa: E402

from wsgi_sse import make_application  # noqa: E402

application = make_application(app, sched_batch=False)
