"""
The knock app in Flask: a plain Flask application that pushes live updates.

It knows nothing of Twisted; the only new line in a view is ``broadcast()``.
Run it with ``twistd -ny server.py`` from this directory.
"""

from flask import Flask, render_template_string, request

from wsgi_sse import broadcast

app = Flask(__name__)

INDEX = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Knocks</title>
</head>
<body>
  <h1>Who's knocking?</h1>
  <p id="status">connecting…</p>
  <ul id="events"></ul>
  <p><a href="/hello/">Knock yourself</a></p>
  <script type="module">
    // wsgi-sse's browser client: all tabs of this site share one connection.
    import { openStream } from "/sse.js";
    const status = document.getElementById("status");
    const list = document.getElementById("events");
    const stream = openStream({ url: "/sse" });
    const LABELS = { live: "live", reconnecting: "reconnecting…", closed: "closed" };
    stream.addEventListener("statuschange", (e) => {
      status.textContent = LABELS[e.data] || "connecting…";
    });
    stream.addEventListener("message", (e) => {
      const item = document.createElement("li");
      item.textContent = e.data;  // text, never HTML: names are user input
      list.appendChild(item);
    });
  </script>
</body>
</html>
"""

HELLO = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Knock</title></head>
<body>
  <p>Please introduce yourself:</p>
  <form action="/knock" method="post">
    <input type="text" name="name" required>
    <input type="submit" value="Knock">
  </form>
</body>
</html>
"""

KNOCKED = """<!doctype html><meta charset="utf-8"><p>{{ name }} knocked!</p>
<p><a href="/hello/">Again</a> · <a href="/">Watch</a></p>"""


@app.get("/")
def index() -> str:
    """The page that shows every knock as it happens."""
    return INDEX


@app.get("/hello/")
def hello() -> str:
    """The knock form."""
    return HELLO


@app.post("/knock")
def knock() -> str:
    """Tell every open page who knocked."""
    name = (request.form.get("name") or "").strip() or "Someone"
    broadcast(f"{name} knocked")
    # Jinja escapes the name: it is user input.
    return render_template_string(KNOCKED, name=name)


application = app
