"""The public API is exactly what is documented."""

from __future__ import annotations

import wsgi_sse


def test_all_is_pinned() -> None:
    """__all__ lists exactly the public names, and each exists."""
    assert set(wsgi_sse.__all__) == {
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
    }
    for name in wsgi_sse.__all__:
        assert hasattr(wsgi_sse, name), name


def test_importing_does_not_touch_the_reactor_or_crochet() -> None:
    """Importing wsgi_sse neither installs a reactor nor sets crochet up."""
    import subprocess
    import sys

    from support import subprocess_env

    code = (
        "import sys, wsgi_sse\n"
        "assert 'twisted.internet.reactor' not in sys.modules, 'reactor installed'\n"
        "import crochet._eventloop\n"
        "from crochet import _main\n"
        "assert not _main._started, 'crochet set up at import'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env=subprocess_env())
