"""Running without a server.py: python -m wsgi_sse and the twistd plugin."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import (
    ROOT,
    StreamClient,
    free_port,
    http_request,
    start_cli,
    subprocess_env,
    wait_for_port,
)

from wsgi_sse._cli import load_app

EXAMPLE = ROOT / "examples" / "bottle_app"


def _knock_and_see(port: int, sse_path: str) -> None:
    with StreamClient(port, sse_path) as client:
        client.wait_for(lambda c: c.parser.retry is not None)
        status, _, _ = http_request(
            port,
            "POST",
            "/knock",
            body=b"name=Grace",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert status == 200
        assert client.wait_events(1)[0].data == "Grace knocked"
        assert client.parser.comments  # the heartbeat (0.2 s) flows too
        client.wait_for(lambda c: len(c.parser.comments) >= 2, timeout=5)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_python_m_wsgi_sse(sig: signal.Signals) -> None:
    """python -m wsgi_sse serves the app and the stream, and exits cleanly on a signal."""
    proc, port = start_cli(
        "app:app", "--sse-path", "/events/live", "--heartbeat", "0.2", cwd=EXAMPLE
    )
    try:
        with StreamClient(port, "/events/live") as open_client:
            open_client.wait_for(lambda c: c.parser.retry is not None)
            _knock_and_see(port, "/events/live")
            proc.send_signal(sig)
            # The open stream ends cleanly (chunked terminator), not reset.
            open_client.read_to_end(timeout=10)
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    assert f"open http://127.0.0.1:{port}/ (stream at /events/live)" in output


def test_python_m_wsgi_sse_waits_without_end_for_busy_threads() -> None:
    """--shutdown-timeout inf (wait for busy threads however long) stops cleanly on a signal."""
    proc, _ = start_cli("app:app", "--shutdown-timeout", "inf", cwd=EXAMPLE)
    try:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


def test_python_m_wsgi_sse_bad_app() -> None:
    """A wrong module:attribute gives a clear message and exit status 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "wsgi_sse", "nosuchmodule:app"],
        cwd=EXAMPLE,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "cannot import 'nosuchmodule'" in proc.stderr


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        (["--shutdown-timeout", "nan"], "shutdown_timeout must not be negative, got nan"),
        (
            ["--threads", "ten"],
            "argument --threads: expected an integer, not 'ten' (--help lists the options)",
        ),
        # `none` is a value only of the options that may be None.
        (
            ["--threads", "none"],
            "argument --threads: expected an integer, not 'none' (--help lists the options)",
        ),
        (
            ["--access-log", "maybe"],
            "argument --access-log: expected yes/no, true/false, on/off or 1/0, not 'maybe' "
            "(--help lists the options)",
        ),
        (
            ["--idle-timeout", "never"],
            "argument --idle-timeout: expected a number or none, not 'never' "
            "(--help lists the options)",
        ),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag (--help lists the options)"),
    ],
    ids=[
        "out-of-range",
        "not-a-number",
        "none-not-allowed",
        "not-a-boolean",
        "not-none",
        "unknown-flag",
    ],
)
def test_python_m_wsgi_sse_bad_option_value(flags: list[str], line: str) -> None:
    """A bad option value or flag is one line and exit status 2, not a server."""
    proc = subprocess.run(
        [sys.executable, "-m", "wsgi_sse", "app:app", *flags],
        cwd=EXAMPLE,
        env=subprocess_env(WSGI_SSE_LISTEN="tcp:0:interface=127.0.0.1"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    # Nothing but log lines before it.
    assert proc.stderr.count("python -m wsgi_sse") == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"python -m wsgi_sse: {line}"


def test_python_m_wsgi_sse_none_turns_options_off() -> None:
    """
    `none` (any case) gives None to the options that take it: --client-path
    none leaves /sse.js to the app; the timeouts and the body limit are off.
    """
    proc, port = start_cli(
        "app:app",
        "--client-path",
        "none",
        "--idle-timeout",
        "None",
        "--header-timeout",
        "NONE",
        "--max-request-body",
        "none",
        cwd=EXAMPLE,
    )
    try:
        status, _, _ = http_request(port, "GET", "/sse.js")
        assert status == 404  # the Bottle app's answer: no browser client there
        status, _, _ = http_request(port, "GET", "/")
        assert status == 200
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output


def test_twistd_plugin_takes_none_and_explains_bad_values() -> None:
    """twistd wsgi-sse reads flags with the same converters: `none`, and what a flag takes."""
    proc = subprocess.run(
        ["twistd", "--pidfile=", "-n", "wsgi-sse", "--app", "app:app", "--log-streams", "maybe"],
        cwd=EXAMPLE,
        env=subprocess_env(PYTHONPATH=f"{ROOT}:{EXAMPLE}"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    assert "expected yes/no, true/false, on/off or 1/0, not 'maybe'" in output, output
    assert "Traceback" not in proc.stdout + proc.stderr
    from twisted.python import usage

    from wsgi_sse._cli import TwistdOptions, _service_kwargs

    options = TwistdOptions()
    options.parseOptions(["--app", "app:app", "--idle-timeout", "none", "--client-path", "None"])
    assert _service_kwargs(dict(options)) == {"idle_timeout": None, "client_path": None}
    with pytest.raises(usage.UsageError, match="expected an integer or none, not 'off'"):
        TwistdOptions().parseOptions(["--app", "app:app", "--max-request-body", "off"])


def test_help_is_plain_text_and_lists_values() -> None:
    """--help shows no Markdown link; yes-or-no flags and `none` say what they take."""
    proc = subprocess.run(
        [sys.executable, "-m", "wsgi_sse", "--help"],
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "](" not in text and ".md" not in text, proc.stdout
    assert "Where the browser client module is served" in text
    assert "--access-log yes|no" in text
    assert "takes yes/no, true/false, on/off or 1/0" in text
    assert "--idle-timeout VALUE|none" in text
    assert "--threads VALUE|none" not in text


def test_twistd_plugin() -> None:
    """twistd -n wsgi-sse --app module:app serves the app and the stream."""
    port = free_port()
    proc = subprocess.Popen(
        [
            "twistd",
            "--pidfile=",
            "-n",
            "wsgi-sse",
            "--app",
            "app:app",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--heartbeat",
            "0.2",
        ],
        cwd=EXAMPLE,
        env=subprocess_env(PYTHONPATH=f"{ROOT}:{EXAMPLE}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_port(port, proc)
        _knock_and_see(port, "/sse")
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=15)
    assert proc.returncode in (0, -signal.SIGTERM), output
    assert "Traceback" not in output, output


def test_twistd_plugin_requires_app() -> None:
    """twistd wsgi-sse without --app is a usage error."""
    proc = subprocess.run(
        ["twistd", "--pidfile=", "-n", "wsgi-sse"],
        cwd=EXAMPLE,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "--app module:attribute is required" in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--app", "nosuchmodule:app"], "cannot import 'nosuchmodule'"),
        (["--app", "app:app", "--listen", "8000"], "write 'tcp:8000' (every interface)"),
        (["--app", "app:app", "--heartbeat", "-1"], "heartbeat must not be negative, got -1.0"),
    ],
    ids=["app", "listen", "value"],
)
def test_twistd_plugin_startup_errors_are_one_line(flags: list[str], message: str) -> None:
    """twistd -n wsgi-sse with a bad app or option value exits non-zero with one line."""
    proc = subprocess.run(
        ["twistd", "--pidfile=", "-n", "wsgi-sse", *flags],
        cwd=EXAMPLE,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    line = proc.stderr.strip()
    assert line.startswith("twistd: ") and message in line, proc.stderr
    assert line.count("\n") == 0, proc.stderr


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("json:dumps_nope", "has no attribute"),
        ("json:__doc__", "not callable"),
        (":app", "no module"),
    ],
)
def test_load_app_errors(spec: str, message: str) -> None:
    """load_app explains what is wrong with a module:attribute spec."""
    with pytest.raises(ValueError, match=message):
        load_app(spec)


def test_load_app_default_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without :attribute, a module's `application` is used, else its `app`."""
    (tmp_path / "with_application.py").write_text(
        "def application(e, s): pass\ndef app(e, s): pass\n"
    )
    (tmp_path / "with_app.py").write_text("def app(e, s): pass\n")
    (tmp_path / "dotted.py").write_text("class ns:\n    def wsgi(e, s): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_app("with_application").__name__ == "application"
    assert load_app("with_app").__name__ == "app"
    assert load_app("dotted:ns.wsgi").__name__ == "wsgi"
