"""The knock example's views: ordinary Django views that broadcast, and one
that holds an event stream (a job's progress)."""

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from wsgi_sse import DEFAULT_CHANNEL
from wsgi_sse.contrib.django import broadcast_on_commit, hold_stream, stream_url, user_channel

from . import jobs
from .models import ContactImport, Knock


def _wants_json(request: HttpRequest) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@require_GET
def index(request: HttpRequest) -> HttpResponse:
    """The page: the knock form, the live list, and the user's imports."""
    if request.user.is_authenticated:
        stream = stream_url(DEFAULT_CHANNEL, user_channel(request.user))
        imports = ContactImport.objects.filter(user=request.user)[:5]
    else:
        stream = stream_url(DEFAULT_CHANNEL)
        imports = ContactImport.objects.none()
    context = {
        "knocks": reversed(Knock.objects.all()[:20]),
        "imports": imports,
        "stream_url": stream,
    }
    return render(request, "knocks/index.html", context)


@require_POST
def knock(request: HttpRequest) -> HttpResponse:
    """Record a knock and tell every open page, once it is committed."""
    name = " ".join(request.POST.get("name", "").split())[:100] or "Someone"
    with transaction.atomic():
        Knock.objects.create(name=name)
        broadcast_on_commit(f"{name} knocked")
    if _wants_json(request):
        return JsonResponse({"knocked": name})
    return redirect("index")


@require_POST
@login_required
def start_import(request: HttpRequest) -> HttpResponse:
    """Start the user's contact import; its end is pushed to the user only."""
    job = ContactImport.objects.create(user=request.user)
    # Start the thread after the commit, so that it finds the row.
    transaction.on_commit(lambda: jobs.start_import(job.pk))
    if _wants_json(request):
        return JsonResponse({"job": job.pk, "page": reverse("job", args=[job.pk])}, status=202)
    return redirect("job", job.pk)


@require_GET
@login_required
def job(request: HttpRequest, pk: int) -> HttpResponse:
    """A job's page: its progress, live while it runs."""
    job = get_object_or_404(ContactImport, pk=pk, user=request.user)
    return render(request, "knocks/job.html", {"job": job, "total": jobs.PRETEND_CONTACTS})


@require_GET
@login_required
def job_events(request: HttpRequest, pk: int) -> HttpResponse:
    """
    The job's progress as an event stream, for its owner only.

    The view authorizes like any other (a browser that reconnects calls it
    again), then holds the job's channel: the server keeps the response
    open and this thread is free.  A finished job answers 204, which tells
    the page's EventSource to stop reconnecting.
    """
    job = get_object_or_404(ContactImport, pk=pk, user=request.user)
    if job.finished:
        return HttpResponse(status=204)
    return hold_stream(jobs.job_channel(job.pk), initial={"total": jobs.PRETEND_CONTACTS})
