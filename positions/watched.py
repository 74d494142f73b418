"""The signals the scanner watches: those with open positions, each with its hidden
levels decrypted once per sweep, never once per position.

A signal whose levels do not decrypt (a key dropped before ``reencrypt``) or do
not parse is left out and alerted; every other signal is still watched.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.db import connection

from positions.alerts import alert_raise
from positions.choices import AlertKind
from signals_app.hidden_levels import HiddenLevelsError, parse_hidden_levels
from signals_app.models import Instrument, Signal

_SIGNALS_WITH_OPEN_POSITIONS = """
WITH RECURSIVE walk AS (
    (SELECT signal_id FROM positions_openposition WHERE status = 'open' ORDER BY signal_id LIMIT 1)
    UNION ALL
    SELECT (SELECT p.signal_id FROM positions_openposition p
             WHERE p.status = 'open' AND p.signal_id > walk.signal_id
             ORDER BY p.signal_id LIMIT 1)
      FROM walk WHERE walk.signal_id IS NOT NULL
)
SELECT signal_id FROM walk WHERE signal_id IS NOT NULL
"""


@dataclass(frozen=True)
class WatchedSignal:
    signal_id: int
    instrument_id: int
    symbol: str
    side: str
    sl: Decimal | None
    tp: Decimal | None
    tolerance: Decimal


def signals_with_open_positions() -> list[int]:
    with connection.cursor() as cursor:
        cursor.execute(_SIGNALS_WITH_OPEN_POSITIONS)
        return [row[0] for row in cursor.fetchall()]


def watched_signals(signal_ids: list[int], symbols: set[str] | None) -> list[WatchedSignal]:
    instruments = {instrument.pk: instrument for instrument in Instrument.objects.all()}
    rows = Signal.objects.filter(pk__in=signal_ids)
    if symbols is not None:  # a quote-triggered sweep decrypts only its instrument's signals
        rows = rows.filter(instrument_id__in=[pk for pk, i in instruments.items() if i.symbol in symbols])
    columns = ("pk", "instrument_id", "side", "owner_only")
    try:
        decrypted = list(rows.values_list(*columns))  # owner_only decrypted here, once per signal
    except InvalidToken:
        decrypted = _decrypt_one_by_one(rows, columns)
    tolerance_pips = settings.BREACH_PRICE_TOLERANCE_PIPS
    watched = []
    for signal_id, instrument_id, side, owner_only in decrypted:
        instrument = instruments[instrument_id]
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
                side=side,
                sl=levels.sl,
                tp=levels.tp,
                tolerance=tolerance_pips * instrument.pip_size,
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
