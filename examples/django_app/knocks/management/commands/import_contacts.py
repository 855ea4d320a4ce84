"""
``python manage.py import_contacts USERNAME``: run a contact import in this
process, as a task worker would, and tell the user's open pages when it is
done.  The event travels through Redis: start the server and this command
with the same ``WSGI_SSE_BACKPLANE_URL``.
"""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from knocks import jobs
from knocks.models import ContactImport


class Command(BaseCommand):
    help = (
        "Import USERNAME's contacts in this process and notify that user's pages through "
        "Redis (set WSGI_SSE_BACKPLANE_URL here and for the server)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            from wsgi_sse.redis import RedisPublisher

            publisher = RedisPublisher()  # reads WSGI_SSE_BACKPLANE_URL, as the server does
        except (ImportError, ValueError) as e:
            raise CommandError(
                f"{e}. This command reaches the server through Redis: pip install "
                "'wsgi-sse[redis]' and set WSGI_SSE_BACKPLANE_URL for it and for the server."
            ) from None
        user_model = get_user_model()
        try:
            user = user_model.objects.get(username=options["username"])
        except user_model.DoesNotExist:
            raise CommandError(f"no user {options['username']!r}") from None
        job = ContactImport.objects.create(user=user)
        try:
            jobs.run_import(job.pk, broadcaster=publisher)
        finally:
            publisher.close()
        job.refresh_from_db()
        self.stdout.write(f"import #{job.pk} done: {job.contacts} contacts")
