"""
The pytest plugin of wsgi-sse: the C{broadcasts} fixture.

Installed with wsgi-sse (a C{pytest11} entry point), so any test can ask
for it::

    def test_knock(client, broadcasts):
        client.post("/knock", data={"name": "Ada"})
        broadcasts.assert_broadcast("Ada knocked")

See L{wsgi_sse.testing}.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import BroadcastRecorder

__all__ = ["broadcasts"]


@pytest.fixture
def broadcasts() -> Iterator[BroadcastRecorder]:
    """
    Record every broadcast the test makes instead of sending it (a
    L{BroadcastRecorder<wsgi_sse.testing.BroadcastRecorder>}); the previous
    broadcaster is restored after the test.
    """
    from .testing import capture_broadcasts

    with capture_broadcasts() as recorder:
        yield recorder
