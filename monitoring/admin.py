from __future__ import annotations

from django.contrib import admin

from core.admin_base import ReadOnlyAdmin
from monitoring.models import Heartbeat
from signals_app.models import OutboxMessage


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    # A plain table; the monitor dashboard has its own URL (monitoring.views, /admin/monitor/).
    list_display = ["name", "last_seen_at", "worker"]
    readonly_fields = ["name", "last_seen_at", "worker"]


class AudienceFilter(admin.SimpleListFilter):
    title = "audience"
    parameter_name = "audience"

    def lookups(self, request, model_admin):
        return [("clients", "Clients"), ("owner", "Owner")]

    def queryset(self, request, queryset):
        if self.value() in ("clients", "owner"):
            return queryset.filter(client__isnull=self.value() == "owner")
        return queryset


@admin.register(OutboxMessage)
class OutboxMessageAdmin(ReadOnlyAdmin):
    """Every notification, as its recipient receives it, and what became of it. Written with
    its event (signals_app.notify), sent by monitoring.notifications; nothing is edited here."""

    list_display = [
        "created_at",
        "channel",
        "recipient",
        "client",
        "template",
        "status",
        "attempts",
        "next_attempt_at",
        "sent_at",
        "last_error",
    ]
    list_filter = ["status", "channel", "template", AudienceFilter]
    list_select_related = ["client"]
    search_fields = ["recipient", "dedupe_key"]
    fields = [
        "channel",
        "recipient",
        "client",
        "template",
        "subject",
        "body",
        "occurrences",
        "status",
        "attempts",
        "next_attempt_at",
        "last_error",
        "sent_at",
        "created_at",
        "dedupe_key",
    ]
    readonly_fields = fields
