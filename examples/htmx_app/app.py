"""
A chat room with htmx: a plain Bottle application whose views broadcast HTML
fragments, which htmx swaps into every open page.

Two pages share the one stream: ``/`` uses htmx 2 with the ``htmx-ext-sse``
extension (``sse-connect`` and ``sse-swap``), ``/htmx4`` uses htmx 4 and its
``hx-sse`` extension (``hx-sse:connect``; unnamed messages are swapped in).
Run it with ``twistd -ny server.py`` from this directory.
"""

from __future__ import annotations

import collections
import threading
from html import escape

from bottle import Bottle, HTTPResponse, request

from wsgi_sse import StreamRequest, broadcast

app = Bottle()

CHANNEL = "chat"
_recent: collections.deque[str] = collections.deque(maxlen=50)
_lock = threading.Lock()

HTMX2_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Chat (htmx 2)</title>
  <script src="/vendor/htmx2/dist/htmx.min.js"></script>
  <script src="/vendor/htmx-ext-sse/dist/sse.js"></script>
</head>
<body>
  <h1>Chat <small>(htmx 2 + htmx-ext-sse)</small></h1>
  <p id="status">connecting…</p>
  <div hx-ext="sse" sse-connect="/sse?channel=chat"
       hx-on:htmx:sse-open="document.getElementById('status').textContent = 'live'"
       hx-on:htmx:sse-error="document.getElementById('status').textContent = 'reconnecting…'">
    <!-- init: the whole list, sent by the server on every new connection. -->
    <ul id="messages" sse-swap="init" hx-swap="innerHTML"></ul>
    <!-- message: one new line, appended. -->
    <div hidden sse-swap="message" hx-target="#messages" hx-swap="beforeend"></div>
  </div>
  FORM
</body>
</html>
"""

HTMX4_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Chat (htmx 4)</title>
  <script src="/vendor/htmx.org/dist/htmx.min.js"></script>
  <script src="/vendor/htmx.org/dist/ext/hx-sse.js"></script>
</head>
<body>
  <h1>Chat <small>(htmx 4)</small></h1>
  <p id="status">connecting…</p>
  <!-- Unnamed messages are appended; the named init event replaces the list. -->
  <ul id="messages" hx-sse:connect="/sse?channel=chat" hx-swap="beforeend"
      hx-on:init="document.getElementById('messages').innerHTML = event.detail.data"
      hx-on:htmx:sse:after:connection="document.getElementById('status').textContent = 'live'"
      hx-on:htmx:sse:error="document.getElementById('status').textContent = 'reconnecting…'">
  </ul>
  FORM
</body>
</html>
"""

FORM = """<form hx-post="/messages" hx-swap="none" AFTER_REQUEST="this.reset()">
    <input name="author" placeholder="Your name" required>
    <input name="text" placeholder="Say something" required autocomplete="off">
    <button>Send</button>
  </form>"""


def fragment(author: str, text: str) -> str:
    """One message as an HTML fragment; what users typed is escaped."""
    return f'<li class="message"><b>{escape(author)}</b>: {escape(text)}</li>'


@app.get("/")
def htmx2_page() -> str:
    """The chat page for htmx 2."""
    return HTMX2_PAGE.replace("FORM", FORM.replace("AFTER_REQUEST", "hx-on::after-request"))


@app.get("/htmx4")
def htmx4_page() -> str:
    """The chat page for htmx 4."""
    return HTMX4_PAGE.replace("FORM", FORM.replace("AFTER_REQUEST", "hx-on::after:request"))


@app.post("/messages")
def post_message() -> HTTPResponse:
    """Add a message and push it, as HTML, to every open page."""
    author = (request.forms.getunicode("author") or "").strip()[:40]
    text = (request.forms.getunicode("text") or "").strip()[:500]
    if not author or not text:
        return HTTPResponse("author and text are required\n", status=400)
    html = fragment(author, text)
    with _lock:
        _recent.append(html)
        # Broadcast under the lock: the order of the list is the order of the stream.
        broadcast(html, channel=CHANNEL)
    return HTTPResponse(status=204)


def initial(stream: StreamRequest) -> str:
    """
    The whole list, for a new connection: htmx 2 reconnects with a new
    EventSource, without Last-Event-ID, and gets the list again instead of
    missing what was said meanwhile.
    """
    with _lock:
        return "".join(_recent)
