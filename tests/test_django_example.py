"""
The Django example started exactly as its README says:
``cd examples/django_app && twistd -ny server.py``, from a fresh data
directory (no database, no collected static files yet).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support import ROOT, StreamClient, free_port, subprocess_env, wait_for_port

EXAMPLE = ROOT / "examples" / "django_app"
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def twistd() -> str:
    """The twistd script of the running Python, else the one on PATH."""
    candidate = Path(sys.executable).parent / "twistd"
    return str(candidate) if candidate.exists() else "twistd"


def example_env(data: Path, port: int, **extra: str) -> dict[str, str]:
    """The environment of the example's processes: as README says, plus test settings."""
    env = subprocess_env(
        WSGI_SSE_LISTEN=f"tcp:{port}:interface=127.0.0.1",
        # Where db.sqlite3 and the collected static files go: a fresh, empty
        # directory, so that the checkout stays clean.
        KNOCKS_DATA_DIR=str(data),
        KNOCKS_IMPORT_SECONDS="0.2",
        **extra,
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("WSGI_SSE_REDIS_URL", None)
    env.pop("WSGI_SSE_BACKPLANE_URL", None)
    env.update(extra)
    return env


@contextlib.contextmanager
def running_example(data: Path, **extra: str) -> Iterator[int]:
    """Run ``twistd -ny server.py`` in the example's directory; yield its port."""
    port = free_port()
    log_path = data / "twistd.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [twistd(), "--pidfile=", "-ny", "server.py"],
            cwd=EXAMPLE,
            env=example_env(data, port, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        try:
            wait_for_port(port, proc, timeout=90)
        except AssertionError:
            raise AssertionError(log_path.read_text()) from None
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode in (0, -15), log_path.read_text()
    assert "Traceback" not in log_path.read_text(), log_path.read_text()


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The example server in a subprocess, from a fresh data directory; yields its port."""
    with running_example(tmp_path_factory.mktemp("django-example")) as port:
        yield port


def log_in(client: httpx.Client, username: str, password: str) -> None:
    """Log in through the example's login form."""
    login = client.get("/accounts/login/")
    match = CSRF_INPUT.search(login.text)
    assert match
    response = client.post(
        "/accounts/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": match.group(1)},
    )
    assert response.status_code == 302


def test_example_page_knock_and_stream(example: int) -> None:
    """GET /, POST the knock with its CSRF token, and an SSE client sees it."""
    with httpx.Client(base_url=f"http://127.0.0.1:{example}", timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert 'id="knock-form"' in page.text
        assert 'data-stream="/sse?channel=default&amp;channel=presence"' in page.text
        match = CSRF_INPUT.search(page.text)
        assert match
        with StreamClient(example, "/sse?channel=default") as stream:
            assert stream.status == 200
            response = client.post(
                "/knock", data={"name": "Ada", "csrfmiddlewaretoken": match.group(1)}
            )
            assert response.status_code == 302
            stream.wait_for(lambda c: any(e.type == "message" for e in c.events))
            init, event = stream.events[:2]
            assert (init.type, init.data) == ("init", '{"knocks":[]}')
            assert (event.type, event.data) == ("message", "Ada knocked")
        # Stored too: the next page load lists it.
        assert "Ada knocked" in client.get("/").text


def test_example_forged_knock_refused(example: int) -> None:
    """Without the CSRF token the example answers 403."""
    response = httpx.post(f"http://127.0.0.1:{example}/knock", data={"name": "Mallory"})
    assert response.status_code == 403


def test_example_demo_user_and_own_channel(example: int) -> None:
    """The demo user created on start logs in and may open only its own channel."""
    with httpx.Client(base_url=f"http://127.0.0.1:{example}", timeout=10) as client:
        log_in(client, "grace", "grace-knocks")
        page = client.get("/").text
        channel = re.search(r"channel=(user-\d+)", page)
        assert channel, page
        cookie = {"Cookie": f"sessionid={client.cookies['sessionid']}"}
        with StreamClient(example, f"/sse?channel={channel.group(1)}", headers=cookie) as own:
            assert own.status == 200
        with StreamClient(example, f"/sse?channel={channel.group(1)}") as anonymous:
            assert anonymous.status == 403


def test_example_admin_and_static_files(example: int) -> None:
    """/admin/ answers its login page and collected static files are served."""
    with httpx.Client(base_url=f"http://127.0.0.1:{example}", timeout=10) as client:
        admin = client.get("/admin/")
        assert admin.status_code == 302
        login = client.get(admin.headers["location"])
        assert login.status_code == 200
        assert "Django administration" in login.text
        css = client.get("/static/admin/css/base.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        script = client.get("/static/knocks/knocks.js")
        assert script.status_code == 200
        source = EXAMPLE / "knocks" / "static" / "knocks" / "knocks.js"
        assert script.content == source.read_bytes()
        # No directory listings.
        assert client.get("/static/admin/").status_code == 404


def test_example_in_chromium(example: int) -> None:
    """Headless Chromium: a knock shows live in another tab; a user's import notice arrives."""
    from playwright.sync_api import sync_playwright

    base = f"http://127.0.0.1:{example}"
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, "chromium is installed by scripts/bootstrap.sh"
    live = "document.getElementById('status').textContent === 'live'"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable)
        try:
            context = browser.new_context()
            watcher, knocker = context.new_page(), context.new_page()
            watcher.goto(f"{base}/")
            watcher.wait_for_function(live)
            knocker.goto(f"{base}/")
            knocker.fill("input[name=name]", "Grace <b>Hopper</b>")
            knocker.click("#knock-form button")
            watcher.wait_for_function(
                "[...document.querySelectorAll('#knocks li')]"
                ".some(li => li.textContent === 'Grace <b>Hopper</b> knocked')"
            )

            watcher.goto(f"{base}/accounts/login/")
            watcher.fill("input[name=username]", "ada")
            watcher.fill("input[name=password]", "ada-knocks")
            with watcher.expect_navigation(url=f"{base}/"):
                watcher.click("main form button[type=submit]")
            watcher.wait_for_function(live)
            watcher.click("#import-form button")
            watcher.wait_for_function(
                "[...document.querySelectorAll('#notices li')]"
                ".some(li => li.textContent === 'Your import is done: 42 contacts')"
            )
        finally:
            browser.close()


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A throw-away redis-server on a free loopback port; yields its URL."""
    import redis

    port = free_port()
    executable = shutil.which("redis-server") or "/usr/bin/redis-server"
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen(
        [executable, "--port", str(port), *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        client = redis.Redis(host="127.0.0.1", port=port)
        try:
            assert client.ping()
        finally:
            client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def test_example_import_in_another_process_through_redis(tmp_path: Path) -> None:
    """
    `manage.py import_contacts ada` in its own process notifies ada's page via
    Redis, both given $WSGI_SSE_BACKPLANE_URL as the example's README says.
    """
    with (
        redis_server(tmp_path) as url,
        running_example(tmp_path, WSGI_SSE_BACKPLANE_URL=url) as port,
    ):
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            log_in(client, "ada", "ada-knocks")
            channel = re.search(r"channel=(user-\d+)", client.get("/").text)
            assert channel
            cookie = {"Cookie": f"sessionid={client.cookies['sessionid']}"}
            with StreamClient(port, f"/sse?channel={channel.group(1)}", headers=cookie) as stream:
                assert stream.status == 200
                command = subprocess.run(
                    [sys.executable, "manage.py", "import_contacts", "ada"],
                    cwd=EXAMPLE,
                    env=example_env(tmp_path, port, WSGI_SSE_BACKPLANE_URL=url),
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert command.returncode == 0, command.stdout + command.stderr
                assert "done: 42 contacts" in command.stdout
                (event,) = stream.wait_events(1)
                assert event.type == "import"
                assert json.loads(event.data)["message"] == "Your import is done: 42 contacts"
