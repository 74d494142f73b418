from __future__ import annotations

from django.contrib import admin
from django.utils.text import Truncator
from unfold.decorators import display

from core.admin_base import ReadOnlyAdmin
from core.badges import badge
from monitoring.models import Heartbeat
from signals_app.admin_badges import OUTBOX_COLOURS, OUTBOX_WORDS, TEMPLATE_WORDS
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

    # Fits 1366 px: the message's kind and status as badges, the error's start; the whole
    # message, its client and its schedule on its page.
    list_display = ["created_at", "channel", "recipient", "kind", "state", "attempts", "sent_at", "error"]
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

    @display(description="message", ordering="template", label=True)
    def kind(self, message: OutboxMessage) -> str:
        return TEMPLATE_WORDS.get(message.template, message.template)

    @display(description="status", ordering="status", label=OUTBOX_COLOURS)
    def state(self, message: OutboxMessage) -> tuple[str, str]:
        return badge(message.status, OUTBOX_WORDS)

    @admin.display(description="last error")
    def error(self, message: OutboxMessage) -> str:
        return Truncator(message.last_error).chars(60) if message.last_error else "—"
