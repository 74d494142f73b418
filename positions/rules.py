"""Pure position arithmetic (no Django): tested in microseconds."""

from __future__ import annotations

from decimal import Decimal

BUY = "buy"


def realized_pnl(
    *, side: str, entry_price: Decimal, close_price: Decimal, volume: Decimal, contract_size: Decimal
) -> Decimal:
    """Profit in the quote currency of closing ``volume`` lots at ``close_price``."""
    direction = 1 if side == BUY else -1
    return (close_price - entry_price) * volume * contract_size * direction
