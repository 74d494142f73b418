"""Monitoring's two pages: ``/healthz`` for probes and the owner's monitor dashboard.

The dashboard is mounted in config/urls.py at ``/admin/monitor/``, wrapped in
``admin.site.admin_view`` (staff only, CSRF, never cached) like every console page.
"""

from __future__ import annotations

import logging

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, JsonResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_safe
from redis.exceptions import RedisError

from monitoring import charts, dashboard
from monitoring.health import run_checks
from monitoring.selectors import monitor_status

logger = logging.getLogger(__name__)


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when PostgreSQL, Redis and beat are fine; 503 naming what is not."""
    results = run_checks()
    failing = sorted(name for name, problem in results.items() if problem)
    body = {
        "status": "unhealthy" if failing else "ok",
        "checks": {
            name: {"ok": True} if problem is None else {"ok": False, "detail": problem}
            for name, problem in results.items()
        },
        "failing": failing,
    }
    response = JsonResponse(body, status=503 if failing else 200)
    if failing:
        # An answer, not a server error: a probe (a load balancer, `make run` waiting for
        # the start-up) learns what is not ready. Logged here as a warning naming it;
        # Django would log every probe at ERROR.
        logger.warning("healthz: unhealthy: %s", ", ".join(failing))
        response._has_been_logged = True
    return response


@require_safe
def monitor_dashboard(request: HttpRequest) -> TemplateResponse:
    """The monitor at a glance; read-only, refreshes itself."""
    now = timezone.now()
    context = {
        **admin.site.each_context(request),
        "title": "Monitor dashboard",
        "refresh_seconds": dashboard.REFRESH_SECONDS,
        "generated_at": now,
        "interval_seconds": settings.POSITION_MONITOR_INTERVAL_SECONDS,
    }
    status = monitor_status(now=now)
    durations: list[float] = []
    if status["unavailable"]:
        context["redis_error"] = "the figures kept there are marked unavailable"
    else:
        try:
            durations = dashboard.recent_sweep_durations_ms()
        except RedisError as error:  # gone since the status was read: the chart is left out
            logger.warning("monitor dashboard: Redis unreachable: %s", error)
            context["redis_error"] = "the sweep chart is left out"
    context.update(
        status=status,
        figures=dashboard.figures(status, now=now),
        instruments=dashboard.open_positions_rows(status),
    )
    if not context.get("redis_error"):
        context.update(
            sweep_chart=charts.sweep_chart_svg(
                durations,
                average_ms=status["avg_check_duration_ms"],
                p95_ms=status["p95_check_duration_ms"],
            ),
            sweep_count=len(durations),
        )
    activity = dashboard.hourly_activity(now=now)
    context.update(
        activity_chart=charts.activity_chart_svg(activity),
        activity_breaches=sum(hour.breaches for hour in activity),
        activity_closes=sum(hour.closes for hour in activity),
    )
    return TemplateResponse(request, "admin/monitoring/dashboard.html", context)
