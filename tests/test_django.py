"""
Django integration over real sockets: the knock example's project served by
wsgi-sse, Django's test database (a SQLite file, shared by the WSGI threads),
real HTTP clients with cookies, CSRF and sessions, and real transactions.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from support import ROOT, StreamClient, _crochet, serve, subprocess_env

from wsgi_sse import broadcast, broadcast_and_wait

EXAMPLE = ROOT / "examples" / "django_app"
CSRF_INPUT = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


# -- Django's test machinery, configured from the example project ------------------


@pytest.fixture(scope="module")
def django_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The example's settings, with a test database in a SQLite file."""
    import django
    from django.conf import settings
    from django.test.utils import (
        setup_databases,
        setup_test_environment,
        teardown_databases,
        teardown_test_environment,
    )

    tmp = tmp_path_factory.mktemp("django")
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    if settings.configured:
        if settings.ROOT_URLCONF != "knockproject.urls":
            pytest.fail("Django was configured by another test module")
    else:
        import knockproject.settings as example

        values = {name: getattr(example, name) for name in dir(example) if name.isupper()}
        database = dict(values["DATABASES"]["default"])
        # A file, not SQLite's in-memory database: every WSGI thread opens its
        # own connection and must see the same data.
        database["NAME"] = str(tmp / "unused.sqlite3")
        database["TEST"] = {"NAME": str(tmp / "test.sqlite3")}
        values["DATABASES"] = {"default": database}
        values["STATIC_ROOT"] = str(tmp / "static")
        values["PASSWORD_HASHERS"] = ["django.contrib.auth.hashers.MD5PasswordHasher"]
        values["KNOCKS_IMPORT_SECONDS"] = 0.0
        settings.configure(**values)
    django.setup()
    setup_test_environment()
    old_config = setup_databases(verbosity=0, interactive=False, aliases={"default"})
    try:
        yield
    finally:
        teardown_databases(old_config, verbosity=0)
        teardown_test_environment()


@pytest.fixture
def db(django_project: None) -> Iterator[None]:
    """Real commits, emptied afterwards (as Django's TransactionTestCase does)."""
    from django.core.management import call_command
    from django.db import connections

    yield
    connections.close_all()
    call_command("flush", interactive=False, verbosity=0)


@pytest.fixture
def users(db: None) -> dict[str, Any]:
    """Two users, ada and grace, with their usernames as passwords."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    return {
        name: user_model.objects.create_user(name, f"{name}@example.com", name)
        for name in ("ada", "grace")
    }


@pytest.fixture
def server(db: None) -> Iterator[Any]:
    """The example project served like server.py does, from settings.WSGI_SSE."""
    from django.core.wsgi import get_wsgi_application

    from wsgi_sse.contrib.django import server_kwargs

    with serve(get_wsgi_application(), **server_kwargs()) as running:
        yield running


# -- helpers -----------------------------------------------------------------------


def browser(server: Any) -> httpx.Client:
    """An HTTP client that keeps cookies, as a browser does."""
    return httpx.Client(base_url=server.url, timeout=10)


def csrf_token(client: httpx.Client, path: str = "/") -> str:
    """GET a page with a form; return its CSRF token (the cookie is kept)."""
    page = client.get(path)
    assert page.status_code == 200
    match = CSRF_INPUT.search(page.text)
    assert match, page.text
    assert "csrftoken" in client.cookies
    return match.group(1)


def log_in(client: httpx.Client, username: str) -> str:
    """Log in through Django's login view; return the session cookie."""
    token = csrf_token(client, "/accounts/login/")
    response = client.post(
        "/accounts/login/",
        data={"username": username, "password": username, "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302, response.text
    return client.cookies["sessionid"]


def session_stream(server: Any, session: str | None, *channels: str) -> StreamClient:
    """Open the stream for C{channels}, with the session cookie if any."""
    query = "&".join(f"channel={c}" for c in channels)
    headers = {"Cookie": f"sessionid={session}"} if session else {}
    return server.stream(f"/sse?{query}", headers=headers)


def wait_messages(stream: StreamClient, n: int) -> list[Any]:
    """Read until C{n} events other than the C{init} event arrived; return those."""
    stream.wait_for(lambda c: len([e for e in c.events if e.type != "init"]) >= n)
    return [e for e in stream.events if e.type != "init"]


# -- the knock flow ------------------------------------------------------------------


def test_knock_with_csrf_reaches_stream(server: Any) -> None:
    """GET the form, POST it with the CSRF cookie and token: the stream gets the knock."""
    from knocks.models import Knock

    with session_stream(server, None, "default") as stream, browser(server) as client:
        assert stream.status == 200
        token = csrf_token(client)
        response = client.post("/knock", data={"name": "Ada", "csrfmiddlewaretoken": token})
        assert response.status_code == 302
        assert response.headers["location"] == "/"
        (event,) = wait_messages(stream, 1)
        assert (event.type, event.data) == ("message", "Ada knocked")
        assert stream.events[0].type == "init"
    assert list(Knock.objects.values_list("name", flat=True)) == ["Ada"]


def test_forged_knock_is_refused_and_never_streamed(server: Any) -> None:
    """A POST without the CSRF token gets 403 and sends nothing to the stream."""
    from knocks.models import Knock

    with session_stream(server, None, "default") as stream, browser(server) as client:
        forged = httpx.post(f"{server.url}/knock", data={"name": "Mallory"}, timeout=10)
        assert forged.status_code == 403
        client.get("/")  # has the csrftoken cookie now, but sends no token
        no_token = client.post("/knock", data={"name": "Mallory"})
        assert no_token.status_code == 403
        token = csrf_token(client)
        client.post("/knock", data={"name": "Grace", "csrfmiddlewaretoken": token})
        wait_messages(stream, 1)
        # The first knock is the genuine one: the forged ones never got through.
        stream.read_some(0.2)
        assert [e.data for e in wait_messages(stream, 1)] == ["Grace knocked"]
    assert list(Knock.objects.values_list("name", flat=True)) == ["Grace"]


def test_new_page_starts_from_recent_knocks(server: Any) -> None:
    """The INITIAL hook (by dotted path, using the DB) sends the recent knocks first."""
    from knocks.models import Knock

    for name in ("Ada", "Grace", "Linus"):
        Knock.objects.create(name=name)
    with session_stream(server, None, "default") as stream:
        (init,) = stream.wait_events(1)
        assert init.type == "init"
        assert json.loads(init.data) == {
            "knocks": ["Ada knocked", "Grace knocked", "Linus knocked"]
        }
        broadcast("Edsger knocked")
        assert [e.data for e in wait_messages(stream, 1)] == ["Edsger knocked"]


def test_knock_json_answer_for_fetch(server: Any) -> None:
    """The page's fetch() submit gets JSON instead of a redirect."""
    with browser(server) as client:
        token = csrf_token(client)
        response = client.post(
            "/knock",
            data={"name": "  Ada \n Lovelace ", "csrfmiddlewaretoken": token},
            headers={"Accept": "application/json"},
        )
        assert response.status_code == 200
        assert response.json() == {"knocked": "Ada Lovelace"}


# -- per-user channels through the real session ------------------------------------


def test_user_channel_allowed_for_its_user_only(server: Any, users: dict[str, Any]) -> None:
    """user-<id> opens with that user's session; another user and anonymous get 403."""
    ada_channel = f"user-{users['ada'].pk}"
    with browser(server) as ada, browser(server) as grace:
        ada_session = log_in(ada, "ada")
        grace_session = log_in(grace, "grace")
        with session_stream(server, ada_session, "default", ada_channel) as stream:
            assert stream.status == 200
        with session_stream(server, grace_session, ada_channel) as stream:
            assert stream.status == 403
        with session_stream(server, None, ada_channel) as stream:
            assert stream.status == 403
        with session_stream(server, "not-a-session-key", ada_channel) as stream:
            assert stream.status == 403
        with session_stream(server, None, "default") as stream:
            assert stream.status == 200
        with session_stream(server, ada_session, "secret") as stream:
            assert stream.status == 403


def test_user_events_reach_only_that_user(server: Any, users: dict[str, Any]) -> None:
    """A broadcast to ada's channel reaches ada's stream and not grace's."""
    from wsgi_sse.contrib.django import user_channel

    with browser(server) as ada, browser(server) as grace:
        ada_session, grace_session = log_in(ada, "ada"), log_in(grace, "grace")
        ada_stream = session_stream(server, ada_session, user_channel(users["ada"]))
        grace_stream = session_stream(server, grace_session, user_channel(users["grace"]))
        with ada_stream, grace_stream:
            assert (ada_stream.status, grace_stream.status) == (200, 200)
            broadcast("for ada", channel=user_channel(users["ada"]))
            broadcast("for grace", channel=user_channel(users["grace"]))
            assert [e.data for e in ada_stream.wait_events(1)] == ["for ada"]
            assert [e.data for e in grace_stream.wait_events(1)] == ["for grace"]


def test_logged_out_or_changed_password_session_is_refused(
    server: Any, users: dict[str, Any]
) -> None:
    """After logout, or a password change elsewhere, the old session cookie gets 403."""
    from django.contrib.sessions.models import Session

    channel = f"user-{users['ada'].pk}"
    with browser(server) as first, browser(server) as second:
        first_session = log_in(first, "ada")
        second_session = log_in(second, "ada")
        token = csrf_token(first)
        assert first.post("/accounts/logout/", data={"csrfmiddlewaretoken": token}).is_redirect
        with session_stream(server, first_session, channel) as stream:
            assert stream.status == 403

        ada = users["ada"]
        ada.set_password("new password")
        ada.save()
        with session_stream(server, second_session, channel) as stream:
            assert stream.status == 403
        # The stream only reads the session; Django's own next request flushes it.
        assert Session.objects.filter(session_key=second_session).exists()


def test_user_channels_options(db: None, users: dict[str, Any]) -> None:
    """login_required refuses anonymous clients everywhere; extra grants channels per user."""
    from django.core.wsgi import get_wsgi_application

    from wsgi_sse.contrib.django import user_channels

    users["ada"].is_staff = True
    users["ada"].save()
    authorize = user_channels(
        public=("news",),
        login_required=True,
        extra=lambda user: ["staff"] if user.is_staff else [],
    )
    with serve(get_wsgi_application(), authorize=authorize) as running:
        with browser(running) as ada, browser(running) as grace:
            ada_session, grace_session = log_in(ada, "ada"), log_in(grace, "grace")
            expected = [
                (None, ("news",), 403),
                (grace_session, ("news",), 200),
                (grace_session, ("default",), 403),
                (grace_session, ("news", "staff"), 403),
                (ada_session, ("news", "staff", f"user-{users['ada'].pk}"), 200),
            ]
            for session, channels, status in expected:
                with session_stream(running, session, *channels) as stream:
                    assert (channels, stream.status) == (channels, status)


def test_import_job_notifies_its_user(server: Any, users: dict[str, Any]) -> None:
    """'Start import' runs a thread whose end is pushed to that user's stream."""
    from knocks.models import ContactImport

    from wsgi_sse.contrib.django import user_channel

    with browser(server) as ada:
        session = log_in(ada, "ada")
        with session_stream(server, session, "default", user_channel(users["ada"])) as stream:
            assert stream.status == 200
            token = csrf_token(ada)
            response = ada.post(
                "/import",
                data={"csrfmiddlewaretoken": token},
                headers={"Accept": "application/json"},
            )
            assert response.status_code == 202
            job_id = response.json()["job"]
            (event,) = wait_messages(stream, 1)
            assert event.type == "import"
            assert json.loads(event.data) == {
                "job": job_id,
                "contacts": 42,
                "message": "Your import is done: 42 contacts",
            }
    # The event was sent after the commit: the row is finished.
    job = ContactImport.objects.get(pk=job_id)
    assert job.finished is not None and job.contacts == 42


def test_job_page_streams_progress_through_a_held_view(server: Any, users: dict[str, Any]) -> None:
    """The job's events view holds its channel for its owner: progress, done, end; then 204."""
    from django.test import override_settings

    with browser(server) as ada, override_settings(KNOCKS_IMPORT_SECONDS=0.6):
        session = log_in(ada, "ada")
        token = csrf_token(ada)
        answer = ada.post(
            "/import", data={"csrfmiddlewaretoken": token}, headers={"Accept": "application/json"}
        ).json()
        events_path = f"/jobs/{answer['job']}/events"
        assert answer["page"] == f"/jobs/{answer['job']}/"
        assert ada.get(answer["page"]).status_code == 200
        with server.stream(events_path, headers={"Cookie": f"sessionid={session}"}) as stream:
            assert stream.status == 200
            assert not [name for name in stream.headers if name.startswith("grip")]
            stream.read_to_end()
        init, *progress, done = stream.events
        assert (init.type, json.loads(init.data)) == ("init", {"total": 42})
        assert progress and {e.type for e in progress} == {"progress"}
        imported = [json.loads(e.data)["imported"] for e in progress]
        assert imported == sorted(imported) and imported[-1] == 42
        assert (done.type, json.loads(done.data)) == ("done", {"contacts": 42})
        # Finished: a reconnecting EventSource is told to stop.
        assert ada.get(events_path).status_code == 204
    with browser(server) as grace:
        log_in(grace, "grace")
        assert grace.get(events_path).status_code == 404
    with browser(server) as anonymous:
        response = anonymous.get(events_path)
        assert response.status_code == 302
        assert response.headers["location"].startswith("/accounts/login/")


def test_import_requires_login(server: Any) -> None:
    """An anonymous 'start import' is sent to the login page and starts nothing."""
    from knocks.models import ContactImport

    with browser(server) as client:
        token = csrf_token(client)
        response = client.post("/import", data={"csrfmiddlewaretoken": token})
        assert response.status_code == 302
        assert response.headers["location"].startswith("/accounts/login/")
    assert not ContactImport.objects.exists()


def test_page_subscribes_logged_in_user_to_own_channel(server: Any, users: dict[str, Any]) -> None:
    """The page's EventSource URL holds the user's channel once logged in."""
    with browser(server) as client:
        assert 'data-stream="/sse?channel=default&amp;channel=presence"' in client.get("/").text
        log_in(client, "ada")
        expected = (
            'data-stream="/sse?channel=default&amp;channel=presence'
            f'&amp;channel=user-{users["ada"].pk}"'
        )
        assert expected in client.get("/").text


# -- broadcast_on_commit, with real transactions -----------------------------------


def test_broadcast_on_commit_waits_for_commit(server: Any) -> None:
    """An event registered in a transaction is sent after it commits, not before."""
    from django.db import transaction

    from wsgi_sse.contrib.django import broadcast_on_commit

    with server.stream() as stream:
        with transaction.atomic():
            broadcast_on_commit("committed")
            broadcast_and_wait("inside the transaction")
        events = wait_messages(stream, 2)
        assert [e.data for e in events] == ["inside the transaction", "committed"]


def test_broadcast_on_commit_never_after_rollback(server: Any) -> None:
    """Rolled back transactions and savepoints send nothing."""
    from django.db import transaction

    from wsgi_sse.contrib.django import broadcast_on_commit

    class Rollback(Exception):
        pass

    with server.stream() as stream:
        with pytest.raises(Rollback), transaction.atomic():
            broadcast_on_commit("rolled back")
            raise Rollback
        with transaction.atomic():
            broadcast_on_commit("outer")
            with pytest.raises(Rollback), transaction.atomic():
                broadcast_on_commit("savepoint rolled back")
                raise Rollback
        broadcast_and_wait("marker")
        wait_messages(stream, 2)
        stream.read_some(0.2)
        assert [e.data for e in wait_messages(stream, 2)] == ["outer", "marker"]


def test_broadcast_on_commit_outside_transaction_sends_now(server: Any) -> None:
    """In autocommit mode (no atomic block) the event is sent at once."""
    from wsgi_sse.contrib.django import broadcast_on_commit

    with server.stream(headers={}) as stream:
        broadcast_on_commit({"n": 1}, event="count", channel="default")
        (event,) = wait_messages(stream, 1)
        assert (event.type, event.data) == ("count", '{"n":1}')


def test_broadcast_on_commit_encodes_at_call(server: Any) -> None:
    """Bad input raises in the caller with nothing registered; data is captured at the call."""
    from django.db import connection, transaction

    from wsgi_sse.contrib.django import broadcast_on_commit

    with server.stream() as stream:
        with transaction.atomic():
            with pytest.raises(ValueError):
                broadcast_on_commit("x", event="bad\nname")
            with pytest.raises(TypeError):
                broadcast_on_commit(object())
            with pytest.raises(TypeError):
                broadcast_on_commit("x", channel=7)  # type: ignore[arg-type]
            assert connection.run_on_commit == []
            data = {"state": "saved"}
            broadcast_on_commit(data)
            data["state"] = "changed after the call"
        (event,) = wait_messages(stream, 1)
        assert event.data == '{"state":"saved"}'


def test_broadcast_on_commit_is_captured_after_commit(db: None) -> None:
    """capture_broadcasts() records on-commit events at commit, as passed, and none on rollback."""
    from django.db import transaction

    from wsgi_sse.contrib.django import broadcast_on_commit
    from wsgi_sse.testing import capture_broadcasts

    class Rollback(Exception):
        pass

    with capture_broadcasts() as broadcasts:
        with pytest.raises(Rollback), transaction.atomic():
            broadcast_on_commit("rolled back")
            raise Rollback
        with transaction.atomic():
            data = {"job": 7, "tags": ("a", "b")}
            broadcast_on_commit(data, event="import", channel="user-3")
            data["job"] = 8
            broadcasts.assert_nothing_broadcast()
        recorded = broadcasts.assert_broadcast(
            {"job": 7, "tags": ("a", "b")}, event="import", channel="user-3"
        )
        assert recorded.text == 'event: import\ndata: {"job":7,"tags":["a","b"]}\n'
        assert len(broadcasts) == 1


# -- settings ------------------------------------------------------------------------


def test_server_kwargs_from_settings(django_project: None) -> None:
    """WSGI_SSE keys become make_application() arguments; hooks are imported by path."""
    from django.test import override_settings

    from wsgi_sse.contrib.django import server_kwargs, user_channels_authorize

    config = {
        "SSE_PATH": "/events",
        "HEARTBEAT": 5,
        "CORS_ORIGINS": ["https://a.example"],
        "AUTHORIZE": "wsgi_sse.contrib.django.user_channels_authorize",
        "SERVE_STATIC": False,
    }
    with override_settings(WSGI_SSE=config):
        kwargs = server_kwargs()
    assert kwargs == {
        "sse_path": "/events",
        "heartbeat": 5,
        "cors_origins": ("https://a.example",),
        "authorize": user_channels_authorize,
    }


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"HEARTBEET": 5}, "unknown key(s) in settings.WSGI_SSE: HEARTBEET"),
        ({"AUTHORIZE": "no.such.module.hook"}, "cannot import 'no.such.module.hook'"),
        ({"INITIAL": 42}, "must be a callable or its dotted path"),
        ({"HEARTBEAT": -1}, "heartbeat must not be negative"),
        ({"THREADS": "4"}, "settings.WSGI_SSE['THREADS'] must be a number, not '4'"),
        ({"HEARTBEAT": "5"}, "settings.WSGI_SSE['HEARTBEAT'] must be a number, not '5'"),
    ],
)
def test_bad_settings_raise_improperly_configured(
    django_project: None, config: dict[str, Any], message: str
) -> None:
    """A mistake in WSGI_SSE is reported by name when the server is built."""
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from wsgi_sse.contrib.django import server_kwargs

    with override_settings(WSGI_SSE=config), pytest.raises(ImproperlyConfigured) as info:
        server_kwargs()
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"THREADS": 0}, "settings.WSGI_SSE: need 1 <= threads"),
        ({"LISTEN": "8000"}, "settings.WSGI_SSE: listen='8000' is not a Twisted endpoint"),
        ({"SSE_PATH": "events"}, "settings.WSGI_SSE: path must be a str starting with '/'"),
        ({"PUBLISH_SECRET": "s" * 32}, "settings.WSGI_SSE: publish_secret given without"),
    ],
    ids=["threads", "listen", "sse-path", "publish-secret"],
)
def test_bad_server_settings_raise_improperly_configured(
    django_project: None, config: dict[str, Any], message: str
) -> None:
    """The server's own keys are checked as the stream's are: ImproperlyConfigured, naming them."""
    from django.core.exceptions import ImproperlyConfigured
    from django.test import override_settings

    from wsgi_sse.contrib.django import make_application

    _crochet()  # make_service() must not be the first to touch crochet
    config = {**config, "SERVE_STATIC": False}
    with override_settings(WSGI_SSE=config), pytest.raises(ImproperlyConfigured) as info:
        make_application(lambda environ, start_response: [])
    assert message in str(info.value)


def test_settings_sse_path_and_stream_url(db: None) -> None:
    """SSE_PATH moves the stream, and stream_url() follows it."""
    from django.core.wsgi import get_wsgi_application
    from django.test import override_settings

    from wsgi_sse.contrib.django import server_kwargs, stream_url

    with override_settings(WSGI_SSE={"SSE_PATH": "/live/events"}):
        assert stream_url("default", "user-1") == "/live/events?channel=default&channel=user-1"
        with serve(get_wsgi_application(), **server_kwargs()) as running:
            with StreamClient(running.port, stream_url("default")) as stream:
                assert stream.status == 200
                broadcast("moved")
                assert stream.wait_events(1)[0].data == "moved"


def test_import_wsgi_sse_does_not_import_django() -> None:
    """`import wsgi_sse` leaves Django unimported (it is an optional extra)."""
    code = "import sys, wsgi_sse; print('django' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    assert out.strip() == "False"


def test_user_channel_names(django_project: None) -> None:
    """user_channel() names a user's channel and refuses anonymous users."""
    from django.contrib.auth.models import AnonymousUser

    from wsgi_sse.contrib.django import user_channel

    class User:
        pk = 7
        is_anonymous = False

    assert user_channel(User()) == "user-7"
    assert user_channel(12) == "user-12"
    assert user_channel(User(), prefix="u.") == "u.7"
    with pytest.raises(ValueError):
        user_channel(AnonymousUser())


def test_make_application_from_settings(django_project: None) -> None:
    """make_application() applies WSGI_SSE and mounts STATIC_ROOT at STATIC_URL."""
    from django.test import override_settings
    from twisted.application.service import IServiceCollection

    from wsgi_sse import SSEServerService, set_broadcaster
    from wsgi_sse.contrib.django import make_application

    config = {"SSE_PATH": "/events", "LISTEN": "tcp:0:interface=127.0.0.1", "THREADS": 3}
    try:
        with override_settings(WSGI_SSE=config):
            application = make_application()
        (service,) = IServiceCollection(application)
        assert isinstance(service, SSEServerService)
        assert service.sse_path == "/events"
        assert service.threadpool.max == 3
        mounted = {b"/".join(segments): exact for segments, _, exact in service.root._mounts}
        assert (mounted[b"events"], mounted[b"static"]) == (True, False)
        with override_settings(WSGI_SSE={**config, "SERVE_STATIC": False}):
            (service,) = IServiceCollection(make_application())
        assert (b"static",) not in [s for s, _, _ in service.root._mounts]
    finally:
        set_broadcaster(None)
