"""Reads for the owner: what a price would do to hidden levels, and the monitor's state."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.conf import settings
from django.db import connection

from positions.choices import PositionStatus
from positions.models import OpenPosition
from positions.rules import breach
from signals_app.hidden_levels import parse_hidden_levels
from signals_app.models import Signal


@dataclass(frozen=True)
class BreachTest:
    """The answer to "what if the market were here?" Nothing is closed by asking."""

    side: str
    bid: Decimal
    ask: Decimal
    judged_price: Decimal  # bid for a buy, ask for a sell
    sl: Decimal | None
    tp: Decimal | None
    tolerance: Decimal
    level: str | None  # "stop_loss", "take_profit" or None
    open_positions: int  # how many would get a close command now

    @property
    def would_close(self) -> bool:
        return self.level is not None


def breach_test(*, signal: Signal, bid: Decimal, ask: Decimal) -> BreachTest:
    levels = parse_hidden_levels(signal.owner_only)
    tolerance = settings.BREACH_PRICE_TOLERANCE_PIPS * signal.instrument.pip_size
    level = breach(side=signal.side, sl=levels.sl, tp=levels.tp, bid=bid, ask=ask, tolerance=tolerance)
    open_positions = (
        OpenPosition.objects.filter(
            signal=signal, status=PositionStatus.OPEN, client__auto_close_enabled=True
        ).count()
        if level
        else 0
    )
    return BreachTest(
        side=signal.side,
        bid=bid,
        ask=ask,
        judged_price=bid if signal.side == "buy" else ask,
        sl=levels.sl,
        tp=levels.tp,
        tolerance=tolerance,
        level=level,
        open_positions=open_positions,
    )


def live_position_counts() -> tuple[dict[str, int], int]:
    """Open positions per instrument and active close commands, for the gauges."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.symbol, count(*) FROM positions_openposition p JOIN signals_app_instrument i "
            "ON i.id = p.instrument_id WHERE p.status = %s GROUP BY i.symbol",
            [PositionStatus.OPEN],
        )
        per_instrument = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM positions_closecommand WHERE status IN ('pending', 'delivered')")
        (pending,) = cursor.fetchone()
    return per_instrument, pending
