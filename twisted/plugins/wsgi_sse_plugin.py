"""The ``twistd wsgi-sse`` plugin: ``twistd -n wsgi-sse --app module:app``."""

from twisted.application.service import ServiceMaker

wsgi_sse = ServiceMaker(
    "wsgi-sse",
    "wsgi_sse._cli",
    "Serve a WSGI application and a Server-Sent Events stream.",
    "wsgi-sse",
)
