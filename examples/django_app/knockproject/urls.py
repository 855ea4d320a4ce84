"""The knock example's URLs.  The event stream (``/sse``) is not here: it is
served by wsgi-sse beside Django, see ``WSGI_SSE`` in settings."""

from django.contrib import admin
from django.urls import include, path
from knocks import views

urlpatterns = [
    path("", views.index, name="index"),
    path("knock", views.knock, name="knock"),
    path("import", views.start_import, name="start-import"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
