"""The shipped deployment: the systemd unit starts two processes, nginx balances them."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from redis_support import BOTTLE_DIR, TWISTD, RedisServer, ServerProcess, processes
from support import ROOT, StreamClient, free_port, http_request, wait_for_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_CONF = ROOT / "deploy" / "nginx" / "wsgi-sse.conf"
UNIT = ROOT / "deploy" / "systemd" / "wsgi-sse@.service"


def unit_service(instance: str) -> dict[str, str]:
    """The [Service] section of the unit template, with %i replaced."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return {k: v.replace("%i", instance) for k, v in parser["Service"].items()}


def unit_process(tmp: Path, port: int, redis_url: str) -> ServerProcess:
    """A process started as the unit's ExecStart starts it (from the example's directory)."""
    service = unit_service(str(port))
    argv = shlex.split(service["ExecStart"])
    assert argv[0].endswith("/twistd") and TWISTD is not None
    argv[0] = TWISTD
    name, _, value = service["Environment"].partition("=")
    server = ServerProcess(argv, BOTTLE_DIR, tmp / f"{port}.log", WSGI_SSE_REDIS_URL=redis_url)
    server.port = port
    server.env[name] = value
    return server


def nginx_config(tmp: Path, listen: int, upstreams: tuple[int, int]) -> Path:
    """A main nginx.conf around the shipped include, on test ports and paths."""
    site = NGINX_CONF.read_text()
    assert "server 127.0.0.1:8001;" in site and "server 127.0.0.1:8002;" in site
    site = site.replace("127.0.0.1:8001", f"127.0.0.1:{upstreams[0]}")
    site = site.replace("127.0.0.1:8002", f"127.0.0.1:{upstreams[1]}")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{listen};")
    assert "/var/log/nginx/access.log" in site
    site = site.replace("/var/log/nginx/access.log", f"{tmp}/access.log")
    (tmp / "wsgi-sse.conf").write_text(site)
    temp = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = f"""
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {tmp}/access.log;
{temp}
    # Tests only: which process answered.
    add_header X-Upstream $upstream_addr always;
    include {tmp}/wsgi-sse.conf;
}}
"""
    conf = tmp / "nginx.conf"
    conf.write_text(main)
    return conf


def test_unit_template_runs_twistd_on_its_instance_port() -> None:
    """The unit's instance name is the port, and twistd runs in the foreground without pidfile."""
    service = unit_service("8001")
    assert service["Environment"] == "WSGI_SSE_LISTEN=tcp:8001:interface=127.0.0.1"
    assert "--nodaemon" in service["ExecStart"] and "--pidfile=" in service["ExecStart"]


def test_unit_verifies_with_systemd(tmp_path: Path) -> None:
    """systemd-analyze verify finds nothing wrong with an instance of the template."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    assert TWISTD is not None
    text = UNIT.read_text().replace("/srv/app/venv/bin/twistd", TWISTD)
    text = text.replace("/srv/app", str(BOTTLE_DIR))
    unit = tmp_path / "wsgi-sse@8001.service"
    unit.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in done.stderr.splitlines() if "wsgi-sse@" in line]
    assert problems == [], done.stderr


def test_nginx_balances_two_processes(redis_server: RedisServer, tmp_path: Path) -> None:
    """Through the shipped nginx config: streams spread over both processes, knocks reach all."""
    a = unit_process(tmp_path, free_port(), redis_server.url)
    b = unit_process(tmp_path, free_port(), redis_server.url)
    port = free_port()
    conf = nginx_config(tmp_path, port, (a.port, b.port))
    subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    with processes(a, b):
        nginx = subprocess.Popen(
            [NGINX, "-p", str(tmp_path), "-e", str(tmp_path / "error.log"), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, None)
            knock = {"Content-Type": "application/x-www-form-urlencoded"}
            with StreamClient(port) as s1, StreamClient(port) as s2:
                assert s1.status == s2.status == 200
                assert s1.headers["content-type"] == "text/event-stream; charset=utf-8"
                # least_conn: the second stream goes to the other process.
                assert {s1.headers["x-upstream"], s2.headers["x-upstream"]} == {
                    f"127.0.0.1:{a.port}",
                    f"127.0.0.1:{b.port}",
                }
                for s in (s1, s2):
                    s.wait_for(lambda c: c.parser.retry is not None)
                status, _, _ = http_request(port, "POST", "/knock", body=b"name=Ann", headers=knock)
                assert status == 200
                (e1,) = s1.wait_events(1)
                (e2,) = s2.wait_events(1)
                assert (e1.data, e1.last_event_id) == (e2.data, e2.last_event_id)
                assert e1.data == "Ann knocked"
                left = s1.headers["x-upstream"]
                s1.close()
                # Two knocks while s1 is away (each seen by s2 before the
                # next: they may be answered by different processes).
                for n, name in enumerate(("Ben", "Cat"), 2):
                    body = f"name={name}".encode()
                    http_request(port, "POST", "/knock", body=body, headers=knock)
                    s2.wait_events(n)
            with StreamClient(port, headers={"Last-Event-ID": e1.last_event_id}) as back:
                assert back.status == 200
                events = back.wait_events(2)
                assert [e.data for e in events] == ["Ben knocked", "Cat knocked"]
                assert left  # whichever process it lands on now, the replay is exact
            status, _, body = http_request(port, "GET", "/")
            assert status == 200 and b"knocking" in body
            # A stream URL's query (a stream token) stays out of nginx's log.
            status, _, _ = http_request(port, "HEAD", "/sse?token=not-for-logs&channel=default")
            assert status == 200
            access = (tmp_path / "access.log").read_text()
            assert '"HEAD /sse HTTP/1.0" 200' in access
            assert "not-for-logs" not in access
        finally:
            nginx.terminate()
            nginx.wait(10)
