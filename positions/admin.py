from __future__ import annotations

from django.contrib import admin

from positions.models import CloseCommand, OpenPosition


class ReadOnlyAdmin(admin.ModelAdmin):
    """State changes go through services (close, ack), never through a form."""

    show_full_result_count = False

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(OpenPosition)
class OpenPositionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "client",
        "instrument",
        "side",
        "entry_price",
        "remaining_volume",
        "broker_ticket",
        "status",
        "opened_at",
        "close_price",
        "realized_pnl",
    ]
    list_filter = ["status", "instrument", "side"]
    list_select_related = ["client", "instrument"]
    raw_id_fields = ["signal", "approval", "client", "device"]
    search_fields = ["=id", "=broker_ticket", "client__name", "=signal__id"]
    date_hierarchy = "opened_at"


@admin.register(CloseCommand)
class CloseCommandAdmin(ReadOnlyAdmin):
    list_display = ["id", "position", "device", "reason", "status", "attempts", "created_at", "completed_at"]
    list_filter = ["status", "reason"]
    list_select_related = ["position", "device"]
    raw_id_fields = ["position", "device"]
    search_fields = ["=id", "=position__id"]
    date_hierarchy = "created_at"
