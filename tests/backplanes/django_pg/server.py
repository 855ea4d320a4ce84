"""
A one-file Django project on PostgreSQL whose backplane is its own database
(settings.WSGI_SSE["BACKPLANE_DATABASE"] = "default"), run with
``twistd -ny server.py``; the database URL comes from $TEST_DATABASE_URL.

POST /commit and POST /rollback broadcast with broadcast_on_commit() inside
a transaction that commits or rolls back.
"""

import os
import sys
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import django
from django.conf import settings

url = urlsplit(os.environ["TEST_DATABASE_URL"])
settings.configure(
    DEBUG=False,
    DEBUG_PROPAGATE_EXCEPTIONS=True,
    SECRET_KEY="test-only-" + "x" * 40,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF="pg_urls",
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": url.path.lstrip("/"),
            "USER": url.username,
            "HOST": url.hostname,
            "PORT": str(url.port),
        }
    },
    WSGI_SSE={"BACKPLANE_DATABASE": "default"},
    INSTALLED_APPS=[],
    MIDDLEWARE=[],
)
django.setup()

from wsgi_sse.contrib.django import make_application  # noqa: E402

application = make_application()
