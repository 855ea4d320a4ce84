"""``python manage.py create_demo_users``: the example's two demo accounts."""

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

DEMO_USERS = (
    # username, password, superuser (may use /admin/)
    ("ada", "ada-knocks", True),
    ("grace", "grace-knocks", False),
)


class Command(BaseCommand):
    help = "Create the demo users ada / ada-knocks (admin) and grace / grace-knocks."

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()  # noqa: N806
        for username, password, is_admin in DEMO_USERS:
            if User.objects.filter(username=username).exists():
                continue
            if is_admin:
                User.objects.create_superuser(username, f"{username}@example.com", password)
            else:
                User.objects.create_user(username, f"{username}@example.com", password)
            self.stdout.write(f"created demo user {username} (password {password})")
