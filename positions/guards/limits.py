"""The guards' settings as they apply: a client's effective limits, the day boundary."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from django.conf import settings


@dataclass(frozen=True)
class Limits:
    drawdown: Decimal | None  # None: off
    daily_loss: Decimal | None


def _effective(own: Decimal | None, default: Decimal) -> Decimal | None:
    if own is not None:
        return own
    return default or None  # a default of 0 is off


def limits_effective(
    *, drawdown_limit_percent: Decimal | None, daily_loss_limit_percent: Decimal | None
) -> Limits:
    """A client's own limit, else the default setting (GUARD_*_LIMIT_PERCENT; 0 is off)."""
    return Limits(
        drawdown=_effective(drawdown_limit_percent, settings.GUARD_DRAWDOWN_LIMIT_PERCENT),
        daily_loss=_effective(daily_loss_limit_percent, settings.GUARD_DAILY_LOSS_LIMIT_PERCENT),
    )


def guard_day(moment: datetime) -> date:
    """The day a moment falls in for the daily loss limit: it starts at midnight in
    GUARD_DAY_TIMEZONE (UTC by default)."""
    return moment.astimezone(ZoneInfo(settings.GUARD_DAY_TIMEZONE)).date()


def jump_fraction() -> Decimal:
    return settings.GUARD_EQUITY_JUMP_PERCENT / 100


def stale_window() -> timedelta:
    return timedelta(seconds=settings.GUARD_EQUITY_STALE_SECONDS)
