"""
A one-module Django site whose views use django-grip exactly as its README
shows (GripMiddleware, set_hold_stream), served by wsgi-sse in a child
process: ``python -m wsgi_sse gripsite:application``.
"""

from __future__ import annotations

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="grip-test",
    ALLOWED_HOSTS=["127.0.0.1"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=["django_grip.GripMiddleware"],
    INSTALLED_APPS=[],
    DATABASES={},
)

from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402
from django_grip import set_hold_stream  # noqa: E402

from wsgi_sse import broadcast, close  # noqa: E402


def events(request: HttpRequest, room: str) -> HttpResponse:
    """Hold the room's channel, the django-grip way."""
    set_hold_stream(request, room)
    return HttpResponse("event: hello\ndata: welcome\n\n", content_type="text/event-stream")


def say(request: HttpRequest, room: str, text: str) -> HttpResponse:
    """Broadcast to a room."""
    broadcast(text, channel=room)
    return HttpResponse("ok")


def end(request: HttpRequest, room: str) -> HttpResponse:
    """Close a room's streams."""
    close(room)
    return HttpResponse("closed")


urlpatterns = [
    path("events/<slug:room>", events),
    path("say/<slug:room>/<str:text>", say),
    path("end/<slug:room>", end),
]

application = get_wsgi_application()
