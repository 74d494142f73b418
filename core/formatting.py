"""How people read numbers: prices at their instrument's digits, money with its currency
and two decimals. One place for the console, its exports and the messages sent to people
(machine APIs keep exact decimal strings)."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from django.utils import formats, timezone

NONE = "—"


def price(value: Decimal | None, digits: int) -> str:
    """``1.0874000000`` at 5 digits is ``1.08740``; None is a dash."""
    if value is None:
        return NONE
    return str(Decimal(value).quantize(Decimal(1).scaleb(-digits), rounding=ROUND_HALF_EVEN))


def money(value: Decimal | None, currency: str) -> str:
    """``-1234.5`` in USD is ``-1,234.50 USD``; None is a dash."""
    if value is None:
        return NONE
    amount = Decimal(value).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)
    return f"{amount:,.2f} {currency}"


def volume(value: Decimal | None) -> str:
    """Lots, as brokers write them: ``0.10``."""
    if value is None:
        return NONE
    return f"{Decimal(value).quantize(Decimal('0.01'), rounding=ROUND_HALF_EVEN)}"


def timestamp(value: datetime | str | None) -> str:
    """A moment as the console writes it (DATETIME_FORMAT: seconds and zone), from a
    datetime or an ISO 8601 string; None is a dash."""
    if value is None or value == "":
        return NONE
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return formats.date_format(timezone.localtime(moment), "DATETIME_FORMAT")


def pips(value: Decimal | None) -> str:
    """A distance in pips, to a tenth: ``-12.5 pips``; None is a dash."""
    if value is None:
        return NONE
    return f"{Decimal(value).quantize(Decimal('0.1'), rounding=ROUND_HALF_EVEN)} pips"


def age(seconds: float) -> str:
    """How long ago, as a person reads it: ``42 s``, ``5 min``, ``1.5 h``, ``3 days``."""
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"


def list_timestamp(value: datetime | None) -> str:
    """A moment in a console list whose column header names the zone (settings.TIME_ZONE,
    UTC), left out of each row so the row stays narrow: ``2026-11-30 07:08:09``."""
    if value is None:
        return NONE
    return formats.date_format(timezone.localtime(value), "Y-m-d H:i:s")
