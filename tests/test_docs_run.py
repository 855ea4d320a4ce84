"""
Every complete program in README.md and docs/ runs as the page says.

The marker: a fenced block with a C{title} attribute (rendered by the docs
site as the block's caption, ignored by GitHub).

  - C{```python title="app.py"} is a file the reader writes, in the folder the
    page's commands are in at that point of the page; C{title="add to
    mysite/settings.py"} appends the block to a file made earlier;
  - C{```sh title="Terminal"} holds commands the reader types, run in page
    order: C{mkdir}/C{cd} move into a fresh temporary folder, C{pip install}
    must name extras that exist and provide every module the files import,
    C{django-admin startproject} and
    C{python manage.py ...} run for real, C{twistd -ny server.py} (or
    C{python -m wsgi_sse}/C{wsgi-sse}) starts the server, listening on a
    loopback port through C{$WSGI_SSE_LISTEN} as the docs describe.

Then what the page claims is checked over real sockets: every
C{http://localhost:8005/...} address named beside the run step answers
(redirects followed), as do the links, stylesheets and scripts of the served
pages; and when the program has a page with an C{EventSource}, submitting
each form reaches every stream the served pages open, as the event type
those pages listen for.  A command the runner does not understand fails the
test: extend the runner with it.
"""

from __future__ import annotations

import ast
import contextlib
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import IO
from urllib.parse import urlencode, urlsplit

import pytest
from example_server import twistd
from support import ROOT, StreamClient, free_port, http_request, subprocess_env, wait_for_port

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w+-]*)([^\n]*)\n(.*?)^```[ \t]*$", re.M | re.S)
TITLE = re.compile(r'title="([^"]+)"')
FORM_TYPE = {"Content-Type": "application/x-www-form-urlencoded"}


@dataclass
class Block:
    """One fenced code block of a page, and the text of the section it is in."""

    language: str
    title: str | None
    text: str
    section: str = ""


def blocks(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, in order."""
    found = []
    markdown = page.read_text()
    for match in FENCE.finditer(markdown):
        language, info, text = match.groups()
        title = TITLE.search(info)
        start = max(markdown.rfind("\n#", 0, match.start()), 0)
        end = markdown.find("\n#", match.end())
        section = FENCE.sub("", markdown[start : end if end >= 0 else len(markdown)])
        found.append(Block(language, title.group(1) if title else None, text, section))
    return found


def runnable_pages() -> list[Path]:
    """The pages with at least one marked block."""
    return [page for page in PAGES if any(b.title for b in blocks(page))]


# -- following the page's steps ------------------------------------------------------


@dataclass
class Walkthrough:
    """A reader's session: a fresh folder, the files written, the server started."""

    home: Path
    cwd: Path
    server: list[str] | None = None
    server_cwd: Path | None = None
    server_section: str = ""
    files: list[Path] = field(default_factory=list)
    installed: set[str] = field(default_factory=set)


def _optional_dependencies() -> dict[str, set[str]]:
    """
    The extras pyproject.toml defines, each with the modules it installs
    (a distribution's name lower-cased; tomllib is not in Python 3.10).
    """
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = {}
    for name, body in re.findall(r"^([\w-]+) = \[(.*?)\]", section, re.M | re.S):
        distributions = re.findall(r'"([A-Za-z0-9_.-]+)', body)
        extras[name] = {d.lower().replace("-", "_") for d in distributions}
    return extras


# What `pip install wsgi-sse` brings without extras.
BASE_MODULES = {"wsgi_sse", "twisted", "crochet", "zope"}


def _pip_install(walk: Walkthrough, args: list[str]) -> None:
    extras = _optional_dependencies()
    assert args, "pip install with nothing to install"
    for requirement in args:
        match = re.fullmatch(r"wsgi-sse(?:\[([\w,-]+)\])?", requirement)
        assert match, f"the docs install {requirement!r}, not wsgi-sse"
        walk.installed |= BASE_MODULES
        for extra in filter(None, (match.group(1) or "").split(",")):
            assert extra in extras, f"pip install names {extra!r}; the extras: {sorted(extras)}"
            walk.installed |= extras[extra]


def _check_imports(walk: Walkthrough) -> None:
    """Every module the written files import comes from Python, the install step or the files."""
    local = {path.stem for path in walk.files} | {
        path.name for path in walk.home.rglob("*") if (path / "__init__.py").exists()
    }
    for path in walk.files:
        if path.suffix != ".py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                known = sys.stdlib_module_names | walk.installed | local
                assert top in known, f"{path.name} imports {top!r}, which no install step provides"


def _run(walk: Walkthrough, command: list[str]) -> None:
    """Run a setup command of the page for real, in the page's current folder."""
    proc = subprocess.run(
        command, cwd=walk.cwd, env=subprocess_env(), capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"{command} failed:\n{proc.stdout}{proc.stderr}"


def _command(walk: Walkthrough, words: list[str]) -> None:
    name, args = words[0], words[1:]
    if name == "mkdir":
        for folder in args:
            (walk.cwd / folder).mkdir(parents=True)
    elif name == "cd":
        target = (walk.cwd / args[0]).resolve()
        assert target.is_dir(), f"cd {args[0]}: the page never made that folder"
        walk.cwd = target
    elif words[:3] == ["python", "-m", "venv"] or name in {".", "source"}:
        pass  # the tests already run in an environment with wsgi-sse installed
    elif words[:2] == ["pip", "install"]:
        _pip_install(walk, args[1:])
    elif words[:2] == ["twistd", "-ny"] or words[:3] == ["python", "-m", "wsgi_sse"]:
        walk.server, walk.server_cwd = words, walk.cwd
    elif name == "wsgi-sse":
        walk.server, walk.server_cwd = words, walk.cwd
    elif name == "django-admin" and args[:1] == ["startproject"]:
        _run(walk, [sys.executable, "-m", "django", *args])
    elif words[:2] == ["python", "manage.py"]:
        _run(walk, [sys.executable, *args])
    else:
        raise AssertionError(f"the docs runner does not know the command {' '.join(words)!r}")


def follow(page: Path, home: Path) -> Walkthrough:
    """Write the page's files and run its commands up to the server start."""
    walk = Walkthrough(home=home, cwd=home)
    for block in blocks(page):
        if block.title is None:
            continue
        if block.title == "Terminal":
            for line in block.text.splitlines():
                line = line.split(" #", 1)[0].strip()
                if not line:
                    continue
                for command in line.split("&&"):
                    _command(walk, shlex.split(command))
                    if walk.server and not walk.server_section:
                        walk.server_section = block.section
        elif re.fullmatch(r"[\w./-]+\.\w+", block.title):
            path = walk.cwd / block.title
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.text)
            walk.files.append(path)
        elif block.title.startswith("add to "):
            path = walk.cwd / block.title.removeprefix("add to ")
            assert path.is_file(), f"{page.name}: {block.title!r}, but the page never made it"
            path.write_text(path.read_text() + "\n" + block.text)
            walk.files.append(path)
        else:
            raise AssertionError(f"{page.name}: unknown block title {block.title!r}")
    assert walk.files, f"{page.name}: marked commands but no marked files"
    assert walk.server, f"{page.name}: the page never starts what it writes"
    _check_imports(walk)
    return walk


def _read(log: IO[bytes]) -> bytes:
    log.seek(0)
    return log.read()


@contextlib.contextmanager
def started(walk: Walkthrough) -> Iterator[int]:
    """Start the page's server command with C{$WSGI_SSE_LISTEN} on a loopback port."""
    assert walk.server is not None and walk.server_cwd is not None
    command = list(walk.server)
    if command[0] == "twistd":
        command = [twistd(), *command[1:], "--pidfile="]
    elif command[0] == "python":
        command = [sys.executable, *command[1:]]
    else:
        command = [sys.executable, "-m", "wsgi_sse", *command[1:]]
    port = free_port()
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            command,
            cwd=walk.server_cwd,
            env=subprocess_env(WSGI_SSE_LISTEN=f"tcp:{port}:interface=127.0.0.1"),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            try:
                wait_for_port(port, proc, timeout=30)
            except AssertionError:
                log.seek(0)
                raise AssertionError(f"{command} did not start:\n{log.read().decode()}") from None
            # The startup log names the address to open.
            expected = f"open http://127.0.0.1:{port}/ ".encode()
            deadline = time.monotonic() + 10
            while expected not in _read(log) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert expected in _read(log), _read(log).decode()
            yield port
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


# -- what the pages claim -------------------------------------------------------------


@dataclass
class Form:
    action: str
    method: str
    fields: dict[str, str]


class PageParser(HTMLParser):
    """Links, forms and scripts of a served HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.assets: list[str] = []
        self.forms: list[Form] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "a" and "href" in values:
            self.links.append(values["href"])
        elif tag == "link" and "stylesheet" in values.get("rel", "") and "href" in values:
            self.assets.append(values["href"])
        elif tag == "script" and values.get("src"):
            self.assets.append(values["src"])
        elif tag == "form":
            method = values.get("method", "get").lower()
            self.forms.append(Form(values.get("action", ""), method, {}))
        elif tag in {"input", "textarea"} and self.forms and values.get("name"):
            kind = values.get("type", "text")
            if kind not in {"submit", "button"}:
                self.forms[-1].fields[values["name"]] = values.get("value") or "Ada"
        elif tag == "script":
            self._in_script = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def listeners(script: str) -> dict[str, set[str]]:
    """The stream URLs a page's script opens, each with the event types it listens for."""
    found: dict[str, set[str]] = {}
    for match in re.finditer(r"new EventSource\(\s*[\"']([^\"']+)[\"']\s*\)", script):
        after = script[match.end() :]
        types = set(re.findall(r"addEventListener\(\s*[\"']([\w-]+)[\"']", after))
        if re.search(r"\.onmessage\s*=", after):
            types.add("message")
        found.setdefault(match.group(1), set()).update(types)
    return found


def _get(port: int, path: str) -> tuple[str, dict[str, str], bytes]:
    """GET C{path}, following same-site redirects; fail on anything but a final 200."""
    for _ in range(5):
        status, headers, body = http_request(port, "GET", path)
        if status in {301, 302, 303, 307, 308}:
            location = urlsplit(headers["location"])
            path = location.path + (f"?{location.query}" if location.query else "")
            continue
        assert status == 200, f"GET {path}: {status}"
        return path, headers, body
    raise AssertionError(f"GET {path}: too many redirects")


def crawl(port: int, start: list[str]) -> tuple[list[Form], dict[str, set[str]]]:
    """GET every page reachable from C{start}, and its assets; fail on any that does not answer."""
    seen: set[str] = set()
    queue = list(start)
    forms: list[Form] = []
    streams: dict[str, set[str]] = {}
    while queue:
        path = queue.pop(0)
        if path in seen:
            continue
        seen.add(path)
        path, headers, body = _get(port, path)
        if not headers.get("content-type", "").startswith("text/html"):
            continue
        parser = PageParser()
        parser.feed(body.decode("utf-8"))
        forms += [form for form in parser.forms if form.method == "post"]
        for url, types in listeners("\n".join(parser.scripts)).items():
            streams.setdefault(url, set()).update(types)
        for asset in parser.assets:
            if asset.startswith("/") and not asset.startswith("//") and asset not in seen:
                seen.add(asset)
                _get(port, asset)
        queue += [link for link in parser.links if link.startswith("/") and link not in seen]
    return forms, streams


def check_claims(walk: Walkthrough, port: int) -> None:
    """
    The addresses named beside the run step answer, and each form's
    submission reaches every stream the pages open.
    """
    named = re.findall(r"<http://localhost:8005(/[^>]*)>", walk.server_section) or ["/"]
    forms, streams = crawl(port, named)
    if not any("EventSource" in path.read_text() for path in walk.files):
        return
    assert streams, "no served page opens an event stream"
    assert forms, "no served page has a form to act with"
    for form in forms:
        clients = []
        try:
            for url, types in streams.items():
                assert types, f"the page opens {url} but listens for no event"
                for _ in range(2):  # two open tabs
                    client = StreamClient(port, url)
                    assert client.status == 200, f"GET {url}: {client.status}"
                    client.wait_for(lambda c: c.parser.retry is not None)
                    clients.append((client, types))
            status, _, _ = http_request(
                port,
                "POST",
                form.action,
                body=urlencode(form.fields).encode(),
                headers=FORM_TYPE,
            )
            assert status < 400, f"POST {form.action}: {status}"
            for client, types in clients:
                client.wait_for(lambda c: any("Ada" in e.data for e in c.events))
                event = next(e for e in client.events if "Ada" in e.data)
                assert event.type in types, f"broadcast as {event.type!r}; the page hears {types}"
        finally:
            for client, _ in clients:
                client.close()


# -- the tests --------------------------------------------------------------------------


def test_marked_programs_are_found() -> None:
    """The runner finds the marked programs of the README, the tutorial and the Flask guide."""
    names = {page.relative_to(ROOT).as_posix() for page in runnable_pages()}
    assert {"README.md", "docs/tutorial.md", "docs/flask.md", "docs/django.md"} <= names


@pytest.mark.parametrize("page", runnable_pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_runs_as_written(page: Path, tmp_path: Path) -> None:
    """The page's files, written and started as its commands say, do what the page claims."""
    walk = follow(page, tmp_path)
    with started(walk) as port:
        check_claims(walk, port)


def test_runner_refuses_unknown_commands(tmp_path: Path) -> None:
    """A command the runner cannot follow fails instead of being skipped."""
    page = tmp_path / "page.md"
    page.write_text(
        '```python title="app.py"\napp = 1\n```\n\n```sh title="Terminal"\nmake run\n```\n'
    )
    with pytest.raises(AssertionError, match="does not know the command 'make run'"):
        follow(page, tmp_path)


MISMATCHED = """
```python title="app.py"
from bottle import Bottle
from wsgi_sse import broadcast

app = Bottle()

@app.get("/")
def page():
    return \'\'\'<!doctype html><form method="post" action="/knock"><input name="name"></form>
<script>new EventSource("/sse").onmessage = (e) => console.log(e.data);</script>\'\'\'

@app.post("/knock")
def knock():
    broadcast("Ada knocked", event="job")
    return "sent"
```

```python title="server.py"
import os, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from app import app
from wsgi_sse import make_application
application = make_application(app)
```

```sh title="Terminal"
pip install "wsgi-sse[bottle]"
twistd -ny server.py
```
"""


def test_runner_catches_a_page_deaf_to_the_broadcast(tmp_path: Path) -> None:
    """A page whose onmessage cannot hear the named event its view broadcasts fails the check."""
    page = tmp_path / "page.md"
    page.write_text(MISMATCHED)
    walk = follow(page, tmp_path)
    with started(walk) as port, pytest.raises(AssertionError, match="broadcast as 'job'"):
        check_claims(walk, port)


def test_runner_catches_a_missing_install(tmp_path: Path) -> None:
    """A program importing a framework its install step does not name fails the check."""
    page = tmp_path / "page.md"
    page.write_text(
        MISMATCHED.replace("from bottle import Bottle", "from flask import Flask as Bottle")
    )
    with pytest.raises(AssertionError, match="imports 'flask', which no install step provides"):
        follow(page, tmp_path)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_parse(page: Path) -> None:
    """Every Python block of the docs is valid Python, complete program or not."""
    for block in blocks(page):
        if block.language in {"python", "py"}:
            ast.parse(block.text)
