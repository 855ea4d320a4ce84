"""
The publish endpoint's nesting check against a plain reference: on any
text, the depth of arrays and objects outside strings is what a scan
character by character finds, for valid JSON and for text that is not
(unclosed strings, stray escapes, unbalanced brackets).
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from wsgi_sse._publish import _json_depth

settings.register_profile(
    "json-depth", max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def reference_depth(text: str) -> int:
    """The deepest nesting of brackets outside strings, one character at a time."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


pieces = st.lists(
    st.sampled_from(['"', "\\", "\\\\", '\\"', "[", "]", "{", "}", "a", ":", ",", " ", "\n"])
).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(settings.get_profile("json-depth"))
@given(pieces)
@example('{"data":"' + '\\"' * 100)
@example('[[["abc\\')
@example('"[[["]]]')
@example('"\\\n[')
def test_depth_is_the_reference_depth_on_any_text(text: str) -> None:
    """Strings closed or not, escapes anywhere: the same depth as the reference scan."""
    assert _json_depth(text) == reference_depth(text)


@settings(settings.get_profile("json-depth"))
@given(json_values)
def test_depth_of_json_is_its_nesting(value: object) -> None:
    """For JSON text, the depth is how deeply its arrays and objects nest."""

    def nesting(v: object) -> int:
        if isinstance(v, list):
            return 1 + max(map(nesting, v), default=0)
        if isinstance(v, dict):
            return 1 + max(map(nesting, v.values()), default=0)
        return 0

    assert _json_depth(json.dumps(value)) == nesting(value)
