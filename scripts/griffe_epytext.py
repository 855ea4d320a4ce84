"""
Render wsgi-sse's epytext docstrings in the API reference.

The docstrings are written in epytext, Twisted's style (C{code}, L{links},
C{@param}, C{@ivar}, C{@raise}, C{@return}).  mkdocstrings does not read
epytext, so this Griffe extension (named in mkdocs.yml) turns each docstring
into the Google style it does read while the docs are built; the source stays
epytext.  The conversion is also a plain function, L{epytext_to_google}.
"""

from __future__ import annotations

import re
from typing import Any

try:
    import griffe
except ImportError:  # the converter works without griffe (the tests use it alone)
    griffe = None  # type: ignore[assignment]

__all__ = ["EpytextExtension", "epytext_to_google"]

_INLINE_START = re.compile(r"([CLIBUM])\{")
_FIELD = re.compile(r"@(\w+)(?:\s+([^:]+?))?\s*:\s?(.*)$")
_SECTIONS = {
    "param": "Args",
    "keyword": "Args",
    "ivar": "Attributes",
    "cvar": "Attributes",
    "var": "Attributes",
    "raise": "Raises",
    "raises": "Raises",
    "return": "Returns",
    "returns": "Returns",
    "note": "Note",
    "see": "See Also",
}
_DROPPED = {"type", "rtype", "since"}


def _code(text: str) -> str:
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _inline(text: str) -> str:
    """Turn C{}, L{}, I{}, B{}, U{}, M{} markup into Markdown, nested braces included."""
    out: list[str] = []
    position = 0
    while True:
        match = _INLINE_START.search(text, position)
        if match is None:
            out.append(text[position:])
            return "".join(out)
        out.append(text[position : match.start()])
        depth, end = 1, match.end()
        while end < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[end], 0)
            end += 1
        if depth:  # unbalanced: leave the rest as it is
            out.append(text[match.start() :])
            return "".join(out)
        kind, body = match.group(1), text[match.end() : end - 1]
        if kind in "CM":
            out.append(_code(body))
        elif kind == "L":
            label = re.sub(r"<[^<>]*>$", "", body).strip()
            out.append(_code(label or body))
        elif kind == "I":
            out.append(f"*{_inline(body)}*")
        elif kind == "B":
            out.append(f"**{_inline(body)}**")
        else:  # U{url}
            out.append(f"<{body}>")
        position = end


def epytext_to_google(docstring: str) -> str:
    """
    Convert a (dedented) epytext docstring to the Google style: inline markup
    to Markdown, C{@param}/C{@ivar}/C{@raise}/C{@return} fields to sections
    placed after the prose.
    """
    prose: list[str] = []
    sections: dict[str, list[tuple[str | None, list[str]]]] = {}
    current: list[str] | None = None
    for line in docstring.splitlines():
        stripped = line.strip()
        field = _FIELD.match(line) if line.startswith("@") else None
        if field:
            tag, argument, text = field.groups()
            if tag in _DROPPED:
                current = []  # swallow its continuation lines
                continue
            section = _SECTIONS.get(tag)
            if section is None:
                prose.append(line)
                current = None
                continue
            current = [text.strip()]
            sections.setdefault(section, []).append((argument, current))
        elif current is not None and stripped and line[:1].isspace():
            current.append(stripped)
        else:
            current = None
            prose.append(line)
    while prose and not prose[-1].strip():
        prose.pop()
    lines = [_inline(line) for line in prose]
    for section, items in sections.items():
        if lines:
            lines.append("")
        lines.append(f"{section}:")
        for argument, text in items:
            body = _inline(" ".join(t for t in text if t))
            if section == "Returns" or argument is None:
                lines.append(f"    {body}")
            else:
                lines.append(f"    {argument.strip()}: {body}")
    return "\n".join(lines)


def _convert(obj: Any, seen: set[int]) -> None:
    if id(obj) in seen or getattr(obj, "is_alias", False):
        return
    seen.add(id(obj))
    docstring = getattr(obj, "docstring", None)
    if docstring is not None:
        docstring.value = epytext_to_google(docstring.value)
    for member in getattr(obj, "members", {}).values():
        _convert(member, seen)


if griffe is not None:

    class EpytextExtension(griffe.Extension):
        """Convert every docstring of a loaded package from epytext to the Google style."""

        def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
            """Convert the whole package once it is loaded."""
            _convert(pkg, set())
