from django.apps import AppConfig


class KnocksConfig(AppConfig):
    """Knocks on the door, and pretend contact imports."""

    default_auto_field = "django.db.models.BigAutoField"
    name = "knocks"
