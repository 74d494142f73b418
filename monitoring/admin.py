from __future__ import annotations

from django.contrib import admin

from monitoring.models import Heartbeat


@admin.register(Heartbeat)
class HeartbeatAdmin(admin.ModelAdmin):
    list_display = ["name", "last_seen_at", "worker"]
    readonly_fields = ["name", "last_seen_at", "worker"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
