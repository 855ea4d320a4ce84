"""The htmx example, started exactly as its docs say, without a browser."""

from __future__ import annotations

import re
import subprocess

from example_server import EXAMPLES, run_example, twistd
from support import ROOT, http_request, subprocess_env

NODE_MODULES = ROOT / "tests" / "js" / "node_modules"


def test_htmx_example_serves_its_pages_and_their_scripts() -> None:
    """Both pages load; every script they name is served from the pinned npm install."""
    with run_example("htmx_app", HTMX_NODE_MODULES=str(NODE_MODULES)) as server:
        for path in ("/", "/htmx4"):
            status, headers, body = http_request(server.port, "GET", path)
            assert status == 200 and headers["content-type"].startswith("text/html")
            scripts = re.findall(rb'<script src="([^"]+)"', body)
            assert len(scripts) == 2, body
            for src in scripts:
                status, headers, script = http_request(server.port, "GET", src.decode())
                assert status == 200, src
                assert "javascript" in headers["content-type"], (src, headers)
                assert b"htmx" in script
        status, _, body = http_request(
            server.port,
            "POST",
            "/messages",
            body=b"author=&text=",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert (status, body) == (400, b"author and text are required\n")


def test_htmx_example_without_htmx_says_what_to_do() -> None:
    """Without node_modules the example exits at once with one line saying to run npm ci."""
    result = subprocess.run(
        [twistd(), "--pidfile=", "-ny", "server.py"],
        cwd=EXAMPLES / "htmx_app",
        env=subprocess_env(HTMX_NODE_MODULES=str(ROOT / "no-such-directory")),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"server.py: no htmx in {ROOT / 'no-such-directory'}: run `npm ci` in "
        f"{EXAMPLES / 'htmx_app'}"
    ]
