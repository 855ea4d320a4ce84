"""Shared fixtures: see support.py for the helpers themselves."""

from __future__ import annotations

import sys
from pathlib import Path

# Make `import support` work from any test module.
sys.path.insert(0, str(Path(__file__).parent))
