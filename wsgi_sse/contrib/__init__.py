"""
Integrations with web frameworks.  Each module imports its framework lazily
and only when it is imported itself: C{import wsgi_sse} never imports one.

  - L{wsgi_sse.contrib.django}: Django (C{pip install wsgi-sse[django]}).
  - L{wsgi_sse.contrib.flask}: Flask (C{hold_stream} for views).
  - L{wsgi_sse.contrib.bottle}: Bottle (C{hold_stream} for routes).
"""
