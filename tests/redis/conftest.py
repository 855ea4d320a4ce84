"""Fixtures of the Redis suite (defined in redis_support.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from redis_support import bottle_pair, redis_server, shared_redis

__all__ = ["bottle_pair", "redis_server", "shared_redis"]
