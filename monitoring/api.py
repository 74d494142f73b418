"""The owner's REST API for the monitor: its state, the figures the dashboard shows.

Staff only (core.owner_api). It shares the ``/api/v1/admin/positions/`` prefix with the
owner's position endpoints in positions.api.
"""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from core.owner_api import READ_ERRORS, OwnerAPIView
from monitoring.selectors import monitor_status


class BreachesLastHourOutput(serializers.Serializer):
    sl = serializers.IntegerField()
    tp = serializers.IntegerField()
    trailing = serializers.IntegerField(help_text="trailing stops hit")
    breakeven = serializers.IntegerField(help_text="stops moved to breakeven, then hit")
    partial_tp = serializers.IntegerField(help_text="partial take-profits reached")


class MonitorStatusOutput(serializers.Serializer):
    monitor_running = serializers.BooleanField(
        allow_null=True,
        help_text="enabled, a recent sweep and a fresh beat heartbeat; null while Redis is unreachable",
    )
    monitor_enabled = serializers.BooleanField()
    dry_run = serializers.BooleanField()
    last_check = serializers.DateTimeField(allow_null=True)
    beat_heartbeat_age_seconds = serializers.FloatField(allow_null=True)
    open_positions_count = serializers.IntegerField()
    open_positions_by_instrument = serializers.DictField(child=serializers.IntegerField())
    closing_positions_count = serializers.IntegerField()
    close_failed_positions_count = serializers.IntegerField()
    pending_closes_count = serializers.IntegerField()
    delivered_closes_count = serializers.IntegerField()
    avg_check_duration_ms = serializers.FloatField(allow_null=True)
    p95_check_duration_ms = serializers.FloatField(allow_null=True)
    breaches_last_hour = BreachesLastHourOutput(help_text="signals that crossed a level (not positions)")
    close_success_rate_24h = serializers.FloatField(allow_null=True)
    breach_to_close_latency_ms_median = serializers.FloatField(allow_null=True)
    devices_offline_with_open_positions = serializers.IntegerField()
    stale_quotes = serializers.ListField(child=serializers.CharField(), allow_null=True)
    open_alerts = serializers.IntegerField()
    unavailable = serializers.ListField(
        child=serializers.CharField(),
        help_text="the figures that could not be read (kept in Redis, which is unreachable): "
        "they are null; empty when every figure is read",
    )


class MonitorStatusView(OwnerAPIView):
    @extend_schema(
        responses={200: MonitorStatusOutput, **READ_ERRORS},
        tags=["owner"],
        operation_id="owner_monitor_status",
        summary="The monitor's state",
    )
    def get(self, request: Request) -> Response:
        return Response(MonitorStatusOutput(monitor_status()).data)


urlpatterns = [
    # Mounted before positions.api in config/urls.py: this literal route is matched first.
    path("admin/positions/monitor/status", MonitorStatusView.as_view(), name="owner-monitor-status"),
]
