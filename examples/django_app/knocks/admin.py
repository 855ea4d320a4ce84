from django.contrib import admin

from .models import ContactImport, Knock


@admin.register(Knock)
class KnockAdmin(admin.ModelAdmin):
    list_display = ("name", "created")


@admin.register(ContactImport)
class ContactImportAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "started", "finished", "contacts")
