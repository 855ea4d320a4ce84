"""
``minimal_app.py`` served by wsgi-sse, without the access log line
(``access_log=False``): a rung of ``benchmarks/requestcost.py``, the same
application as under twisted.web's ``WSGIResource``.

    WSGI_SSE_LISTEN=tcp:8009:interface=127.0.0.1 twistd -ny wsgi_sse_minimal.py
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from minimal_app import app  # noqa: E402

from wsgi_sse import make_application  # noqa: E402

application = make_application(app, access_log=False)
