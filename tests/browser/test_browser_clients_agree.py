"""Chromium, httpx-sse and Node's eventsource read exactly what was broadcast."""

from __future__ import annotations

import json
import re
import subprocess
import threading
from typing import Any

import httpx
from httpx_sse import connect_sse
from playwright.sync_api import expect
from support import ROOT, serve, subprocess_env

from wsgi_sse import broadcast

MEGABYTE = "".join(f"{i:07d}🦄" for i in range(125_000))  # 1 MB of UTF-8, no line breaks
JSON_VALUE = {"id": 7, "text": 'é\n🦄 "quoted"', "list": [1, 2.5, None, True], "nested": {"a": []}}

# (data, event, retry) as broadcast.
CORPUS: list[tuple[Any, str | None, int | None]] = [
    ("plain", None, None),
    ("line one\nline two\nline three", None, None),
    ("crlf one\r\ncrlf two", None, None),
    ("cr one\rcr two", None, None),
    ("mixed\r\n\n\rend", None, None),
    ("", None, None),
    ("\n", None, None),
    ("trailing newline\n", None, None),
    ("  two leading spaces", None, None),
    (" one leading space", None, None),
    (":starts with a colon", None, None),
    ("key: value: more", None, None),
    ("id: 99\n\nevent: fake\ndata: injected", None, None),
    ("\ufeffbyte order mark", None, None),
    ("nul\x00inside", None, None),
    ("beyond the BMP: 🦄 𝄞 𠜎", None, None),
    (MEGABYTE, None, None),
    (JSON_VALUE, None, None),
    ([1, "two", 3.5], None, None),
    ("named", "job", None),
    ("ünïcödé name", "ünï", None),
    ({"spaced": True}, "with space", None),
    ("with retry", None, 2500),
    ("named with retry", "job", 4000),
    ("last", None, None),
]
TYPES = sorted({event for _, event, _ in CORPUS if event})


def expected_events() -> list[dict[str, str]]:
    """What the WHATWG spec says a client dispatches for the corpus: line breaks become LF."""
    out = []
    for data, event, _ in CORPUS:
        text = (
            data
            if isinstance(data, str)
            else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        )
        out.append({"type": event or "message", "data": re.sub(r"\r\n|\r", "\n", text)})
    return out


PAGE = """<!doctype html><meta charset="utf-8"><title>reader</title><p id="count">0</p>
<script>
  window.received = [];
  const source = new EventSource("/sse");
  const keep = (e) => {
    window.received.push({type: e.type, data: e.data, lastEventId: e.lastEventId});
    document.getElementById("count").textContent = String(window.received.length);
  };
  for (const type of ["message", ...TYPES]) source.addEventListener(type, keep);
</script>
"""


def page_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Serve the reading page."""
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8")])
    return [PAGE.replace("TYPES", json.dumps(TYPES)).encode()]


def test_three_clients_read_the_corpus_exactly(new_page: Any) -> None:
    """Chromium, httpx-sse and Node's eventsource all dispatch exactly the broadcast corpus."""
    count = len(CORPUS)
    node_modules = ROOT / "tests" / "js" / "node_modules" / "eventsource"
    assert node_modules.exists(), "run `npm install` in tests/js (scripts/bootstrap.sh does)"
    with serve(page_app) as server:
        page = new_page()
        page.goto(server.url + "/")

        python_events: list[dict[str, str]] = []

        def read_with_httpx() -> None:
            with (
                httpx.Client(timeout=30) as client,
                connect_sse(client, "GET", server.url + "/sse") as source,
            ):
                for sse in source.iter_sse():
                    python_events.append(
                        {"type": sse.event, "data": sse.data, "lastEventId": sse.id}
                    )
                    if len(python_events) == count:
                        return

        reader = threading.Thread(target=read_with_httpx, daemon=True)
        reader.start()
        node = subprocess.Popen(
            ["node", "read_events.mjs", server.url + "/sse", str(count), ",".join(TYPES)],
            cwd=ROOT / "tests" / "js",
            env=subprocess_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert node.stdout is not None
            assert json.loads(node.stdout.readline()) == "open"
            server.wait_clients(3)
            for data, event, retry in CORPUS:
                broadcast(data, event=event, retry=retry)
            node_out, node_err = node.communicate(timeout=60)
        finally:
            if node.poll() is None:
                node.kill()
                node.communicate()
        node_events = [json.loads(line) for line in node_out.splitlines() if line]
        reader.join(30)
        expect(page.locator("#count")).to_have_text(str(count), timeout=30_000)
        browser_events = page.evaluate("window.received")

    expected = expected_events()
    ids = [e["lastEventId"] for e in browser_events]
    assert len(set(ids)) == count and all(ids)
    for name, events in [
        ("chromium", browser_events),
        ("httpx-sse", python_events),
        ("node eventsource", node_events),
    ]:
        assert len(events) == count, (name, node_err if name.startswith("node") else "")
        for i, (got, want) in enumerate(zip(events, expected, strict=True)):
            assert {"type": got["type"], "data": got["data"]} == want, (name, i)
        assert [e["lastEventId"] for e in events] == ids, name
    assert json.loads(browser_events[CORPUS.index((JSON_VALUE, None, None))]["data"]) == JSON_VALUE
