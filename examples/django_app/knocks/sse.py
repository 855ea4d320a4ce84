"""The example's stream hook, named in ``settings.WSGI_SSE``."""

from typing import Any

from wsgi_sse import DEFAULT_CHANNEL, StreamRequest

from .models import Knock

RECENT = 20


def initial(request: StreamRequest) -> Any:
    """
    What a new page starts from: the recent knocks, oldest first.

    Sent as the stream's first (``init``) event, and followed by every knock
    published since, so that the page's list misses none.  Runs in a WSGI
    thread; wsgi-sse wraps it to manage the database connection as a
    Django request would.
    """
    if DEFAULT_CHANNEL not in request.channels:
        return None
    names = list(Knock.objects.values_list("name", flat=True)[:RECENT])
    return {"knocks": [f"{name} knocked" for name in reversed(names)]}
