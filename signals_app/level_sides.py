"""Where the hidden levels must lie for the signal's side and entry. Pure (no Django)."""

from __future__ import annotations

from decimal import Decimal

from signals_app.hidden_levels import BUY, HiddenLevels


def check_levels_against_entry(levels: HiddenLevels, *, side: str, entry_price: Decimal) -> dict[str, str]:
    """A buy needs SL < entry < TP, a sell TP < entry < SL; partial TPs lie between entry and TP."""
    errors: dict[str, str] = {}
    below, above = ("sl", "tp") if side == BUY else ("tp", "sl")
    for name, price in (("sl", levels.sl), ("tp", levels.tp)):
        if price is None:
            continue
        if name == below and not price < entry_price:
            errors[name] = f"must be below the entry price for a {side}"
        if name == above and not price > entry_price:
            errors[name] = f"must be above the entry price for a {side}"
    for index, partial in enumerate(levels.partial_take_profits):
        beyond_entry = partial.price > entry_price if side == BUY else partial.price < entry_price
        before_tp = levels.tp is None or (
            partial.price < levels.tp if side == BUY else partial.price > levels.tp
        )
        if not (beyond_entry and before_tp):
            errors[f"partial_take_profits[{index}].price"] = "must lie between the entry price and tp"
    return errors
