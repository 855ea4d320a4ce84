"""
Scale out over Redis: share broadcasts between processes and hosts.

Needs the ``redis`` extra (``pip install wsgi-sse[redis]``).  Servers turn
it on with ``make_application(app, backplane_url="redis://...")`` or the
``WSGI_SSE_BACKPLANE_URL`` environment variable (``redis_url`` and
``WSGI_SSE_REDIS_URL`` work too); programs that are not web
servers publish with L{RedisPublisher}, which reads the same variables in
the same order when given no URL::

    from wsgi_sse.redis import RedisPublisher

    RedisPublisher("redis://localhost:6379/0").broadcast("report ready", channel="jobs")
"""

from ._redis import (
    BACKPLANE_URL_ENV,
    REDIS_URL_ENV,
    RedisBackplane,
    RedisPublisher,
    resolve_redis_url,
    stream_key,
)

__all__ = (
    "BACKPLANE_URL_ENV",
    "REDIS_URL_ENV",
    "RedisBackplane",
    "RedisPublisher",
    "resolve_redis_url",
    "stream_key",
)
