"""The views of the test project (server.py): commit or roll back a broadcast."""

from django.db import transaction
from django.http import HttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from wsgi_sse.contrib.django import broadcast_on_commit


class Rollback(Exception):
    """Raised to roll the transaction back."""


@csrf_exempt
def commit(request):
    with transaction.atomic():
        broadcast_on_commit("committed", channel="jobs")
    return HttpResponse("ok")


@csrf_exempt
def rollback(request):
    try:
        with transaction.atomic():
            broadcast_on_commit("rolled-back", channel="jobs")
            raise Rollback
    except Rollback:
        pass
    return HttpResponse("ok")


urlpatterns = [path("commit", commit), path("rollback", rollback)]
