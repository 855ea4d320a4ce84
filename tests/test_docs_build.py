"""The docs site builds, and its API reference shows no raw epytext markup."""

from __future__ import annotations

import html
import importlib.util
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from support import ROOT

RAW_MARKUP = re.compile(
    r"\b[CLIBU]\{[^{}]*\}|(?<![\w@])@(?:param|ivar|cvar|raise|raises|return|returns|type|rtype|keyword)\b"
)


def _converter() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "griffe_epytext", ROOT / "scripts" / "griffe_epytext.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _visible_text(page: str) -> str:
    """The page's text outside code listings (where examples may show anything)."""
    page = re.sub(r"<pre\b.*?</pre>", " ", page, flags=re.S)
    page = re.sub(r"<script\b.*?</script>", " ", page, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs site, built with warnings as errors, as CI builds it."""
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    return out


def test_api_reference_has_no_raw_markup(site: Path) -> None:
    """No C{...}, L{...} or @param/@ivar/@raise reaches a page of the built site."""
    pages = sorted(site.rglob("*.html"))
    assert site / "api" / "index.html" in pages
    found = {
        page.relative_to(site).as_posix(): sorted(
            set(RAW_MARKUP.findall(_visible_text(page.read_text())))
        )
        for page in pages
    }
    assert not {name: hits for name, hits in found.items() if hits}


def test_api_reference_renders_fields_as_sections(site: Path) -> None:
    """Parameters, attributes and exceptions are tables, not one run-on paragraph."""
    text = " ".join(_visible_text((site / "api" / "index.html").read_text()).split())
    assert "Parameters: Name Type Description Default wsgi_app" in text
    assert "Attributes: Name Type Description heartbeat float" in text
    assert "Raises: Type Description TypeError" in text


@pytest.mark.parametrize(
    ("epytext", "google"),
    [
        ("Use C{x}.", "Use `x`."),
        ("C{{a: b}} and C{f(x)}", "`{a: b}` and `f(x)`"),
        ("See L{Hub} and L{the app<wsgi_sse.make_application>}.", "See `Hub` and `the app`."),
        ("I{local-only} and B{never}", "*local-only* and **never**"),
        ("C{`x`}", "`` `x` ``"),
        (
            "Do it.\n\n@param name: the name,\n    on two lines.\n@type name: str\n"
            "@raise ValueError: if bad.\nMay be called in any thread.",
            "Do it.\n\nMay be called in any thread.\n\nArgs:\n    name: the name, on two lines."
            "\n\nRaises:\n    ValueError: if bad.",
        ),
        ("Count.\n\n@return: how many C{x}.", "Count.\n\nReturns:\n    how many `x`."),
        ("@ivar hub: the L{Hub}.", "Attributes:\n    hub: the `Hub`."),
    ],
)
def test_epytext_conversion(epytext: str, google: str) -> None:
    """The docs build turns epytext markup and fields into Markdown and Google sections."""
    assert _converter().epytext_to_google(epytext) == google
