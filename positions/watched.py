"""What a sweep knows of a watched signal, decoded from its encrypted levels once per
worker (``positions.plan_book`` keeps them), never once per position.

A signal's plan is the owner's trade, so it is followed from publication:
every published signal still inside its TTL, or with live positions (open, or
closing part of their volume), whose plan has not ended. A plan that has ended
(``SignalPlan.exit_kind``) needs no decryption: its remaining open positions
are closed by kind (``exited_read``).

A signal whose levels do not decrypt (a key dropped before ``reencrypt``) or do
not parse is left out and alerted; every other signal is still watched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from cryptography.fernet import InvalidToken
from django.conf import settings

from positions.alerts import alert_raise
from positions.candles import atr
from positions.choices import AlertKind
from positions.exit_plan import ExitPlan
from positions.models import SignalPlan
from signals_app.hidden_levels import HiddenLevels, HiddenLevelsError, parse_hidden_levels
from signals_app.models import Signal


@dataclass(frozen=True)
class WatchedSignal:
    signal_id: int
    instrument_id: int
    symbol: str
    published_at: float  # quotes older than this are not the plan's
    plan: ExitPlan


@dataclass(frozen=True)
class ExitedSignal:
    signal_id: int
    instrument_id: int
    exit_kind: str
    exit_quote: dict[str, Any] | None


def exited_read(signal_ids: list[int]) -> dict[int, ExitedSignal]:
    """Ended plans as their kind and the quote that ended them (nothing to decrypt)."""
    if not signal_ids:
        return {}
    rows = SignalPlan.objects.filter(signal_id__in=signal_ids).values_list(
        "signal_id", "signal__instrument_id", "exit_kind", "exit_quote"
    )
    return {row[0]: ExitedSignal(*row) for row in rows}


def trailing_distance(
    levels: HiddenLevels, *, instrument_id: int, pip_size: Decimal, alert: bool = True
) -> Decimal | None:
    """The trailing stop's distance in price: pips, or a multiple of the ATR of the owner's
    feed now. Without enough bars for the ATR there is no distance (and, with ``alert``, the
    owner is told; a question such as test-breach writes nothing)."""
    trailing = levels.trailing
    if trailing is None:
        return None
    if trailing.distance_pips is not None:
        return trailing.distance_pips * pip_size
    value = atr(instrument_id=instrument_id, period=trailing.atr_period, timeframe=trailing.atr_timeframe)
    if value is None:
        if not alert:
            return None
        alert_raise(
            kind=AlertKind.NO_ATR,
            # Names no parameter of the plan: alerts are logged.
            dedupe_key=f"no_atr:{instrument_id}",
            message="Not enough bars of the owner's feed for an ATR yet: ATR trailing stops do not move.",
            instrument_id=instrument_id,
        )
        return None
    return trailing.distance_atr * value


def exit_plan(
    levels: HiddenLevels, *, side: str, entry: Decimal, pip_size: Decimal, trailing: Decimal | None = None
) -> ExitPlan:
    """The plan in prices: pips become price distances, a breakeven fraction a distance to
    tp; ``trailing`` is the trailing distance already in price (``trailing_distance``)."""
    tolerance = settings.BREACH_PRICE_TOLERANCE_PIPS * pip_size
    breakeven_trigger = None
    if levels.breakeven is not None:
        if levels.breakeven.trigger_pips is not None:
            breakeven_trigger = levels.breakeven.trigger_pips * pip_size
        elif levels.tp is not None and levels.breakeven.trigger_fraction is not None:
            breakeven_trigger = levels.breakeven.trigger_fraction * abs(levels.tp - entry)
    return ExitPlan(
        side=side,
        entry=entry,
        tolerance=tolerance,
        sl=levels.sl,
        tp=levels.tp,
        partials=tuple((partial.price, partial.fraction) for partial in levels.partial_take_profits),
        trailing_distance=trailing,
        trailing_activation=levels.trailing.activation_pips * pip_size if levels.trailing else Decimal(0),
        breakeven_trigger=breakeven_trigger,
        breakeven_offset=levels.breakeven.offset_pips * pip_size if levels.breakeven else Decimal(0),
        max_holding_minutes=levels.max_holding_minutes,
    )


def levels_read(signal_ids: list[int]) -> dict[int, HiddenLevels | None]:
    """The hidden levels of these signals, decrypted and parsed; None for one that does
    not decrypt or parse (the owner is alerted: every other signal is still watched)."""
    if not signal_ids:
        return {}
    rows = Signal.objects.filter(pk__in=signal_ids)
    columns = ("pk", "owner_only")
    try:
        decrypted = list(rows.values_list(*columns))
    except InvalidToken:
        decrypted = _decrypt_one_by_one(rows, columns)
    levels: dict[int, HiddenLevels | None] = dict.fromkeys(signal_ids)
    for signal_id, owner_only in decrypted:
        try:
            levels[signal_id] = parse_hidden_levels(owner_only)
        except HiddenLevelsError as error:
            _unreadable(signal_id, f"hidden levels invalid: {', '.join(error.errors)}")
    return levels


def watched_signal(
    signal_id: int,
    *,
    instrument_id: int,
    symbol: str,
    pip_size: Decimal,
    side: str,
    entry: Decimal,
    published_at: datetime | None,
    levels: HiddenLevels,
) -> WatchedSignal:
    """A signal's plan in prices. An ATR trailing distance moves with the feed: it is left
    out here and set by each sweep (``positions.plan_book.Book.with_distance``)."""
    pips_only = levels.trailing is not None and levels.trailing.distance_pips is not None
    return WatchedSignal(
        signal_id=signal_id,
        instrument_id=instrument_id,
        symbol=symbol,
        published_at=published_at.timestamp() if published_at else 0.0,
        plan=exit_plan(
            levels,
            side=side,
            entry=entry,
            pip_size=pip_size,
            trailing=trailing_distance(levels, instrument_id=instrument_id, pip_size=pip_size)
            if pips_only
            else None,
        ),
    )


def _decrypt_one_by_one(rows, columns) -> list[tuple]:
    """The slow path, only when some signal does not decrypt (a key removed before
    `reencrypt`): every other signal is still watched, the broken ones alerted."""
    readable = []
    for signal_id in rows.values_list("pk", flat=True):
        try:
            readable.extend(Signal.objects.filter(pk=signal_id).values_list(*columns))
        except InvalidToken:
            _unreadable(signal_id, "hidden levels do not decrypt with FERNET_KEYS")
    return readable


def _unreadable(signal_id: int, why: str) -> None:
    alert_raise(
        kind=AlertKind.UNREADABLE_LEVELS,
        dedupe_key=f"unreadable:{signal_id}",
        message=f"Signal #{signal_id} is not monitored: {why}.",
    )


def unwalkable(signal_id: int, why: str) -> None:
    _unreadable(signal_id, f"its exit plan could not be walked ({why})")
