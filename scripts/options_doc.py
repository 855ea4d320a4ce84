"""Regenerate the option tables of docs/options.md from wsgi_sse._config.SETTINGS."""

from pathlib import Path

from wsgi_sse._config import render_options_doc

path = Path(__file__).resolve().parent.parent / "docs" / "options.md"
path.write_text(render_options_doc(path.read_text()))
