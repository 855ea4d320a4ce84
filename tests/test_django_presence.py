# ruff: noqa: F811 - fixtures imported from test_django are used by name
"""
Presence and revocation in the Django integration: the session user is the
stream's identity; logout and password changes end that user's streams.
"""

from __future__ import annotations

import time
from typing import Any

from test_django import (  # noqa: F401 - fixtures
    browser,
    csrf_token,
    db,
    django_project,
    log_in,
    server,
    session_stream,
    users,
)

import wsgi_sse


def test_session_user_is_the_identity_and_anonymous_pages_are_guests(
    server: Any, users: dict[str, Any]
) -> None:
    """A logged-in page counts under its username, on public channels too; others as guests."""
    with browser(server) as ada:
        session = log_in(ada, "ada")
        with (
            session_stream(server, session, "default", f"user-{users['ada'].pk}") as own,
            session_stream(server, session, "default") as public,
            session_stream(server, None, "default") as guest,
        ):
            assert (own.status, public.status, guest.status) == (200, 200, 200)
            server.wait_clients(3)
            now = wsgi_sse.presence("default")
            assert (dict(now.identities), now.guests) == ({"ada": 2}, 1)


def test_logout_ends_the_private_stream_within_a_second_and_it_stays_closed(
    server: Any, users: dict[str, Any]
) -> None:
    """Logging out ends the user's open streams at once; the reconnect is refused."""
    channel = f"user-{users['ada'].pk}"
    with browser(server) as ada, browser(server) as grace:
        session = log_in(ada, "ada")
        grace_session = log_in(grace, "grace")
        with (
            session_stream(server, session, "default", channel) as stream,
            session_stream(server, grace_session, "default") as other,
        ):
            assert stream.status == 200 and other.status == 200
            server.wait_clients(2)
            token = csrf_token(ada)
            started = time.monotonic()
            assert ada.post("/accounts/logout/", data={"csrfmiddlewaretoken": token}).is_redirect
            stream.read_to_end(timeout=1.0)
            print(f"stream ended {time.monotonic() - started:.3f} s after the logout POST")
            server.wait_clients(1)
            assert dict(wsgi_sse.presence("default").identities) == {"grace": 1}
        with session_stream(server, session, "default", channel) as again:
            assert again.status == 403


def test_password_change_ends_the_users_streams_and_other_sessions_stay_out(
    server: Any, users: dict[str, Any]
) -> None:
    """Setting a password ends the user's streams; a session it invalidated is refused."""
    channel = f"user-{users['ada'].pk}"
    with browser(server) as first:
        session = log_in(first, "ada")
        with session_stream(server, session, channel) as stream:
            assert stream.status == 200
            server.wait_clients(1)
            ada = users["ada"]
            ada.set_password("a new password")
            ada.save()
            stream.read_to_end(timeout=1.0)
        with session_stream(server, session, channel) as again:
            assert again.status == 403
        # A save that does not set the password ends nothing.
        with browser(server) as second:
            fresh = log_in(second, "grace")
            with session_stream(server, fresh, f"user-{users['grace'].pk}") as kept:
                server.wait_clients(1)
                users["grace"].first_name = "Grace"
                users["grace"].save()
                assert kept.read_some(0.3)  # not at its end
                assert server.client_count() == 1
