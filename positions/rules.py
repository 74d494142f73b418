"""Pure position arithmetic (no Django): tested in microseconds."""

from __future__ import annotations

from decimal import Decimal

BUY = "buy"


def closing_price(*, side: str, bid: Decimal, ask: Decimal) -> Decimal:
    """Where a position would close, and so where it is judged and valued: the bid for a
    buy, the ask for a sell."""
    return bid if side == BUY else ask


def realized_pnl(
    *, side: str, entry_price: Decimal, close_price: Decimal, volume: Decimal, contract_size: Decimal
) -> Decimal:
    """Profit in the quote currency of closing ``volume`` lots at ``close_price``."""
    direction = 1 if side == BUY else -1
    return (close_price - entry_price) * volume * contract_size * direction


# --- the breach rule -----------------------------------------------------------

STOP = "stop_loss"
TARGET = "take_profit"


def breach(
    *, side: str, sl: Decimal | None, tp: Decimal | None, bid: Decimal, ask: Decimal, tolerance: Decimal
) -> str | None:
    """Which hidden level a quote crosses, judged where the position would close.

    A buy closes on the bid: stop when bid ≤ SL - tolerance, target when
    bid ≥ TP + tolerance. A sell closes on the ask: stop when ask ≥ SL +
    tolerance, target when ask ≤ TP - tolerance. ``tolerance`` is a price
    distance (pips * pip size) the quote must go beyond the level.
    """
    if side == BUY:
        if sl is not None and bid <= sl - tolerance:
            return STOP
        if tp is not None and bid >= tp + tolerance:
            return TARGET
        return None
    if sl is not None and ask >= sl + tolerance:
        return STOP
    if tp is not None and ask <= tp - tolerance:
        return TARGET
    return None
