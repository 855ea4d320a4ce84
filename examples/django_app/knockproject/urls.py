"""The knock example's URLs.  The public event stream (``/sse``) is not here:
it is served by wsgi-sse beside Django, see ``WSGI_SSE`` in settings.  A
job's stream is: ``jobs/<pk>/events`` is a view that holds it."""

from django.contrib import admin
from django.urls import include, path
from knocks import views

urlpatterns = [
    path("", views.index, name="index"),
    path("knock", views.knock, name="knock"),
    path("import", views.start_import, name="start-import"),
    path("jobs/<int:pk>/", views.job, name="job"),
    path("jobs/<int:pk>/events", views.job_events, name="job-events"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]
