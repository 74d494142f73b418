from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import admin
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.views.decorators.http import require_safe
from redis.exceptions import RedisError

from core.admin_base import ReadOnlyAdmin
from monitoring import dashboard
from monitoring.models import Heartbeat
from monitoring.selectors import monitor_status

logger = logging.getLogger(__name__)


@admin.register(Heartbeat)
class HeartbeatAdmin(ReadOnlyAdmin):
    list_display = ["name", "last_seen_at", "worker"]
    readonly_fields = ["name", "last_seen_at", "worker"]

    def get_urls(self):
        # The dashboard hangs off the monitoring app's admin so it gets admin_view's
        # staff check, CSRF and never-cache like every other console page.
        urls = [
            path(
                "dashboard/",
                self.admin_site.admin_view(require_safe(self.dashboard_view)),
                name="monitoring_dashboard",
            ),
        ]
        return urls + super().get_urls()

    def dashboard_view(self, request) -> TemplateResponse:
        """The monitor at a glance; read-only, refreshes itself. Staff only (admin_view)."""
        now = timezone.now()
        context = {
            **self.admin_site.each_context(request),
            "title": "Monitor dashboard",
            "opts": self.opts,
            "refresh_seconds": dashboard.REFRESH_SECONDS,
            "generated_at": now,
            "interval_seconds": settings.POSITION_MONITOR_INTERVAL_SECONDS,
        }
        try:
            status = monitor_status(now=now)
            durations = dashboard.recent_sweep_durations_ms()
        except RedisError as error:
            # The page must still say something useful when Redis is the thing that is down.
            logger.warning("monitor dashboard: Redis unreachable: %s", error)
            context["redis_error"] = str(error)
        else:
            context.update(
                status=status,
                figures=dashboard.figures(status, now=now),
                instruments=dashboard.open_positions_rows(status),
                sweep_chart=dashboard.sweep_chart_svg(
                    durations,
                    average_ms=status["avg_check_duration_ms"],
                    p95_ms=status["p95_check_duration_ms"],
                ),
                sweep_count=len(durations),
            )
        activity = dashboard.hourly_activity(now=now)
        context.update(
            activity_chart=dashboard.activity_chart_svg(activity),
            activity_breaches=sum(hour.breaches for hour in activity),
            activity_closes=sum(hour.closes for hour in activity),
        )
        return TemplateResponse(request, "admin/monitoring/dashboard.html", context)
