"""Shared fixtures: see support.py for the helpers themselves."""

from __future__ import annotations

import sys
from pathlib import Path

# Make `import support` work from any test module.
sys.path.insert(0, str(Path(__file__).parent))


def pytest_unconfigure(config: object) -> None:
    """
    Close the spare descriptor Twisted keeps open on /dev/null (to recover
    from EMFILE in accept()), so interpreter exit does not report it as an
    unclosed file after the tests that started a server.
    """
    tcp = sys.modules.get("twisted.internet.tcp")
    reserved = getattr(getattr(tcp, "_reservedFD", None), "_fileDescriptor", None)
    if reserved is not None:
        reserved.close()
