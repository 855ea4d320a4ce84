"""
Settings of the knock example: a stock Django project plus ``WSGI_SSE``.

Environment variables (all optional):

- ``KNOCKS_DATA_DIR``: where ``db.sqlite3`` and the collected static files
  go (default: this directory).
- ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG=1``, ``DJANGO_ALLOWED_HOSTS``
  (comma-separated, added to 127.0.0.1 and localhost).
- ``KNOCKS_IMPORT_SECONDS``: how long the pretend contact import takes.
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("KNOCKS_DATA_DIR") or BASE_DIR)

# An example only: set DJANGO_SECRET_KEY to a long random value anywhere else.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "django-insecure-knock-example-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"

ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"] + [
    host.strip() for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "knocks",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "knockproject.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "knockproject.wsgi.application"

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATA_DIR / "db.sqlite3",
        # The WSGI threads, the stream's authorize hook and the import thread
        # each have their own connection; wait for SQLite's write lock
        # rather than failing at once.
        "OPTIONS": {"timeout": 20},
        # 0 (the default): close each connection at the end of its request.
        "CONN_MAX_AGE": 0,
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# Collected by server.py on start and served by Twisted (see WSGI_SSE below).
STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "staticfiles"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

# wsgi-sse: read by wsgi_sse.contrib.django.make_application() in server.py.
WSGI_SSE = {
    "SSE_PATH": "/sse",
    # Everyone may join "default" and "presence"; "user-<id>" only that
    # user's own pages (see knocks/sse.py).
    "AUTHORIZE": "knocks.sse.authorize",
    # A new page's first event: the recent knocks (see knocks/sse.py).
    "INITIAL": "knocks.sse.initial",
    # Who has the page open, pushed to every page (see knocks/sse.py).
    "ON_PRESENCE": "knocks.sse.on_presence",
    "HEARTBEAT": 15,
    "THREADS": 10,
    # STATIC_ROOT is served at STATIC_URL by Twisted, not by a WSGI thread.
    "SERVE_STATIC": True,
}

# The example's own settings.
KNOCKS_IMPORT_SECONDS = float(os.environ.get("KNOCKS_IMPORT_SECONDS", "3"))
KNOCKS_DEMO_USERS = True
