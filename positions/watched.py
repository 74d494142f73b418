"""The signals a sweep looks at, each with its exit plan decrypted once per sweep,
never once per position.

A signal's plan is the owner's trade, so it is followed from publication:
every published signal still inside its TTL, or with live positions (open, or
closing part of their volume), whose plan has not ended. A plan that has ended
(``SignalPlan.exit_kind``) needs no decryption: its remaining open positions
are closed by kind (``exited_signals``).

A signal whose levels do not decrypt (a key dropped before ``reencrypt``) or do
not parse is left out and alerted; every other signal is still watched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import connection

from positions.alerts import alert_raise
from positions.candles import atr
from positions.choices import AlertKind
from positions.exit_plan import ExitPlan
from positions.models import SignalPlan
from signals_app.choices import SignalStatus
from signals_app.hidden_levels import HiddenLevels, HiddenLevelsError, parse_hidden_levels
from signals_app.models import MAX_TTL_MINUTES, Instrument, Signal

_SIGNALS_WITH_LIVE_POSITIONS = """
WITH RECURSIVE walk AS (
    (SELECT signal_id FROM positions_openposition WHERE status IN ('open', 'closing')
      ORDER BY signal_id LIMIT 1)
    UNION ALL
    SELECT (SELECT p.signal_id FROM positions_openposition p
             WHERE p.status IN ('open', 'closing') AND p.signal_id > walk.signal_id
             ORDER BY p.signal_id LIMIT 1)
      FROM walk WHERE walk.signal_id IS NOT NULL
)
SELECT signal_id FROM walk WHERE signal_id IS NOT NULL
"""

# Published signals still open for entries (their TTL has not run out); no TTL is longer
# than MAX_TTL_MINUTES, so the index on published_at bounds the search.
_SIGNALS_IN_TTL = """
SELECT id FROM signals_app_signal
 WHERE status = %(published)s AND published_at > %(oldest)s
   AND published_at + ttl_minutes * interval '1 minute' > %(now)s
"""


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


@dataclass(frozen=True)
class ToWatch:
    running: list[int]  # plans still running: walked through the quotes
    ended: list[int]  # plans ended, with live positions: their open ones are closed by kind


def signals_to_watch(*, now: datetime) -> ToWatch:
    with connection.cursor() as cursor:
        cursor.execute(_SIGNALS_WITH_LIVE_POSITIONS)
        live = {row[0] for row in cursor.fetchall()}
        cursor.execute(
            _SIGNALS_IN_TTL,
            {
                "published": SignalStatus.PUBLISHED,
                "oldest": now - timedelta(minutes=MAX_TTL_MINUTES),
                "now": now,
            },
        )
        in_ttl = {row[0] for row in cursor.fetchall()}
    ended = set(
        SignalPlan.objects.filter(signal_id__in=live | in_ttl)
        .exclude(exit_kind="")
        .values_list("signal_id", flat=True)
    )
    return ToWatch(running=sorted((live | in_ttl) - ended), ended=sorted(ended & live))


def exited_signals(signal_ids: list[int], *, symbols: set[str] | None) -> list[ExitedSignal]:
    """Ended plans (``ToWatch.ended``) as their kind and the quote that ended them."""
    rows = SignalPlan.objects.filter(signal_id__in=signal_ids)
    if symbols is not None:
        rows = rows.filter(signal__instrument__symbol__in=symbols)
    return [
        ExitedSignal(signal_id, instrument_id, exit_kind, exit_quote)
        for signal_id, instrument_id, exit_kind, exit_quote in rows.values_list(
            "signal_id", "signal__instrument_id", "exit_kind", "exit_quote"
        )
    ]


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


def watched_signals(signal_ids: list[int], symbols: set[str] | None) -> list[WatchedSignal]:
    instruments = {instrument.pk: instrument for instrument in Instrument.objects.all()}
    rows = Signal.objects.filter(pk__in=signal_ids)
    if symbols is not None:  # a quote-triggered sweep decrypts only its instrument's signals
        rows = rows.filter(instrument_id__in=[pk for pk, i in instruments.items() if i.symbol in symbols])
    columns = ("pk", "instrument_id", "side", "entry_price", "published_at", "owner_only")
    try:
        decrypted = list(rows.values_list(*columns))  # owner_only decrypted here, once per signal
    except InvalidToken:
        decrypted = _decrypt_one_by_one(rows, columns)
    watched = []
    for signal_id, instrument_id, side, entry, published_at, owner_only in decrypted:
        instrument = instruments[instrument_id]
        pip_size = instrument.pip_size
        try:
            levels = parse_hidden_levels(owner_only)
        except HiddenLevelsError as error:
            _unreadable(signal_id, f"hidden levels invalid: {', '.join(error.errors)}")
            continue
        watched.append(
            WatchedSignal(
                signal_id=signal_id,
                instrument_id=instrument_id,
                symbol=instrument.symbol,
                published_at=published_at.timestamp() if published_at else 0.0,
                plan=exit_plan(
                    levels,
                    side=side,
                    entry=entry,
                    pip_size=pip_size,
                    trailing=trailing_distance(levels, instrument_id=instrument_id, pip_size=pip_size),
                ),
            )
        )
    return watched


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
