"""Startup errors that say what to write instead, at the API and on the command line."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import ROOT, subprocess_env
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.testing import MemoryReactorClock

from wsgi_sse import SSEServerService, make_application, make_service, set_broadcaster
from wsgi_sse._app import browser_url
from wsgi_sse._checks import BACKPLANE_CLIENTS, check_backplane_url
from wsgi_sse._cli import build_parser, console_main

EXAMPLE = ROOT / "examples" / "bottle_app"


def app(environ: object, start_response: object) -> list[bytes]:
    """A WSGI app that is never called."""
    return []


@pytest.fixture(autouse=True)
def _no_broadcaster() -> Iterator[None]:
    yield
    set_broadcaster(None)


@pytest.mark.parametrize(
    ("given", "meant", "owner"),
    [
        ("heartbaet", "heartbeat", "StreamOptions.heartbeat"),
        ("max_conections", "max_connections", "a limits option, LimitOptions.max_connections"),
        ("sse_pth", "sse_path", "a site option, SiteOptions.sse_path"),
        ("publish_secrt", "publish_secret", "a publish option, PublishOptions.publish_secret"),
    ],
)
def test_misspelled_option_names_the_closest(given: str, meant: str, owner: str) -> None:
    """A misspelled keyword names itself, the closest valid option and where that one belongs."""
    with pytest.raises(TypeError) as info:
        make_application(app, **{given: 5})
    message = str(info.value)
    assert message.startswith(f"make_application() got an unexpected keyword argument {given!r}")
    assert f"did you mean {meant!r}" in message
    assert owner in message
    assert "StreamOptions.__init__" not in message


def test_misspelled_option_in_service_and_make_service() -> None:
    """make_service() and SSEServerService() explain a misspelled keyword the same way."""
    with pytest.raises(TypeError, match=r"^make_service\(\) .* 'retyr'; did you mean 'retry'"):
        make_service(app, retyr=5)
    with pytest.raises(TypeError, match=r"^SSEServerService\(\) .* 'retyr'; did you mean 'retry'"):
        SSEServerService(app, reactor=MemoryReactorClock(), retyr=5)


def test_unrelated_option_has_no_suggestion() -> None:
    """A keyword like no option is still named, without a far-fetched guess."""
    with pytest.raises(TypeError, match=r"'zzz'\. Every option is listed at https://"):
        make_application(app, zzz=1)


@pytest.mark.parametrize(
    ("listen", "write"),
    [
        ("8000", "'tcp:8000' (every interface) or 'tcp:8000:interface=127.0.0.1'"),
        ("localhost:8000", "'tcp:8000:interface=127.0.0.1'"),
        ("0.0.0.0:8000", "'tcp:8000'"),
        ("10.1.2.3:8000", "'tcp:8000:interface=10.1.2.3'"),
        ("[::1]:8000", "'tcp6:8000:interface=\\:\\:1'"),
        ("tcp:nope", "'tcp:8005', 'tcp:8005:interface=127.0.0.1' or 'unix:/run/app.sock'"),
    ],
)
def test_listen_that_is_not_an_endpoint(listen: str, write: str) -> None:
    """A host:port or a bare port is refused with the endpoint string to write."""
    with pytest.raises(ValueError) as info:
        SSEServerService(app, reactor=MemoryReactorClock(), listen=listen)
    assert str(info.value).startswith(f"listen={listen!r} is not a Twisted endpoint string")
    assert str(info.value).endswith(f"write {write}")


def test_listen_from_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad $WSGI_SSE_LISTEN is reported under the variable's name."""
    monkeypatch.setenv("WSGI_SSE_LISTEN", "8000")
    with pytest.raises(ValueError, match=r"^\$WSGI_SSE_LISTEN='8000' is not a Twisted endpoint"):
        SSEServerService(app, reactor=MemoryReactorClock())


@pytest.mark.parametrize("spec", ["app:app", "app", b"app:app"])
def test_string_instead_of_app(spec: object) -> None:
    """A module:attribute string is refused at once, pointing at the import and the CLI."""
    with pytest.raises(TypeError, match=r"takes the WSGI application object, not the string"):
        make_application(spec)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"import it \(from app import app\) and pass it"):
        make_service(spec)  # type: ignore[arg-type]


def test_not_callable_app() -> None:
    """Anything that is not callable is not a WSGI application."""
    with pytest.raises(TypeError, match=r"takes a WSGI application .* not int"):
        make_application(42)  # type: ignore[arg-type]


def test_backplane_library_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Redis URL without the redis package fails when the server is built, with the pip line."""
    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(RuntimeError, match=r"pip install 'wsgi-sse\[redis\]'$"):
        SSEServerService(app, reactor=MemoryReactorClock(), redis_url="redis://127.0.0.1:1/0")


def test_backplane_unknown_scheme() -> None:
    """A URL no backplane serves is refused, listing the schemes that are."""
    with pytest.raises(ValueError, match=r"'http://x': the scheme must be one of .*redis://") as e:
        check_backplane_url("http://x")
    assert "postgresql://" in str(e.value)
    assert check_backplane_url("redis://localhost/0") is BACKPLANE_CLIENTS["redis"]


def test_backplane_unknown_scheme_hides_the_password() -> None:
    """The refusal of a URL names it without its password."""
    with pytest.raises(ValueError, match="the scheme must be one of") as e:
        check_backplane_url("amqp://app:s3cret-pass@mq.internal:5672/")
    assert "s3cret-pass" not in str(e.value)
    assert "amqp://app:***@mq.internal:5672/" in str(e.value)


def _errors(stderr: str) -> list[str]:
    """The error lines of the command line (the reactor's log lines are timestamped)."""
    return [line for line in stderr.splitlines() if line.startswith("python -m wsgi_sse:")]


def _cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess[str]:
    code = f"{prelude}import sys; from wsgi_sse._cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=EXAMPLE,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_bad_listen_is_one_line() -> None:
    """python -m wsgi_sse --listen 8000 exits 2 with one line saying tcp:8000."""
    proc = _cli("app:app", "--listen", "8000")
    assert proc.returncode == 2
    (line,) = _errors(proc.stderr)
    assert line.startswith("python -m wsgi_sse: listen='8000' is not a Twisted endpoint")
    assert "'tcp:8000'" in line
    assert "Traceback" not in proc.stderr


def test_cli_missing_backplane_library_is_one_line() -> None:
    """The command line with a Redis URL but no redis package exits 2 with the pip line."""
    proc = _cli(
        "app:app",
        "--listen",
        "tcp:0:interface=127.0.0.1",
        "--redis-url",
        "redis://127.0.0.1:1/0",
        prelude="import sys; sys.modules['redis'] = None; ",
    )
    assert proc.returncode == 2, proc.stderr
    (line,) = _errors(proc.stderr)
    assert line.startswith("python -m wsgi_sse: the Redis backplane (redis://) needs")
    assert line.endswith("pip install 'wsgi-sse[redis]'")
    assert "Traceback" not in proc.stderr


def test_cli_version_and_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """wsgi-sse --version prints the version; --help names wsgi-sse, defaults and bare modules."""
    import wsgi_sse

    monkeypatch.setattr(sys, "argv", ["wsgi-sse", "--version"])
    with pytest.raises(SystemExit) as exit_info:
        console_main()
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"wsgi-sse {wsgi_sse.__version__}"
    text = " ".join(build_parser("wsgi-sse").format_help().split())
    assert text.startswith("usage: wsgi-sse ")
    assert "(default: 15.0)" in text and '(default: "/sse")' in text
    assert "or a module, whose 'application' or else 'app' is used" in text


@pytest.mark.parametrize(
    ("address", "url"),
    [
        (IPv4Address("TCP", "0.0.0.0", 8005), "http://127.0.0.1:8005/"),
        (IPv4Address("TCP", "127.0.0.1", 9000), "http://127.0.0.1:9000/"),
        (IPv6Address("TCP", "::", 8005), "http://[::1]:8005/"),
        (UNIXAddress(b"/run/app.sock"), None),
    ],
)
def test_browser_url(address: object, url: str | None) -> None:
    """The startup log's URL to open is one a browser on this machine can reach."""
    assert browser_url(address) == url


def test_django_static_warning(tmp_path: Path) -> None:
    """A new startproject served as documented warns about STATIC_ROOT; the docs' line fixes it."""
    subprocess.run(
        [sys.executable, "-m", "django", "startproject", "mysite", str(tmp_path)],
        check=True,
        timeout=60,
    )
    script = (
        "import os; os.environ['DJANGO_SETTINGS_MODULE'] = 'mysite.settings'\n"
        "from twisted.logger import globalLogPublisher, formatEvent\n"
        "warnings = []\n"
        "def watch(event):\n"
        "    if event.get('log_level').name == 'warn':\n"
        "        warnings.append(formatEvent(event))\n"
        "globalLogPublisher.addObserver(watch)\n"
        "from wsgi_sse.contrib.django import make_application\n"
        "make_application(listen='tcp:0:interface=127.0.0.1')\n"
        "print(' | '.join(warnings) or 'None')\n"
    )

    def warning() -> str:
        proc = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=subprocess_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return proc.stdout.strip()

    assert warning().startswith("STATIC_ROOT is not set, so nothing is served at /static/")
    settings_py = tmp_path / "mysite" / "settings.py"
    settings_py.write_text(settings_py.read_text() + '\nSTATIC_ROOT = BASE_DIR / "staticfiles"\n')
    assert "staticfiles' does not exist" in warning()
    (tmp_path / "staticfiles").mkdir()
    assert "staticfiles' is empty" in warning()
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput"],
        cwd=tmp_path,
        env=subprocess_env(),
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert warning() == "None"
