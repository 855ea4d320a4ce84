"""The example's stream hooks, named in ``settings.WSGI_SSE``."""

from typing import Any

import wsgi_sse
from wsgi_sse import DEFAULT_CHANNEL, Presence, PresenceChange, StreamRequest
from wsgi_sse.contrib.django import user_channels

from .models import Knock

PRESENCE_CHANNEL = "presence"
"""Where every page is told who has the page open (a "presence" event)."""

authorize = user_channels(public=(DEFAULT_CHANNEL, PRESENCE_CHANNEL))
"""
Everyone may join "default" and "presence"; "user-<id>" only that user's
own pages.  A logged-in page carries the username as its identity.
"""

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
    init: dict[str, Any] = {"knocks": [f"{name} knocked" for name in reversed(names)]}
    if PRESENCE_CHANNEL in request.channels:
        init["present"] = describe(wsgi_sse.presence(DEFAULT_CHANNEL))
    return init


def describe(present: Presence) -> str:
    """Who has the page open: "ada, grace and 2 guests"."""
    guests = f"{present.guests} guest" + ("" if present.guests == 1 else "s")
    if not present.users:
        return guests if present.guests else "nobody"
    users = ", ".join(present.users)
    return f"{users} and {guests}" if present.guests else users


def on_presence(change: PresenceChange) -> None:
    """
    Someone opened or closed the page (joined or left "default"): tell
    every open page who is here now, on the "presence" channel.

    Runs in a WSGI thread once per user (three tabs of one user: one join,
    one leave when the last closes) and once per guest page.
    """
    if change.channel == DEFAULT_CHANNEL:
        wsgi_sse.broadcast(describe(change.presence), event="presence", channel=PRESENCE_CHANNEL)
