"""Pure position arithmetic (no Django): tested in microseconds."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

BUY = "buy"


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


def is_spike(
    *, bid: Decimal, ask: Decimal, previous_bid: Decimal, previous_ask: Decimal, max_jump: Decimal
) -> bool:
    """A mid price more than ``max_jump`` (a fraction) away from the previous quote's."""
    previous_mid = (previous_bid + previous_ask) / 2
    if previous_mid <= 0:
        return False
    return abs((bid + ask) / 2 - previous_mid) / previous_mid > max_jump


# What the scanner does with a signal on this sweep.
CLOSE = "close"  # confirmed breach: queue close commands
WAIT = "wait"  # a breach seen, not yet confirmed (recheck delay or spike)
NONE = "none"  # nothing crossed
STALE = "stale"  # the quote is too old to judge: alert, never close


@dataclass(frozen=True)
class Verdict:
    action: str
    level: str | None = None  # STOP or TARGET
    first_seen_ts: float | None = None  # when this breach was first seen (for the recheck delay)
    spike: bool = False  # WAIT because the quote jumped too far from the previous one


def judge(
    *,
    side: str,
    sl: Decimal | None,
    tp: Decimal | None,
    bid: Decimal,
    ask: Decimal,
    quote_ts: float,
    received_at: float | None = None,
    previous: tuple[Decimal, Decimal] | None,
    pending_since: tuple[str, float] | None,
    now: float,
    tolerance: Decimal,
    max_age_seconds: float,
    recheck_delay_seconds: float,
    max_jump: Decimal,
) -> Verdict:
    """The whole decision for one signal and its instrument's latest quote.

    1. A quote older than ``max_age_seconds`` decides nothing (``STALE``); its age
       counts from the earlier of its own time and its arrival, so a feed clock
       running ahead cannot keep it fresh.
    2. No level crossed: ``NONE`` (any pending breach is forgotten).
    3. A crossing on a spike (a jump beyond ``max_jump`` from the previous
       quote) waits for the next quote to confirm it.
    4. A crossing first seen at ``t`` closes once a quote at least
       ``recheck_delay_seconds`` newer still crosses the same level.
    """
    if now - min(quote_ts, received_at or quote_ts) > max_age_seconds:
        return Verdict(STALE)
    level = breach(side=side, sl=sl, tp=tp, bid=bid, ask=ask, tolerance=tolerance)
    if level is None:
        return Verdict(NONE)
    if previous is not None and is_spike(
        bid=bid, ask=ask, previous_bid=previous[0], previous_ask=previous[1], max_jump=max_jump
    ):
        return Verdict(WAIT, level, first_seen_ts=quote_ts, spike=True)
    first_seen = pending_since[1] if pending_since and pending_since[0] == level else quote_ts
    if quote_ts - first_seen >= recheck_delay_seconds:
        return Verdict(CLOSE, level, first_seen_ts=first_seen)
    return Verdict(WAIT, level, first_seen_ts=first_seen)
