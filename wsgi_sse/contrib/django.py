"""
Django integration: serve a Django project with its event stream, let only
a user's own pages join that user's channel, and broadcast after commit.

    # server.py -- run with: twistd -ny server.py
    import os
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")

    from wsgi_sse.contrib.django import make_application
    application = make_application()

    # settings.py
    WSGI_SSE = {
        "SSE_PATH": "/sse",
        "AUTHORIZE": "wsgi_sse.contrib.django.user_channels_authorize",
    }

    # a view
    from wsgi_sse.contrib.django import broadcast_on_commit, user_channel
    broadcast_on_commit("Your import is done", channel=user_channel(request.user))

Django is imported when this module is, never by C{import wsgi_sse}.
"""

from __future__ import annotations

import copy
import difflib
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlencode

import django
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, transaction
from django.http import HttpResponse
from django.utils.module_loading import import_string
from twisted.logger import Logger
from twisted.web.resource import IResource

from .._app import make_application as _make_application
from .._broadcast import Broadcaster, get_broadcaster, prepare_event
from .._config import DJANGO_ONLY, SETTINGS
from .._hub import DEFAULT_CHANNEL, Hub
from .._options import Allowed, AuthorizeResult, StreamOptions, StreamRequest
from .._views import hold_body, hold_headers

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication
    from twisted.python.components import Componentized

__all__ = [
    "SETTINGS_NAME",
    "USER_CHANNEL_PREFIX",
    "broadcast_on_commit",
    "django_hook",
    "end_user_streams",
    "get_user",
    "hold_stream",
    "make_application",
    "server_kwargs",
    "static_resources",
    "static_warning",
    "stream_url",
    "user_channel",
    "user_channels",
    "user_channels_authorize",
]

SETTINGS_NAME = "WSGI_SSE"
"""The name of the Django setting (a dict) that configures wsgi-sse."""

USER_CHANNEL_PREFIX = "user-"
"""A user's own channel is this prefix followed by the user's primary key."""

_T = TypeVar("_T")
_log = Logger()

_OPTION_KEYS = frozenset(f.name.upper() for f in fields(StreamOptions) if f.init)
# Every settings key is a row of the options table (wsgi_sse._config.SETTINGS).
HISTORY_KEYS = ("history_size", "history_age", "history_channels")
_SETTINGS_KEYS = frozenset(row.name.upper() for row in SETTINGS if row.django)
_HOOK_KEYS = frozenset({"AUTHORIZE", "INITIAL", "ON_PRESENCE"})
# Keys whose value is a number (their command-line flag reads one).
_NUMBERS = {row.name.upper(): row.flag in (int, float) for row in SETTINGS}
_WRAPPED = "_wsgi_sse_django_hook"


def _server_keys() -> frozenset[str]:
    """Settings keys naming make_application()'s (and the service's) own arguments."""
    return (_SETTINGS_KEYS - _OPTION_KEYS) | {key for key, _, _ in DJANGO_ONLY}


# -- hooks that use the database ---------------------------------------------------


def django_hook(hook: Callable[[StreamRequest], _T]) -> Callable[[StreamRequest], _T]:
    """
    Wrap a stream hook (C{authorize}, C{initial}) so that it uses Django's
    database connections the way a Django request does.

    Hooks run in a WSGI pool thread but outside Django's request cycle, which
    is what normally closes stale connections (C{CONN_MAX_AGE}, connections
    broken by a database restart).  The wrapper calls
    C{django.db.close_old_connections()} before and after the hook, as the
    C{request_started} and C{request_finished} signals would.

    The wrapped hook may be called in any thread except the reactor's (it
    blocks on the database).
    """

    if getattr(hook, _WRAPPED, False):
        return hook

    @functools.wraps(hook)
    def wrapper(request: StreamRequest) -> _T:
        close_old_connections()
        try:
            return hook(request)
        finally:
            close_old_connections()

    setattr(wrapper, _WRAPPED, True)
    return wrapper


class _ReadOnlySession:
    """
    A session seen through C{django.contrib.auth.get_user} without writing.

    C{get_user} may rotate the session key (a session hash made with a
    C{SECRET_KEY_FALLBACKS} key) or flush the session (a hash that no longer
    matches).  Both need a response that sets the new cookie, which a stream
    never sends, so here they change nothing stored: the user's next page
    request does it for real.
    """

    def __init__(self, session: Any) -> None:
        self._session = session
        self._overrides: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        if key in self._overrides:
            return self._overrides[key]
        return self._session[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __setitem__(self, key: str, value: Any) -> None:
        self._overrides[key] = value

    def __contains__(self, key: str) -> bool:
        return key in self._overrides or key in self._session

    def cycle_key(self) -> None:
        pass

    def flush(self) -> None:
        self._overrides.clear()


class _SessionRequest:
    """The little of an C{HttpRequest} that C{auth.get_user()} reads."""

    def __init__(self, session: Any) -> None:
        self.session = session


def get_user(request: StreamRequest) -> Any:
    """
    Return the Django user whose session cookie came with a stream request,
    or an C{AnonymousUser}.

    It reads the cookie named by C{SESSION_COOKIE_NAME}, loads the session
    with C{SESSION_ENGINE} and resolves the user exactly as
    C{django.contrib.auth.get_user} does (authentication backend, session
    hash check after a password change).  Nothing is written: an expired,
    unknown or invalidated session gives an anonymous user.

    It uses the database without closing connections: call it from a hook
    wrapped with L{django_hook} (L{user_channels} does).  May be called in
    any thread except the reactor's.
    """
    from django.contrib.auth import get_user as auth_get_user
    from django.contrib.auth.models import AnonymousUser

    session_key = request.cookies.get(settings.SESSION_COOKIE_NAME)
    if not session_key:
        return AnonymousUser()
    engine = import_module(settings.SESSION_ENGINE)
    session = _ReadOnlySession(engine.SessionStore(session_key))
    return auth_get_user(_SessionRequest(session))


# -- revocation ----------------------------------------------------------------------


def end_user_streams(user: Any) -> None:
    """
    End every open stream of C{user} (identity: the username), in every
    process sharing the backplane.  The pages reconnect and are authorized
    again: a user who logged out, or whose other sessions a password change
    invalidated, is refused.

    Called on C{user_logged_out} and when a user's password is set and
    saved; call it yourself when you deactivate a user.  May be called in
    any thread; does nothing in a process that serves no streams.
    """
    from .. import _broadcast
    from .._presence import disconnect

    username = getattr(user, "get_username", None)
    if username is None or getattr(user, "is_anonymous", True):
        return
    if _broadcast._current is None:
        return  # no server in this process (a management command, a worker)
    try:
        disconnect(identity=username())
    except (ValueError, TypeError, RuntimeError):  # a username no stream could carry
        return


def _logged_out(sender: Any, request: Any = None, user: Any = None, **kwargs: Any) -> None:
    if user is not None:
        end_user_streams(user)


def _user_saved(sender: Any, instance: Any, **kwargs: Any) -> None:
    # AbstractBaseUser.set_password() keeps the raw password in _password
    # until save() has finished: post_save sees it exactly when the password
    # changed, which invalidates the user's other sessions.
    if getattr(instance, "_password", None) is not None and hasattr(instance, "get_username"):
        end_user_streams(instance)


def _connect_revocation() -> None:
    from django.contrib.auth.signals import user_logged_out
    from django.db.models.signals import post_save

    user_logged_out.connect(_logged_out, dispatch_uid="wsgi_sse.end_user_streams")
    post_save.connect(_user_saved, dispatch_uid="wsgi_sse.end_user_streams_on_password")


_connect_revocation()


# -- per-user channels -------------------------------------------------------------


def user_channel(user: Any, *, prefix: str = USER_CHANNEL_PREFIX) -> str:
    """
    Return the name of a user's own channel: C{"user-<pk>"}.

    @param user: a user instance, or a primary key.
    @raise ValueError: for an anonymous user (it has no channel).
    May be called in any thread.
    """
    if getattr(user, "is_anonymous", False):
        raise ValueError("anonymous users have no channel of their own")
    pk = getattr(user, "pk", user)
    if pk is None:
        raise ValueError("the user has no primary key (not saved yet?)")
    return f"{prefix}{pk}"


def user_channels(
    *,
    public: Iterable[str] = (DEFAULT_CHANNEL,),
    prefix: str = USER_CHANNEL_PREFIX,
    login_required: bool = False,
    extra: Callable[[Any], Iterable[str]] | None = None,
    identify: bool = True,
) -> Callable[[StreamRequest], AuthorizeResult]:
    """
    Build an C{authorize} hook: everyone may join the C{public} channels, a
    logged-in user also his own channel (L{user_channel}), and nothing else.

    A request for any other channel, another user's channel, or (for an
    anonymous client) any user channel is refused with 403 before anything
    is subscribed.  The user comes from the Django session cookie
    (L{get_user}), in the WSGI thread pool.  A logged-in user's stream
    carries the username as its identity (L{wsgi_sse.presence},
    L{wsgi_sse.disconnect}); an anonymous one is a guest.  A request for
    public channels only without a session cookie does not touch the
    session store (unless C{login_required}).

    @param public: channels open to every client.
    @param prefix: the prefix of user channels (as given to L{user_channel}).
    @param login_required: refuse anonymous clients even on public channels.
    @param extra: C{(user) -> channels}: more channels an authenticated user
        may join (C{"staff"} for staff members, a channel per group, ...).
    @param identify: look the user up for public channels too when a
        session cookie comes with the request, so that the stream carries
        the username; C{False}: public-only streams are guests and never
        touch the session store.
    May be called in any thread; the hook it returns runs in the WSGI pool.
    """
    if isinstance(public, str):
        raise TypeError("public must be a collection of channel names, not a str")
    public_set = frozenset(public)

    @django_hook
    def authorize(request: StreamRequest) -> AuthorizeResult:
        if not login_required and public_set.issuperset(request.channels):
            if not identify or settings.SESSION_COOKIE_NAME not in request.cookies:
                return True
        user = get_user(request)
        if not user.is_authenticated:
            return False if login_required else public_set
        allowed = set(public_set)
        allowed.add(user_channel(user, prefix=prefix))
        if extra is not None:
            allowed.update(extra(user))
        return Allowed(allowed, identity=user.get_username())

    return authorize


user_channels_authorize = user_channels()
"""
The C{authorize} hook of L{user_channels} with its defaults: the default
channel for everyone, C{user-<pk>} for that user only.  Name it in settings:
C{WSGI_SSE = {"AUTHORIZE": "wsgi_sse.contrib.django.user_channels_authorize"}}.
"""


def stream_url(*channels: str, last_event_id: str | None = None) -> str:
    """
    Return the URL of the event stream for C{channels}, for a template's
    C{new EventSource(...)}: C{stream_url("default", "user-7")} gives
    C{"/sse?channel=default&channel=user-7"}.  The path comes from the
    C{SSE_PATH} setting.  May be called in any thread.
    """
    path = str(_config().get("SSE_PATH", "/sse"))
    query: list[tuple[str, str]] = [("channel", c) for c in channels]
    if last_event_id is not None:
        query.append(("lastEventId", last_event_id))
    return f"{path}?{urlencode(query)}" if query else path


# -- broadcasting after commit -------------------------------------------------------


class _Sender(Protocol):
    """Anything that broadcasts like L{wsgi_sse.broadcast}: a L{RedisPublisher}, ..."""

    def broadcast(
        self,
        data: object,
        *,
        event: str | None = ...,
        channel: str | None = ...,
        retry: int | None = ...,
    ) -> object: ...


def hold_stream(
    *channels: str, initial: object = None, identity: str | None = None
) -> HttpResponse:
    """
    Answer a view with an event stream on C{channels}, held by the server
    after the view returns (the view's thread is free at once).

    The view authorizes as views do (C{@login_required}, permission
    checks); a browser that reconnects calls it again.  C{initial}, if not
    L{None}, is sent first as an C{init} event; C{identity} (usually
    C{request.user.get_username()}) is who the stream belongs to, for
    L{wsgi_sse.presence} and L{end_user_streams}.  The response is an
    ordinary C{HttpResponse}: middleware may add headers and cookies.

        @login_required
        def job_events(request, pk):
            job = get_object_or_404(Job, pk=pk, owner=request.user)
            if job.finished:
                return HttpResponse(status=204)  # the page stops reconnecting
            return hold_stream(f"job-{job.pk}", initial={"progress": job.progress})

    May be called in any thread.

    @raise ValueError: for no channel or a name that cannot be a channel,
        or an identity a stream cannot carry.
    @raise TypeError: if C{initial} cannot be encoded.
    """
    headers = hold_headers(*channels, identity=identity)
    response = HttpResponse(hold_body(initial), content_type=headers[2][1])
    for name, value in headers:
        if name != "Content-Type":
            response[name] = value
    return response


def broadcast_on_commit(
    data: object,
    *,
    event: str | None = None,
    channel: str | None = None,
    retry: int | None = None,
    using: str | None = None,
    broadcaster: Broadcaster | _Sender | None = None,
) -> None:
    """
    Broadcast an event once the current database transaction commits; if it
    rolls back, the event is never sent.

    The event is validated and encoded at once, in the caller's thread: bad
    input raises here, and later changes to C{data} do not alter what is
    sent.  Sending is registered with C{django.db.transaction.on_commit}, so
    it follows Django's rules: outside an atomic block it happens
    immediately; inside a savepoint that is rolled back, never.

    @param using: the database alias whose transaction to wait for
        (default: C{"default"}).  When C{settings.WSGI_SSE["BACKPLANE_DATABASE"]}
        names this alias (the PostgreSQL backplane on the project's own
        database), the event is written as a row inside the transaction
        itself (L{wsgi_sse.postgres.publish}), from any process.
    @param broadcaster: where the event goes.  By default, the server this
        process runs (L{get_broadcaster<wsgi_sse.get_broadcaster>}).  In a
        process that is not the web server (a management command, a task
        worker), a L{wsgi_sse.redis.RedisPublisher}, or any object with the
        C{broadcast(data, *, event, channel, retry)} method.  An exception it
        raises at commit time (Redis unreachable) propagates from the commit,
        after the data is committed, as for any C{on_commit} callback.
    @raise TypeError: for values of the wrong type; nothing is registered.
    @raise ValueError: for values that would break the stream; nothing is
        registered.
    May be called in any thread (the thread whose transaction it is).
    """
    alias = using or DEFAULT_DB_ALIAS
    if broadcaster is None and _config().get("BACKPLANE_DATABASE") == alias:
        # The PostgreSQL backplane on this very database: the event is a row
        # written in this transaction, delivered by every process once it
        # commits (and by none if it rolls back).
        from wsgi_sse import postgres

        postgres.publish(connections[alias], data, event=event, channel=channel, retry=retry)
        return
    target = get_broadcaster() if broadcaster is None else broadcaster
    # Validate now (bad input raises here, nothing is registered), and hand
    # the sender a copy of the data as it is now.
    prepare_event(data, event=event, channel=channel, retry=retry)
    payload = data if isinstance(data, str) else copy.deepcopy(data)

    def send() -> object:
        return target.broadcast(payload, event=event, channel=channel, retry=retry)

    transaction.on_commit(send, using=using)


# -- settings-driven server ----------------------------------------------------------


def _config() -> Mapping[str, Any]:
    config = getattr(settings, SETTINGS_NAME, None)
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ImproperlyConfigured(f"settings.{SETTINGS_NAME} must be a dict")
    return config


def server_kwargs() -> dict[str, Any]:
    """
    Read C{settings.WSGI_SSE} and return the keyword arguments for
    L{wsgi_sse.make_application} (or L{wsgi_sse.make_service}).

    Keys are the upper-cased names of those functions' keyword arguments
    (C{LISTEN}, C{SSE_PATH}, C{THREADS}, C{MIN_THREADS}, C{SHUTDOWN_TIMEOUT},
    C{NAME}, ...) and of every L{StreamOptions} field (C{HEARTBEAT},
    C{RETRY}, C{CORS_ORIGINS}, ...).  C{BACKPLANE_URL} picks a backplane by
    URL; C{BACKPLANE_DATABASE} (a database alias, usually C{"default"}) uses
    the project's own PostgreSQL database as the backplane, without
    repeating its URL.  C{AUTHORIZE}, C{INITIAL} and C{ON_PRESENCE} are callables or dotted paths to
    them; they are wrapped with L{django_hook}.  C{SERVE_STATIC} is read by
    L{make_application} and not returned.

    @raise ImproperlyConfigured: for an unknown key or an unusable value.
    May be called in any thread.
    """
    config = _config()
    server_keys = _server_keys()
    unknown = sorted(set(config) - server_keys - _OPTION_KEYS)
    if unknown:
        known = sorted(server_keys | _OPTION_KEYS)
        close = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ImproperlyConfigured(
            f"unknown key(s) in settings.{SETTINGS_NAME}: {', '.join(unknown)}{hint} "
            f"(known: {', '.join(known)})"
        )
    kwargs: dict[str, Any] = {}
    for key, value in config.items():
        if key == "SERVE_STATIC":
            continue
        if key == "BACKPLANE_DATABASE":
            continue
        if key in _HOOK_KEYS and value is not None:
            if isinstance(value, str):
                try:
                    value = import_string(value)
                except ImportError as e:
                    raise ImproperlyConfigured(
                        f"settings.{SETTINGS_NAME}[{key!r}]: cannot import {value!r}: {e}"
                    ) from e
            if not callable(value):
                raise ImproperlyConfigured(
                    f"settings.{SETTINGS_NAME}[{key!r}] must be a callable or its dotted path"
                )
            value = django_hook(value)
        elif key == "CORS_ORIGINS" and isinstance(value, list):
            value = tuple(value)
        elif _NUMBERS.get(key) and isinstance(value, (str, bytes, bool)):
            # Often read from the environment, and so a string.
            raise ImproperlyConfigured(
                f"settings.{SETTINGS_NAME}[{key!r}] must be a number, not {value!r}"
            )
        kwargs[key.lower()] = value
    option_kwargs = {k: v for k, v in kwargs.items() if k.upper() in _OPTION_KEYS}
    try:
        StreamOptions(**option_kwargs)
    except (TypeError, ValueError) as e:
        raise ImproperlyConfigured(f"settings.{SETTINGS_NAME}: {e}") from e
    alias = config.get("BACKPLANE_DATABASE")
    if alias is not None:
        kwargs["hub"] = _database_hub(alias, kwargs)
    return kwargs


def _database_hub(alias: str, kwargs: dict[str, Any]) -> Hub:
    """A hub on the PostgreSQL backplane of database C{alias}, with the history settings."""
    from wsgi_sse.postgres import PostgresBackplane

    if kwargs.get("backplane_url") or kwargs.get("redis_url"):
        raise ImproperlyConfigured(
            f"settings.{SETTINGS_NAME}: BACKPLANE_DATABASE and BACKPLANE_URL/REDIS_URL "
            "name two backplanes; keep one"
        )
    history = {k: kwargs.pop(k) for k in HISTORY_KEYS if k in kwargs}
    try:
        return Hub(backplane=PostgresBackplane.from_django(alias), **history)
    except (ImportError, ValueError, KeyError) as e:
        raise ImproperlyConfigured(f"settings.{SETTINGS_NAME}['BACKPLANE_DATABASE']: {e}") from e


def _static_file(path: str) -> IResource:
    """The files under C{path}, served by L{StaticFiles<wsgi_sse.StaticFiles>}."""
    from .._static import StaticFiles

    return StaticFiles(path)


def static_resources() -> dict[str, IResource]:
    """
    Return C{{STATIC_URL path: StaticFiles(STATIC_ROOT)}} for L{make_application}'s
    C{resources}, or an empty dict when C{STATIC_ROOT} is unset or
    C{STATIC_URL} is not a path on this server (a CDN).  Run
    C{manage.py collectstatic} first.  May be called in any thread.
    """
    root = getattr(settings, "STATIC_ROOT", None)
    url = getattr(settings, "STATIC_URL", None)
    if not root or not url:
        return {}
    url = str(url)
    if "://" in url or url.startswith("//"):
        return {}
    path = "/" + url.strip("/")
    if path == "/":
        raise ImproperlyConfigured("STATIC_URL must not be '/' when wsgi-sse serves static files")
    return {path: _static_file(str(root))}


def static_warning() -> str | None:
    """
    Say why the static files would not be served, or return L{None}: no
    C{STATIC_ROOT} (a new C{startproject}), or a C{STATIC_ROOT} that does not
    exist or is empty (C{collectstatic} not run).  May be called in any thread.
    """
    url = getattr(settings, "STATIC_URL", None)
    if not url or "://" in str(url) or str(url).startswith("//"):
        return None
    path = "/" + str(url).strip("/") + "/"
    root = getattr(settings, "STATIC_ROOT", None)
    if not root:
        return (
            f"STATIC_ROOT is not set, so nothing is served at {path} (the admin is unstyled): "
            f'add STATIC_ROOT = BASE_DIR / "staticfiles" to your settings and run '
            f"manage.py collectstatic, or set {SETTINGS_NAME}['SERVE_STATIC'] = False"
        )
    directory = Path(root)
    if not directory.is_dir():
        return (
            f"STATIC_ROOT {str(root)!r} does not exist, so every request under {path} is a 404: "
            f"run manage.py collectstatic"
        )
    if next(directory.iterdir(), None) is None:
        return (
            f"STATIC_ROOT {str(root)!r} is empty, so every request under {path} is a 404: "
            f"run manage.py collectstatic"
        )
    return None


def make_application(wsgi_app: WSGIApplication | None = None, **overrides: Any) -> Componentized:
    """
    Build the Twisted application for C{twistd -ny server.py} from the
    Django project named by C{DJANGO_SETTINGS_MODULE}.

    The WSGI app defaults to C{django.core.wsgi.get_wsgi_application()}
    (which sets Django up); the rest comes from C{settings.WSGI_SSE} (see
    L{server_kwargs}) and then C{overrides}.  Unless C{SERVE_STATIC} is
    C{False}, the collected static files (C{STATIC_ROOT}) are served at
    C{STATIC_URL} by Twisted, from the reactor thread, without using a WSGI
    thread (see L{static_resources}); a warning is logged when there is
    nothing to serve there (see L{static_warning}).

    @raise ImproperlyConfigured: for an unknown key or an unusable value,
        naming it.

    Call it in the main thread, from the C{.tac} file.
    """
    if wsgi_app is None:
        from django.core.wsgi import get_wsgi_application

        wsgi_app = get_wsgi_application()
    else:
        django.setup(set_prefix=False)
    kwargs = server_kwargs()
    resources: dict[str, IResource] = {}
    if _config().get("SERVE_STATIC", True):
        problem = static_warning()
        if problem is not None:
            _log.warn("{problem}", problem=problem)
        resources.update(static_resources())
    resources.update(kwargs.pop("resources", None) or {})
    resources.update(overrides.pop("resources", None) or {})
    if resources:
        kwargs["resources"] = resources
    kwargs.update(overrides)
    try:
        return _make_application(wsgi_app, **kwargs)
    except (TypeError, ValueError) as e:
        # An unusable value of a server option (THREADS, LISTEN, SSE_PATH, ...).
        where = f"settings.{SETTINGS_NAME}" + (" or make_application()" if overrides else "")
        raise ImproperlyConfigured(f"{where}: {e}") from e
