"""
Integrations with web frameworks.  Each module imports its framework lazily
and only when it is imported itself: C{import wsgi_sse} never imports one.

  - L{wsgi_sse.contrib.django}: Django (C{pip install wsgi-sse[django]}).
"""
