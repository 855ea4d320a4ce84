"""
wsgi-sse: live Server-Sent Events for any WSGI application, on Twisted.

Serve your WSGI app and an event stream from one process, and push to every
open page from ordinary view code::

    # server.py -- run with: twistd -ny server.py
    import os, sys
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

    from wsgi_sse import make_application
    from myapp import app

    application = make_application(app)

    # in a view, in any thread:
    from wsgi_sse import broadcast
    broadcast("Ada knocked")
"""

from ._app import SSEServerService, WSGIThreadPool, make_application, make_service
from ._broadcast import (
    Broadcaster,
    broadcast,
    broadcast_and_wait,
    close,
    get_broadcaster,
    set_broadcaster,
)
from ._config import BackplaneOptions, LimitOptions, PublishOptions, SiteOptions
from ._encoding import encode_comment, encode_event
from ._hub import DEFAULT_CHANNEL, Event, Hub
from ._mount import WSGIRoot
from ._options import StreamOptions, StreamRequest
from ._resource import SSEResource
from ._static import StaticFiles
from ._tokens import InvalidStreamToken, StreamGrant, stream_token, verify_stream_token
from ._views import HoldingWSGIResource, hold_body, hold_headers

__version__ = "0.1.0"

__all__ = (
    "DEFAULT_CHANNEL",
    "BackplaneOptions",
    "Broadcaster",
    "Event",
    "HoldingWSGIResource",
    "Hub",
    "InvalidStreamToken",
    "LimitOptions",
    "PublishOptions",
    "SSEResource",
    "SSEServerService",
    "SiteOptions",
    "StaticFiles",
    "StreamGrant",
    "StreamOptions",
    "StreamRequest",
    "WSGIRoot",
    "WSGIThreadPool",
    "__version__",
    "broadcast",
    "broadcast_and_wait",
    "close",
    "encode_comment",
    "encode_event",
    "get_broadcaster",
    "hold_body",
    "hold_headers",
    "make_application",
    "make_service",
    "set_broadcaster",
    "stream_token",
    "verify_stream_token",
)
