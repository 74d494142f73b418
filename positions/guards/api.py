"""``GET /api/v1/guards/status``: the risk guards as the owner sees them (staff only,
core.owner_api). Owner data: it names limits and equity, and no EA route serves it."""

from __future__ import annotations

from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from core.owner_api import READ_ERRORS, OwnerAPIView
from positions.guard_status import instruments_guard_status
from positions.guards.selectors import guards_status_clients

MONEY = {"max_digits": 32, "decimal_places": 8}
# Wide enough for whatever an EA reports (equity from -1e15 on a peak of 0.01 is a
# drawdown of 1e19 %): a figure that does not fit would fail the whole answer.
PERCENT = {"max_digits": 32, "decimal_places": 2}


class GuardAccountOutput(serializers.Serializer):
    device_id = serializers.IntegerField()
    equity = serializers.DecimalField(**MONEY, help_text="the last accepted equity")
    peak = serializers.DecimalField(**MONEY, help_text="the highest accepted equity since the last re-arm")
    day_start_equity = serializers.DecimalField(
        **MONEY, allow_null=True, help_text="the day's first equity (GUARD_DAY_TIMEZONE); null before it"
    )
    drawdown_percent = serializers.DecimalField(**PERCENT, help_text="below the peak, per cent")
    daily_loss_percent = serializers.DecimalField(
        **PERCENT, help_text="below the day's first equity, per cent (0 when up)"
    )
    equity_at = serializers.DateTimeField(help_text="when the last accepted equity arrived")
    jump_held = serializers.BooleanField(
        help_text="a jump beyond GUARD_EQUITY_JUMP_PERCENT waits for its confirmation"
    )
    live_positions = serializers.IntegerField()
    stale = serializers.BooleanField(help_text="live positions and no equity for GUARD_EQUITY_STALE_SECONDS")


class GuardClientOutput(serializers.Serializer):
    client_id = serializers.IntegerField()
    client = serializers.CharField()
    state = serializers.ChoiceField(choices=["armed", "tripped", "stale"])
    equity = serializers.DecimalField(
        **MONEY, allow_null=True, help_text="its accounts' equity; null before any"
    )
    peak = serializers.DecimalField(**MONEY, allow_null=True, help_text="its accounts' peaks")
    drawdown_percent = serializers.DecimalField(**PERCENT, allow_null=True, help_text="its worst account's")
    daily_loss_percent = serializers.DecimalField(**PERCENT, allow_null=True, help_text="its worst account's")
    drawdown_limit_percent = serializers.DecimalField(
        **PERCENT, allow_null=True, help_text="effective: the client's own, else the default; null: off"
    )
    daily_loss_limit_percent = serializers.DecimalField(
        **PERCENT, allow_null=True, help_text="effective: the client's own, else the default; null: off"
    )
    tripped_at = serializers.DateTimeField(allow_null=True)
    tripped_reason = serializers.CharField(allow_blank=True)
    accounts = GuardAccountOutput(many=True)


class GuardInstrumentOutput(serializers.Serializer):
    instrument = serializers.CharField()
    mode = serializers.ChoiceField(choices=["hold", "close"])
    state = serializers.ChoiceField(
        choices=["normal", "held", "closing"],
        help_text="held: no breach judged there; closing: its positions are being closed",
    )
    reason = serializers.CharField(allow_blank=True, help_text="why it is not normal")
    spread = serializers.CharField(allow_null=True, help_text="of the latest quote; null before any")
    median_spread = serializers.CharField(
        allow_null=True, help_text="of the last MARKET_GUARD_SPREAD_WINDOW fresh quotes"
    )
    last_quote_age_seconds = serializers.FloatField(allow_null=True)
    live_positions = serializers.IntegerField(help_text="open or closing")
    spread_factor = serializers.CharField(help_text="in force: the instrument's own, else the default")
    gap_pips = serializers.CharField(help_text="in force")
    quote_timeout_seconds = serializers.IntegerField(help_text="in force")
    pip_size = serializers.CharField()


class GuardsStatusOutput(serializers.Serializer):
    clients = GuardClientOutput(many=True)
    instruments = GuardInstrumentOutput(many=True, help_text="the market guard, per active instrument")


class MayViewGuards(BasePermission):
    """The guards' figures (equity, limits) take the guards table's view permission, as
    the console's guards page does, not only staff status."""

    def has_permission(self, request, view) -> bool:
        return request.user.has_perm("positions.view_clientguard")


class GuardsStatusView(OwnerAPIView):
    permission_classes = [*OwnerAPIView.permission_classes, MayViewGuards]

    @extend_schema(
        responses={200: GuardsStatusOutput, **READ_ERRORS},
        tags=["owner"],
        operation_id="owner_guards_status",
        summary="The risk guards' state",
    )
    def get(self, request: Request) -> Response:
        status = {"clients": guards_status_clients(), "instruments": instruments_guard_status()}
        return Response(GuardsStatusOutput(status).data)


urlpatterns = [path("guards/status", GuardsStatusView.as_view(), name="owner-guards-status")]
