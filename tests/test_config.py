"""One options table: the keywords, group objects, docs, flags and Django keys derive from it."""

from __future__ import annotations

import ast
import inspect
import math
from collections.abc import Iterator
from dataclasses import fields
from typing import Any

import pytest
from support import ROOT, _crochet
from twisted.internet.testing import MemoryReactorClock

import wsgi_sse
from wsgi_sse import (
    BackplaneOptions,
    LimitOptions,
    PublishOptions,
    SiteOptions,
    SSEServerService,
    StreamOptions,
    make_application,
    make_service,
    set_broadcaster,
)
from wsgi_sse._cli import _service_kwargs, build_parser
from wsgi_sse._config import DJANGO_ONLY, GROUPS, SETTINGS, environment_value, render_options_doc

NOT_IN_OBJECTS = {"name", "reactor", "options", "hub", "publisher"}


def app(environ: object, start_response: object) -> list[bytes]:
    """A WSGI app that is never called."""
    return []


@pytest.fixture(autouse=True)
def _no_broadcaster() -> Iterator[None]:
    # crochet runs the reactor for the other suites: make_service()'s
    # no_setup() must not come first in this process.
    _crochet()
    yield
    set_broadcaster(None)


def _keywords() -> dict[str, Any]:
    """Every keyword the server takes, with its default."""
    found: dict[str, Any] = {"name": "wsgi-sse"}
    for parameter in inspect.signature(SSEServerService.__init__).parameters.values():
        if parameter.kind is parameter.KEYWORD_ONLY:
            found[parameter.name] = parameter.default
    for option in fields(StreamOptions):
        if option.init:
            found[option.name] = option.default
    return found


def test_table_lists_every_keyword() -> None:
    """Each keyword of make_application/SSEServerService/StreamOptions is one row, and no more."""
    names = [row.name for row in SETTINGS]
    assert len(names) == len(set(names))
    missing = sorted(set(_keywords()) - set(names))
    assert not missing, f"add a Setting row in wsgi_sse/_config.py for: {missing}"
    assert not sorted(set(names) - set(_keywords()))
    assert {row.group for row in SETTINGS} == {group.key for group in GROUPS}


@pytest.mark.parametrize("group", [g for g in GROUPS if g.key != "stream"], ids=lambda g: g.key)
def test_group_objects_match_the_table(group: Any) -> None:
    """Each group object has its group's options as fields, with the server's own defaults."""
    rows = {row.name for row in SETTINGS if row.group == group.key} - NOT_IN_OBJECTS
    object_fields = {f.name: f.default for f in fields(group.cls)}
    assert set(object_fields) == rows
    defaults = _keywords()
    for name, default in object_fields.items():
        assert default == defaults[name], name


def test_stream_group_is_stream_options() -> None:
    """The stream group's rows are StreamOptions fields (it also carries the stream limits)."""
    stream = {row.name for row in SETTINGS if row.group == "stream"} - NOT_IN_OBJECTS
    assert stream <= {f.name for f in fields(StreamOptions) if f.init}


def test_options_doc_is_generated_from_the_table() -> None:
    """docs/options.md and django.md hold the tables SETTINGS renders (scripts/options_doc.py)."""
    text = (ROOT / "docs" / "options.md").read_text()
    assert render_options_doc(text) == text
    for row in SETTINGS:
        assert f"| `{row.name}` |" in text
    django = (ROOT / "docs" / "django.md").read_text()
    assert render_options_doc(django) == django
    for row in SETTINGS:
        assert (f"| `{row.name.upper()}` |" in django) == row.django


def test_command_line_flags_come_from_the_table() -> None:
    """Every option with a converter is a flag, and flags become the option's keyword."""
    parser = build_parser()
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings}
    assert {row.option for row in SETTINGS if row.flag is not None} <= flags
    args = vars(
        parser.parse_args(
            [
                "app:app",
                "--cors-origins",
                "https://a.example, https://b.example",
                "--max-pause",
                "5",
                "--history-size",
                "7",
                "--cors-credentials",
                "yes",
            ]
        )
    )
    kwargs = _service_kwargs(args)
    assert kwargs == {
        "cors_origins": ("https://a.example", "https://b.example"),
        "max_pause": 5.0,
        "history_size": 7,
        "cors_credentials": True,
    }
    service = SSEServerService(app, reactor=MemoryReactorClock(), **kwargs)
    assert service.sse_resource.options.max_pause == 5.0
    assert service.hub.history_size == 7


@pytest.mark.parametrize("value", [math.nan, -1.0], ids=["nan", "negative"])
@pytest.mark.parametrize("name", [row.name for row in SETTINGS if row.flag is float])
def test_durations_that_are_not_numbers_of_seconds_are_refused(name: str, value: float) -> None:
    """Every float option refuses NaN (the flag's "nan") and negatives, naming itself."""
    with pytest.raises(ValueError, match=name.replace("_", "[_ ]")):
        make_service(app, reactor=MemoryReactorClock(), **{name: value})


def test_django_keys_come_from_the_table() -> None:
    """settings.WSGI_SSE accepts the upper-cased name of every row meant for it."""
    from wsgi_sse.contrib import django as contrib

    keys = contrib._server_keys() | contrib._OPTION_KEYS
    django_only = {key for key, _, _ in DJANGO_ONLY}
    assert keys == {row.name.upper() for row in SETTINGS if row.django} | django_only
    assert "SERVE_STATIC" in django_only


def test_environment_is_read_in_one_place() -> None:
    """Only wsgi_sse/_config.py reads os.environ or os.getenv."""
    readers = []
    for path in sorted((ROOT / "wsgi_sse").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            reads = (
                isinstance(node, ast.Attribute)
                and node.attr in {"environ", "getenv", "environb"}
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "os"
                and {a.name for a in node.names} & {"environ", "getenv", "environb"}
            )
            if reads:
                readers.append(path.relative_to(ROOT).as_posix())
    assert set(readers) == {"wsgi_sse/_config.py"}


def test_environment_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The table names each option's variable; options without one read nothing."""
    monkeypatch.setenv("WSGI_SSE_LISTEN", "tcp:9999")
    monkeypatch.setenv("WSGI_SSE_REDIS_URL", "")
    assert environment_value("listen") == "tcp:9999"
    assert environment_value("redis_url") == ""
    assert environment_value("heartbeat") is None
    assert SSEServerService(app, reactor=MemoryReactorClock()).listen == "tcp:9999"


def test_group_objects_configure_the_server() -> None:
    """site=, stream=, limits=, backplane= and publish= objects set the options they hold."""
    service = make_service(
        app,
        reactor=MemoryReactorClock(),
        site=SiteOptions(listen="tcp:0:interface=127.0.0.1", sse_path="/events", threads=3),
        stream=StreamOptions(heartbeat=2.0),
        limits=LimitOptions(max_connections=5, header_timeout=7.0),
        backplane=BackplaneOptions(history_size=9),
        publish=PublishOptions(publish_path="/publish", publish_secret="s" * 16),
        retry=1234,
    )
    assert service.sse_path == "/events"
    assert service.listen == "tcp:0:interface=127.0.0.1"
    assert service.threadpool.max == 3
    options = service.sse_resource.options
    assert (options.heartbeat, options.max_connections, options.retry) == (2.0, 5, 1234)
    assert service.hub.history_size == 9
    assert service.publish_resource is not None


def test_make_application_takes_group_objects() -> None:
    """make_application keywords and a SiteOptions combine; one set twice differently is refused."""
    application = make_application(app, site=SiteOptions(sse_path="/live"), heartbeat=3)
    from twisted.application.service import IServiceCollection

    (service,) = IServiceCollection(application)
    assert service.sse_path == "/live"
    assert service.sse_resource.options.heartbeat == 3
    with pytest.raises(TypeError, match="sse_path is given twice"):
        make_application(app, sse_path="/a", site=SiteOptions(sse_path="/b"))
    with pytest.raises(TypeError, match="max_connections is given twice"):
        make_service(app, max_connections=3, limits=LimitOptions(max_connections=4))
    with pytest.raises(TypeError, match="limits= takes a LimitOptions, not dict"):
        make_service(app, limits={"max_connections": 4})


def test_misspelled_group_keyword() -> None:
    """A misspelled group keyword is explained like any option."""
    with pytest.raises(TypeError, match=r"'limit'; did you mean 'limits' \(the limits group"):
        make_application(app, limit=LimitOptions())
    assert {"SiteOptions", "LimitOptions", "PublishOptions", "BackplaneOptions"} <= set(
        wsgi_sse.__all__
    )


def test_service_refuses_group_objects() -> None:
    """SSEServerService() says group objects go to make_service()/make_application()."""
    with pytest.raises(TypeError, match=r"not limits=; make_service\(\) and make_application"):
        SSEServerService(app, reactor=MemoryReactorClock(), limits=LimitOptions())


def test_environment_names_in_messages_match_the_table() -> None:
    """The variable names other modules print in messages are the table's."""
    from wsgi_sse._app import LISTEN_ENV
    from wsgi_sse._config import setting
    from wsgi_sse._publish import PUBLISH_SECRET_ENV
    from wsgi_sse._redis import REDIS_URL_ENV
    from wsgi_sse._tokens import TOKEN_SECRET_ENV

    assert LISTEN_ENV == setting("listen").env
    assert PUBLISH_SECRET_ENV == setting("publish_secret").env
    assert REDIS_URL_ENV == setting("redis_url").env
    assert TOKEN_SECRET_ENV == setting("token_secret").env
