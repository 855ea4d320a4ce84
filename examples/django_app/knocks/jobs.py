"""
The background job of the example: a contact import that streams its
progress to the job's page and notifies its user when it is done.

It runs in a plain thread started by a view ("Start import"), or in a
process of its own: ``python manage.py import_contacts USERNAME``, the
stand-in for a task worker, which reaches the server's pages through Redis.

The job's page listens to the channel ``job-<id>`` through a view that holds
it (``knocks.views.job_events``); the job ends that stream with ``close()``.
"""

import threading
import time
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from wsgi_sse import broadcast, close
from wsgi_sse.contrib.django import broadcast_on_commit, user_channel

from .models import ContactImport

PRETEND_CONTACTS = 42
STEPS = 6


def job_channel(job_id: int) -> str:
    """The channel of one import's progress."""
    return f"job-{job_id}"


def start_import(job_id: int) -> threading.Thread:
    """Run the import of ContactImport C{job_id} in a new thread."""
    thread = threading.Thread(
        target=run_import, args=(job_id,), name=f"contact-import-{job_id}", daemon=True
    )
    thread.start()
    return thread


def run_import(job_id: int, *, broadcaster: Any = None) -> None:
    """
    Import (pretend), record the result, then tell the user's pages.

    C{broadcaster}: L{None} in the server process; a C{RedisPublisher} in
    another process.
    """
    channel = job_channel(job_id)
    send = broadcast if broadcaster is None else broadcaster.broadcast
    end = close if broadcaster is None else broadcaster.close_channel
    try:
        for step in range(1, STEPS + 1):
            time.sleep(settings.KNOCKS_IMPORT_SECONDS / STEPS)
            imported = PRETEND_CONTACTS * step // STEPS
            send(
                {"imported": imported, "total": PRETEND_CONTACTS}, event="progress", channel=channel
            )
        with transaction.atomic():
            job = ContactImport.objects.get(pk=job_id)
            job.contacts = PRETEND_CONTACTS
            job.finished = timezone.now()
            job.save(update_fields=["contacts", "finished"])
            # Sent only once the row is committed: a page that reacts by
            # reloading the list will find the finished import.
            broadcast_on_commit(
                {
                    "job": job.pk,
                    "contacts": job.contacts,
                    "message": f"Your import is done: {job.contacts} contacts",
                },
                event="import",
                channel=user_channel(job.user_id),
                broadcaster=broadcaster,
            )
            # The job's page: the last event, then the end of its stream.
            broadcast_on_commit(
                {"contacts": job.contacts},
                event="done",
                channel=channel,
                broadcaster=broadcaster,
            )
            transaction.on_commit(lambda: end(channel))
    finally:
        # This thread is outside Django's request cycle: close its
        # connection itself, as the end of a request would.
        connections.close_all()
