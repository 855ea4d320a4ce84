"""
Serve the Django knock project and its event stream with Twisted.

    cd examples/django_app && twistd -ny server.py

Listens on $WSGI_SSE_LISTEN, else tcp:8005.  On every start it brings the
SQLite database up to date, collects the static files and creates the demo
users (each step does nothing when there is nothing to do).
"""

import os
import sys

# twistd does not put the .tac file's directory on sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "knockproject.settings")

import django
from django.conf import settings
from django.core.management import call_command
from django.db import connections

from wsgi_sse.contrib.django import make_application

django.setup()
call_command("migrate", interactive=False, verbosity=0)
call_command("collectstatic", interactive=False, verbosity=0)
if settings.KNOCKS_DEMO_USERS:
    call_command("create_demo_users", verbosity=0)
# Serve with fresh connections, one per WSGI thread.
connections.close_all()

application = make_application()
