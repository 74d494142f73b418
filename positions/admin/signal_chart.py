"""The owner's chart of a signal: candles of the owner's feed with the entry, the hidden
levels, the effective stop over time, fills and closes (``positions.signal_chart`` reads,
``positions.signal_chart_svg`` draws).

Hung off ``OpenPositionAdmin.get_urls()`` like the other owner tools (signals_app never
imports positions: the signal page links here). The chart is the hidden levels drawn, so
it needs ``signals_app.view_hidden_levels`` as test-breach does: anyone else gets a 403
and nothing of it. GET only: it reads.
"""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_GET

import core.converters  # noqa: F401  (registers <id:...>, which get_urls uses)
from core import formatting
from positions.bars import Timeframe
from positions.signal_chart import MAX_CANDLES, signal_chart
from positions.signal_chart_svg import signal_chart_svg
from signals_app.models import Signal

CHART_PERMISSIONS = (
    "positions.view_openposition",
    "signals_app.view_signal",
    "signals_app.view_hidden_levels",
)
TIMEFRAMES = [timeframe.value for timeframe in Timeframe]


class SignalChartMixin:
    """Mixed into ``OpenPositionAdmin`` (a ModelAdmin): uses its ``admin_site`` and ``opts``."""

    def get_urls(self):
        chart = path(
            "signal/<id:signal_id>/chart/",
            self.admin_site.admin_view(require_GET(self.signal_chart_view)),
            name="positions_signal_chart",
        )
        return [chart, *super().get_urls()]

    def signal_chart_view(self, request, signal_id: int) -> TemplateResponse:
        if not request.user.has_perms(CHART_PERMISSIONS):
            raise PermissionDenied
        # The levels are decrypted inside signal_chart, where an unreadable signal is handled.
        signal = get_object_or_404(
            Signal.objects.select_related("instrument").defer("owner_only"), pk=signal_id
        )
        requested = request.GET.get("timeframe", "").strip()
        timeframe, timeframe_error = None, ""
        if requested:
            try:
                timeframe = Timeframe(requested.upper())
            except ValueError:
                timeframe_error = (
                    f"“{requested[:20]}” is not a timeframe; choose one of {', '.join(TIMEFRAMES)}. "
                    "Showing the default, the shortest that fits the signal's life."
                )
        chart = signal_chart(signal=signal, timeframe=timeframe)
        digits = chart.digits
        stops = [step for step in chart.stop_steps if step.price is not None]
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Chart: signal {signal}",
            "signal": signal,
            "chart": chart,
            "svg": signal_chart_svg(chart) if chart.bars else None,
            "timeframes": TIMEFRAMES,
            "timeframe_error": timeframe_error,
            "max_candles": MAX_CANDLES,
            "levels": [(level.label, formatting.price(level.price, digits)) for level in chart.levels],
            "stop_last": formatting.price(stops[-1].price, digits) if stops else None,
            "stop_moves": max(len(stops) - 1, 0),
            # The plan's exit ends the line: there is no stop after it.
            "plan_ended": bool(chart.stop_steps) and chart.stop_steps[-1].price is None,
            "fills": sum(mark.count for mark in chart.fills),
            "closes": sum(mark.count for mark in chart.closes),
            "back_url": reverse("admin:signals_app_signal_change", args=[signal.pk]),
        }
        return TemplateResponse(request, "admin/positions/signal_chart.html", context)
