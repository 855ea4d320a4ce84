"""Regenerate the option tables of docs/options.md and docs/django.md from wsgi_sse._config."""

from pathlib import Path

from wsgi_sse._config import render_options_doc

docs = Path(__file__).resolve().parent.parent / "docs"
for name in ("options.md", "django.md"):
    path = docs / name
    path.write_text(render_options_doc(path.read_text()))
