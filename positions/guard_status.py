"""The instrument part of the guards status (``GET /api/v1/guards/status``, owner and
staff only): per active instrument, its spread, the median it is judged against,
the age of its latest quote and the market guard's state, computed as a sweep
would (``positions.market_guard``). Plain data; reading it changes nothing."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count

from core.redis import get_redis
from positions.choices import ACTIVE_CLOSE_STATUSES, CloseReason, PositionStatus
from positions.market_guard import CLOSING, HELD, NORMAL, GuardConfig, abnormal, median, quote_age
from positions.models import CloseCommand, OpenPosition
from positions.quotes import SPREAD_WINDOW_KEY, quotes_latest
from signals_app.choices import MarketGuardMode
from signals_app.models import Instrument


def spread_windows(symbols: list[str]) -> dict[str, list[Decimal]]:
    """Each instrument's recent spreads (oldest first), in one round trip."""
    pipeline = get_redis().pipeline(transaction=False)
    for symbol in symbols:
        pipeline.lrange(SPREAD_WINDOW_KEY.format(symbol=symbol), 0, -1)
    return {
        symbol: [Decimal(value.decode()) for value in values]
        for symbol, values in zip(symbols, pipeline.execute(), strict=True)
    }


def instruments_guard_status(*, now: float | None = None) -> list[dict[str, Any]]:
    """Per active instrument, by symbol:

    - ``spread`` and ``median_spread`` (of the last MARKET_GUARD_SPREAD_WINDOW fresh
      quotes; null until there is a quote), ``last_quote_age_seconds``;
    - ``mode`` (hold or close) and the thresholds in force (own, or the global settings);
    - ``state``: ``normal``, ``held`` (breaches not judged there) or ``closing`` (close
      mode, abnormal market, or market-guard closes still running), with ``reason``.
      Silence and stale quotes count only while the instrument has live positions.
    """
    now = time.time() if now is None else now
    rows = list(
        Instrument.objects.filter(active=True)
        .order_by("symbol")
        .values_list(
            "pk",
            "symbol",
            "pip_size",
            "market_guard_mode",
            "market_guard_spread_factor",
            "market_guard_gap_pips",
            "market_guard_quote_timeout_seconds",
        )
    )
    symbols = [row[1] for row in rows]
    latest = quotes_latest(symbols)
    windows = spread_windows(symbols)
    live = dict(
        OpenPosition.objects.filter(status__in=[PositionStatus.OPEN, PositionStatus.CLOSING])
        .values_list("instrument_id")
        .annotate(count=Count("pk"))
        .order_by()
    )
    guard_closing = set(
        CloseCommand.objects.filter(
            reason=CloseReason.MARKET_GUARD, status__in=ACTIVE_CLOSE_STATUSES
        ).values_list("position__instrument_id", flat=True)
    )
    status = []
    for pk, symbol, pip_size, mode, factor, gap_pips, timeout in rows:
        config = GuardConfig.of(mode=mode, quote_timeout=timeout)
        quote = latest.get(symbol)
        positions = live.get(pk, 0)
        state, reason = _state(quote, config, now=now, positions=positions, closing=pk in guard_closing)
        window_median = median(windows[symbol])
        status.append(
            {
                "instrument": symbol,
                "mode": mode,
                "state": state,
                "reason": reason,
                "spread": str(quote.ask - quote.bid) if quote is not None else None,
                "median_spread": str(window_median) if window_median is not None else None,
                "last_quote_age_seconds": round(quote_age(quote, now), 3) if quote is not None else None,
                "live_positions": positions,
                "spread_factor": str(settings.MARKET_GUARD_SPREAD_FACTOR if factor is None else factor),
                "gap_pips": str(settings.MARKET_GUARD_GAP_PIPS if gap_pips is None else gap_pips),
                "quote_timeout_seconds": config.quote_timeout,
                "pip_size": str(pip_size),
            }
        )
    return status


def _state(quote, config: GuardConfig, *, now: float, positions: int, closing: bool) -> tuple[str, str]:
    """As a sweep judges it (``positions.market_guard.sweep_verdict``, the stale rule)."""
    if quote is None:
        return (HELD, "no quote at all") if positions else (NORMAL, "")
    reason = abnormal(quote, config, now=now)
    if reason and (quote.anomaly or positions):
        return (CLOSING if config.mode == MarketGuardMode.CLOSE else HELD), reason
    if positions and quote_age(quote, now) > settings.QUOTE_MAX_AGE_SECONDS:
        return HELD, "stale quote: older than QUOTE_MAX_AGE_SECONDS"
    if closing:
        return CLOSING, "market guard closes still running"
    return NORMAL, ""
