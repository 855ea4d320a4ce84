"""What the example stores: knocks, and each user's contact imports."""

from django.conf import settings
from django.db import models


class Knock(models.Model):
    """Someone knocked."""

    name = models.CharField(max_length=100)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created", "-id"]

    def __str__(self) -> str:
        return f"{self.name} knocked"


class ContactImport(models.Model):
    """A (pretend) import of a user's contacts, run by a background thread."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE)
    started = models.DateTimeField(auto_now_add=True)
    finished = models.DateTimeField(null=True, blank=True)
    contacts = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-started", "-id"]

    def __str__(self) -> str:
        state = "done" if self.finished else "running"
        return f"import #{self.pk} of {self.user} ({state})"
