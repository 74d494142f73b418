"""The live book in the owner console, from ``positions.live``: four short columns on the
positions table (bid/ask, floating P&L, distance to the stop, to the targets) and the
*Live book* page (``live/`` under the positions table: per signal and per client),
which refreshes itself every ``REFRESH_SECONDS``.

Owner only. A distance to a level reveals the level, so the columns and the page are
for users with ``signals_app.view_hidden_levels``; the prices and the P&L go with them.
Anyone else sees the table as it was (``get_list_display``) and gets 403 on the page.
The columns show when the table lists live positions only (its default state): there
they take the place of the ticket, close price and realized P&L, so the row still fits
1366 px; the closed and all views keep those and have no live column.
Exports never carry these columns: they are a moment's view, not a record.
"""

from __future__ import annotations

import time

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.views.decorators.http import require_safe

from core import formatting
from positions.admin.filters import StateFilter
from positions.live import (
    ClientLive,
    PositionLive,
    QuoteView,
    SignalLive,
    clients_live,
    positions_live,
    signals_live,
)
from positions.live_rules import NO_QUOTE, WATCHING, LevelView, PlanView
from positions.models import OpenPosition
from signals_app.selectors import user_sees_hidden_levels

LIVE_BOOK_PERMISSIONS = ("positions.view_openposition", "signals_app.view_hidden_levels")
# The clients' half shows the guards' figures: the guards page's permission too.
CLIENTS_PERMISSION = "positions.view_clientguard"
REFRESH_SECONDS = 5
# The page lists at most this many signals (the most recent first); the table has the rest.
SIGNALS_SHOWN = 200
# Bid over ask, the floating P&L, the stop over the targets: narrow, stacked columns.
LIVE_COLUMNS = ("live_quote", "live_pnl", "live_levels")
# What the table shows of a closed position, left out where the live columns show (the
# broker's ticket stays on the position's page and in the search).
CLOSED_COLUMNS = ("ticket", "close", "pnl")
_LIVE = "_live"  # where LiveChangeList puts each position's figures
UNREADABLE = "levels unreadable"


class LiveChangeList(ChangeList):
    """Reads the page's live figures once, after the page's rows: one query for the plans,
    one Redis round trip for the quotes, whatever the page's size."""

    def get_results(self, request) -> None:
        super().get_results(request)
        if LIVE_COLUMNS[0] not in self.list_display:
            return
        self.result_list = list(self.result_list)
        figures = positions_live(self.result_list)
        for position in self.result_list:
            setattr(position, _LIVE, figures.get(position.pk))


# --- how a figure reads ---------------------------------------------------------------


def quote_html(quote: QuoteView | None, digits: int, *, stacked: bool = False) -> SafeString:
    """Bid and ask (``stacked``: one above the other, for a narrow column)."""
    if quote is None:
        return format_html('<span class="live-none">{}</span>', NO_QUOTE)
    prices = format_html(
        "{}<br>{}" if stacked else "{}&nbsp;/ {}",
        formatting.price(quote.bid, digits),
        formatting.price(quote.ask, digits),
    )
    if quote.stale:
        return format_html(
            '{}<br><span class="live-stale">{} old</span>', prices, formatting.age(quote.age_seconds)
        )
    return prices


def pnl_text(pnl, currency: str) -> str:
    return NO_QUOTE if pnl is None else formatting.money(pnl, currency)


def level_text(level: LevelView) -> str:
    if level.pips is None:
        return level.state  # no quote, hit
    text = formatting.pips(level.pips)
    return text if level.state == WATCHING else f"{text} ({level.state})"


def stop_html(plan: PlanView | None) -> SafeString:
    if plan is None:
        return format_html('<span class="live-stale">{}</span>', UNREADABLE)
    if plan.ended:
        return format_html("plan ended: {}", plan.ended)
    stop = plan.stop
    if stop is None:
        return format_html("{}", formatting.NONE)
    return format_html('{}<br><span class="live-label">{}</span>', level_text(stop), stop.label)


def targets_html(plan: PlanView | None) -> SafeString:
    if plan is None or plan.ended:
        return format_html("{}", formatting.NONE if plan is not None else UNREADABLE)
    targets = plan.targets
    if not targets:
        return format_html("{}", formatting.NONE)
    return format_html_join(
        "", '<div><span class="live-label">{}</span> {}</div>', ((_short(t), level_text(t)) for t in targets)
    )


def _short(level: LevelView) -> str:
    return "TP" if level.label == "take-profit" else level.label.removeprefix("partial TP ")


# --- the table's columns and the page -------------------------------------------------


class LiveBookMixin:
    """Mixed into ``OpenPositionAdmin``; its ``get_urls()`` adds the live book."""

    def get_urls(self):
        view = self.admin_site.admin_view(require_safe(self.live_book_view))
        return [path("live/", view, name="positions_openposition_live"), *super().get_urls()]

    def get_list_display(self, request):
        columns = list(super().get_list_display(request))
        if user_sees_hidden_levels(request.user) and StateFilter.lists_live_only(request):
            # Live positions have no close yet: their room goes to the live figures.
            columns = [column for column in columns if column not in CLOSED_COLUMNS] + list(LIVE_COLUMNS)
        return columns

    def get_changelist(self, request, **kwargs):
        return LiveChangeList

    @staticmethod
    def _live(position: OpenPosition) -> PositionLive | None:
        return getattr(position, _LIVE, None)

    @admin.display(description="Bid/Ask")
    def live_quote(self, position: OpenPosition) -> str:
        live = self._live(position)
        if live is None:
            return formatting.NONE
        return quote_html(live.quote, position.instrument.digits, stacked=True)

    @admin.display(description="Float P&L")
    def live_pnl(self, position: OpenPosition) -> str:
        live = self._live(position)
        return formatting.NONE if live is None else pnl_text(live.pnl, position.instrument.quote_currency)

    @admin.display(description="To stop / To TP")
    def live_levels(self, position: OpenPosition) -> str:
        live = self._live(position)
        if live is None:
            return formatting.NONE
        return format_html(
            '<div class="live-stop">{}</div><div class="live-targets">{}</div>',
            stop_html(live.plan),
            targets_html(live.plan),
        )

    def live_book_view(self, request) -> TemplateResponse:
        if not request.user.has_perms(LIVE_BOOK_PERMISSIONS):
            raise PermissionDenied
        now = time.time()
        shows_clients = request.user.has_perm(CLIENTS_PERMISSION)
        signals = signals_live(limit=SIGNALS_SHOWN, now=now)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Live book",
            "refresh_seconds": REFRESH_SECONDS,
            "signals": [_signal_row(signal) for signal in signals],
            "signals_shown": SIGNALS_SHOWN if len(signals) == SIGNALS_SHOWN else None,
            "shows_clients": shows_clients,
            "clients": [_client_row(client) for client in clients_live(now=now)] if shows_clients else [],
        }
        return TemplateResponse(request, "admin/positions/live_book.html", context)


def _signal_row(signal: SignalLive) -> dict:
    return {
        "id": signal.signal_id,
        "url": reverse("admin:signals_app_signal_change", args=[signal.signal_id]),
        "positions_url": reverse("admin:positions_openposition_changelist") + f"?signal={signal.signal_id}",
        "name": f"#{signal.signal_id} {signal.side} {signal.symbol}",
        "positions": signal.positions,
        "volume": formatting.volume(signal.volume),
        "quote": quote_html(signal.quote, signal.digits),
        "pnl": pnl_text(signal.pnl, signal.currency),
        "stop": stop_html(signal.plan),
        "targets": targets_html(signal.plan),
    }


def _client_row(client: ClientLive) -> dict:
    pnl = " · ".join(formatting.money(amount, currency) for currency, amount in client.pnl.items())
    if client.unpriced:
        pnl = f"{pnl or formatting.NONE} ({client.unpriced} without a quote)"
    return {
        "id": client.client_id,
        "url": reverse("admin:signals_app_client_change", args=[client.client_id]),
        "name": client.name,
        "state": client.guard_state or "no heartbeat",
        "equity": _amount(client.equity),
        "peak": _amount(client.peak),
        "drawdown": _percent(client.drawdown_percent, client.drawdown_limit_percent),
        "daily_loss": _percent(client.daily_loss_percent, client.daily_loss_limit_percent),
        "equity_at": formatting.timestamp(client.equity_at),
        "positions": client.positions,
        "pnl": pnl or formatting.NONE,
    }


def _amount(value) -> str:
    # The account's own currency, which EAs do not report: two decimals, no currency.
    return formatting.NONE if value is None else f"{value:,.2f}"


def _percent(value, limit) -> str:
    if value is None:
        return formatting.NONE
    return f"{value} % (limit {limit} %)" if limit else f"{value} % (no limit)"
