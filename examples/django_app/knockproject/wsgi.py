"""
The project's WSGI application, for any WSGI server.

``server.py`` serves it with wsgi-sse (``twistd -ny server.py``); the event
stream and ``broadcast()`` need that server.
"""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "knockproject.settings")

application = get_wsgi_application()
