from __future__ import annotations

from django.contrib import admin

from core.admin_base import ReadOnlyAdmin
from monitoring.models import Heartbeat


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    # A plain table; the monitor dashboard has its own URL (monitoring.views, /admin/monitor/).
    list_display = ["name", "last_seen_at", "worker"]
    readonly_fields = ["name", "last_seen_at", "worker"]
