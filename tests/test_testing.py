"""wsgi_sse.testing: capturing the broadcasts of real apps' views, without sockets."""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode
from wsgiref.util import setup_testing_defaults

import pytest
from support import ROOT, subprocess_env

from wsgi_sse import broadcast, broadcast_and_wait, close, get_broadcaster, set_broadcaster
from wsgi_sse.testing import ANY, BroadcastRecorder, capture_broadcasts


def load_example(name: str) -> ModuleType:
    """Import examples/<name>/app.py under a unique module name."""
    path = ROOT / "examples" / name / "app.py"
    spec = importlib.util.spec_from_file_location(f"example_{name}_app", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def wsgi_post(app: Any, path: str, form: dict[str, str]) -> tuple[str, bytes]:
    """Call a WSGI app directly with a form POST; return status and body."""
    body = urlencode(form).encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "CONTENT_TYPE": "application/x-www-form-urlencoded",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.input": io.BytesIO(body),
    }
    setup_testing_defaults(environ)
    status: list[str] = []
    chunks = app(environ, lambda s, h, exc_info=None: status.append(s))
    try:
        content = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return status[0], content


def test_records_fields_and_encoding() -> None:
    """Every field of a broadcast is recorded, with the exact encoded body."""
    with capture_broadcasts() as recorded:
        broadcast("a\nb")
        broadcast({"id": 7, "state": "done"}, event="job", channel="user-42", retry=500)
    first, second = recorded.events
    assert (first.data, first.event, first.channel, first.retry) == ("a\nb", None, "default", None)
    assert first.text == "data: a\ndata: b\n"
    assert second.data == {"id": 7, "state": "done"}
    assert (second.event, second.channel, second.retry) == ("job", "user-42", 500)
    assert second.body == b'event: job\nretry: 500\ndata: {"id":7,"state":"done"}\n'
    assert recorded.data == ["a\nb", {"id": 7, "state": "done"}]
    assert recorded.on_channel("user-42") == [second]
    assert len(recorded) == 2


def test_records_closes() -> None:
    """close() under capture is validated and recorded, in order; clear() forgets it."""
    with capture_broadcasts() as recorded:
        broadcast("done", channel="job-1")
        close("job-1")
        with pytest.raises(ValueError):
            close("")
    assert recorded.closed == ["job-1"]
    assert recorded.data == ["done"]
    recorded.clear()
    assert recorded.closed == []


def test_restores_previous_broadcaster_even_on_error() -> None:
    """The broadcaster in use before is back after the block, also when it raised."""
    before = BroadcastRecorder()
    set_broadcaster(before)
    try:
        with pytest.raises(KeyError), capture_broadcasts() as recorded:
            assert get_broadcaster() is recorded
            raise KeyError("boom")
        assert get_broadcaster() is before
    finally:
        set_broadcaster(None)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"data": "x", "event": "a\nb"}, ValueError),
        ({"data": b"bytes"}, TypeError),
        ({"data": {1, 2}}, TypeError),
        ({"data": float("nan")}, ValueError),
        ({"data": "x", "retry": "3000"}, TypeError),
        ({"data": "x", "channel": ""}, ValueError),
    ],
)
def test_bad_values_raise_as_in_production(kwargs: dict[str, Any], error: type) -> None:
    """Bad values raise the production error and record nothing."""
    with capture_broadcasts() as recorded:
        with pytest.raises(error):
            broadcast(**kwargs)
        with pytest.raises(error):
            broadcast_and_wait(**kwargs)
    assert recorded.events == []


def test_broadcast_and_wait_returns_configured_count() -> None:
    """broadcast_and_wait() records the event and returns the configured client count."""
    with capture_broadcasts(clients=3) as recorded:
        assert broadcast_and_wait("hi", channel="room") == 3
        recorded.clients = 0
        assert broadcast_and_wait("again") == 0
    assert [(e.data, e.channel, e.waited) for e in recorded] == [
        ("hi", "room", True),
        ("again", "default", True),
    ]


def test_assert_broadcast_matches_and_reports() -> None:
    """assert_broadcast() finds a matching event and lists what was recorded when none matches."""
    with capture_broadcasts() as recorded:
        recorded.assert_nothing_broadcast()
        broadcast({"n": 1}, event="count", channel="c")
        broadcast("plain")
    assert recorded.assert_broadcast({"n": 1}).event == "count"
    recorded.assert_broadcast(event="count", channel="c")
    recorded.assert_broadcast("plain", event=None, channel=None)
    recorded.assert_broadcast(ANY, channel="c")
    with pytest.raises(AssertionError, match=r"no broadcast with data='plain', channel='c'"):
        recorded.assert_broadcast("plain", channel="c")
    with pytest.raises(AssertionError, match=r"data=\{'n': 1\}, event='count', channel='c'"):
        recorded.assert_broadcast({"n": 2})
    with pytest.raises(AssertionError, match="expected no broadcast, recorded 2"):
        recorded.assert_nothing_broadcast()
    recorded.clear()
    recorded.assert_nothing_broadcast()


def test_records_from_many_threads() -> None:
    """Broadcasts from several threads at once are all recorded."""
    with capture_broadcasts() as recorded:
        threads = [
            threading.Thread(target=lambda t=t: [broadcast(f"{t}:{i}") for i in range(200)])
            for t in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert sorted(recorded.data) == sorted(f"{t}:{i}" for t in range(4) for i in range(200))


def test_bottle_example_view_with_plain_wsgi_call() -> None:
    """The Bottle example's POST /knock, called as a WSGI app, broadcasts the knock."""
    app = load_example("bottle_app").app
    with capture_broadcasts() as recorded:
        status, body = wsgi_post(app, "/knock", {"name": "Ada"})
    assert status.startswith("200")
    assert b"Ada knocked!" in body
    recorded.assert_broadcast("Ada knocked", event=None, channel=None)
    assert len(recorded) == 1


def test_flask_example_view_with_flask_test_client() -> None:
    """The Flask example's POST /knock, through Flask's test client, broadcasts the knock."""
    app = load_example("flask_app").app
    with capture_broadcasts() as recorded:
        response = app.test_client().post("/knock", data={"name": " Grace "})
        assert response.status_code == 200
        app.test_client().get("/")
    assert recorded.data == ["Grace knocked"]


def test_entry_point_names_the_plugin() -> None:
    """pyproject.toml registers wsgi_sse.pytest_plugin under pytest11, and it has the fixture."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points.pytest11]\nwsgi_sse = "wsgi_sse.pytest_plugin"\n' in pyproject
    from wsgi_sse import pytest_plugin

    assert callable(pytest_plugin.broadcasts)


DJANGO_TESTS = """
import django
from django.conf import settings

settings.configure(
    DEBUG=True,
    SECRET_KEY="test",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["testserver"],
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)
django.setup()

import pytest
from django.http import HttpResponse
from django.test import Client
from django.urls import path

from wsgi_sse import broadcast


def notify(request, user_id):
    broadcast({"text": request.POST["text"]}, event="notice", channel=f"user-{user_id}")
    return HttpResponse("sent")


def bad(request):
    broadcast("x", event="two\\nlines")
    return HttpResponse("unreachable")


urlpatterns = [path("notify/<int:user_id>", notify), path("bad", bad)]


def test_notify(broadcasts):
    response = Client().post("/notify/42", {"text": "hello"})
    assert response.content == b"sent"
    broadcasts.assert_broadcast({"text": "hello"}, event="notice", channel="user-42")
    assert len(broadcasts) == 1


def test_fresh_recorder_per_test(broadcasts):
    broadcasts.assert_nothing_broadcast()


def test_bad_value_fails_the_view(broadcasts):
    with pytest.raises(ValueError, match="CR, LF or NUL"):
        Client(raise_request_exception=True).get("/bad")
    broadcasts.assert_nothing_broadcast()


def test_wrong_expectation_fails(broadcasts):
    Client().post("/notify/1", {"text": "hi"})
    broadcasts.assert_broadcast({"text": "hi"}, channel="user-2")
"""


def test_pytest_fixture_with_django_test_client(tmp_path: Path) -> None:
    """In a user's pytest run, the broadcasts fixture captures a Django view's broadcasts."""
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["wsgi_sse.pytest_plugin"]\n')
    (tmp_path / "test_views.py").write_text(textwrap.dedent(DJANGO_TESTS))
    # -p no:wsgi_sse: load the plugin through conftest.py whether or not
    # the entry point of an installed wsgi-sse would load it too.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:wsgi_sse", "-p", "no:cacheprovider", "-rA"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    out = result.stdout + result.stderr
    assert "1 failed, 3 passed" in out, out
    assert "FAILED test_views.py::test_wrong_expectation_fails" in out
    assert "no broadcast with data={'text': 'hi'}, channel='user-2'; recorded 1" in out
