"""Reads for the owner: a signal's exit plan as it stands, what one quote would do to
it, and the monitor's state.

``breach_test`` answers "what if the owner's feed quoted this now?" the way a sweep
would (``positions.scanner`` step 4): the stored plan state (``positions.plan_store``)
and ONE synthetic quote, numbered after the last one the plan saw, walked through
``positions.exit_plan.plan_advance``. Nothing is saved, audited, alerted or closed by
asking. It judges by the rule alone: the recheck delay, the spike guard and staleness
(which need a real quote path) do not apply.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Exists, OuterRef, Q

from positions.choices import CloseCommandStatus, CloseReason, PositionStatus
from positions.closes import LOT_STEP
from positions.exit_plan import PARTIAL_TP, STOP_MOVED, ExitPlan, PathQuote, PlanState, plan_advance
from positions.models import CloseCommand, OpenPosition, SignalPlan
from positions.standing_orders import REASON_FOR_KIND
from positions.watched import exit_plan, trailing_distance
from signals_app.hidden_levels import HiddenLevels, parse_hidden_levels
from signals_app.models import Instrument, Signal

# What a plan's exit or partial take-profit closes with (the scanner's close reasons).
CLOSE_REASON_FOR = {**REASON_FOR_KIND, PARTIAL_TP: CloseReason.PARTIAL_TP}


@dataclass(frozen=True)
class QuoteSeen:
    """A quote of the owner's feed as a plan recorded it (``PathQuote.as_json``)."""

    bid: Decimal
    ask: Decimal
    at: datetime | None  # the feed's time

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> QuoteSeen | None:
        if not data:
            return None
        ts = data.get("ts")
        # Read back from encrypted JSON, numbers are Decimals.
        at = datetime.fromtimestamp(float(ts), tz=UTC) if isinstance(ts, int | float | Decimal) else None
        return cls(Decimal(data["bid"]), Decimal(data["ask"]), at)


@dataclass(frozen=True)
class PlanStatus:
    """A signal's exit plan and its live state, for the owner (it reveals levels)."""

    plan: ExitPlan
    state: PlanState
    partial_quotes: tuple[tuple[int, QuoteSeen | None], ...]  # each partial hit, with its quote
    exit_quote: QuoteSeen | None
    exited_by: str

    @property
    def effective_stop(self) -> Decimal | None:
        return self.state.effective_stop(self.plan)[0]

    @property
    def stop_set_by(self) -> str | None:
        """``sl`` (the owner's level), ``trailing`` or ``breakeven``; None without a stop."""
        return self.state.effective_stop(self.plan)[1] if self.effective_stop is not None else None


def plan_status(*, signal: Signal) -> PlanStatus:
    """The plan as the scanner sees it. Raises what decrypting and parsing ``owner_only``
    raise (``InvalidToken``, ``HiddenLevelsError``)."""
    levels = parse_hidden_levels(signal.owner_only)
    instrument = signal.instrument
    plan = exit_plan(
        levels,
        side=signal.side,
        entry=signal.entry_price,
        pip_size=instrument.pip_size,
        trailing=_trailing_distance(levels, instrument),
    )
    stored = (
        SignalPlan.objects.filter(signal_id=signal.pk)
        .values_list("state", "exit_quote", "partials_hit", "exited_by")
        .first()
    )
    if stored is None:
        return PlanStatus(plan, PlanState(), (), None, "")
    state_json, exit_quote, partials_hit, exited_by = stored
    state = PlanState.from_json(state_json)
    quotes = {int(index): quote for index, quote in (partials_hit or {}).items()}
    return PlanStatus(
        plan=plan,
        state=state,
        partial_quotes=tuple(
            (index, QuoteSeen.from_json(quotes.get(index)))
            for index in sorted({*state.partials_hit, *quotes})
        ),
        exit_quote=QuoteSeen.from_json(exit_quote),
        exited_by=exited_by,
    )


def _trailing_distance(levels: HiddenLevels, instrument: Instrument) -> Decimal | None:
    """As the scanner's, but a missing ATR raises no alert: asking writes nothing."""
    return trailing_distance(levels, instrument_id=instrument.pk, pip_size=instrument.pip_size, alert=False)


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
    # What this quote crosses: an exit kind (sl, tp, trailing, breakeven) or partial_tp.
    breach_type: str | None
    partials_triggered: tuple[int, ...]  # the partial take-profits this quote reaches
    # Why the plan would close, as a close reason (stop_loss, take_profit, trailing, ...):
    # this quote's crossing, or the exit that had already ended the plan.
    level: str | None
    open_positions: int  # how many would get a close command now
    # The plan after the quote.
    exit_kind: str | None  # what ended it (before or by this quote); None while it runs
    plan_ended: bool
    effective_stop: Decimal | None
    stop_set_by: str | None  # sl (the owner's level), trailing or breakeven
    stop_moved: bool  # this quote would move the stop
    best: Decimal | None  # best price since publication (tracked for trailing and breakeven)
    partials_hit: tuple[int, ...]
    status: PlanStatus  # the plan as it stood before the quote

    @property
    def breach_detected(self) -> bool:
        return self.breach_type is not None

    @property
    def would_close(self) -> bool:
        return self.level is not None


def breach_test(*, signal: Signal, bid: Decimal, ask: Decimal, now: float | None = None) -> BreachTest:
    status = plan_status(signal=signal)
    plan, before = status.plan, status.state
    at = time.time() if now is None else now
    quote = PathQuote(seq=before.last_seq + 1, bid=bid, ask=ask, ts=at, received_at=at)
    after, events = plan_advance(plan, before, [quote])  # the rule alone: no recheck delay
    crossed = next((event for event in events if event.kind != STOP_MOVED), None)
    partials = tuple(event.partial_index for event in events if event.partial_index is not None)
    closing = after.exit_kind or (PARTIAL_TP if partials else "")
    positions = OpenPosition.objects.filter(
        signal=signal, status=PositionStatus.OPEN, client__auto_close_enabled=True
    )
    if after.exit_kind:
        open_positions = positions.count()
    elif partials:
        open_positions = positions.filter(_partial_due(plan, partials)).count()
    else:
        open_positions = 0
    stop, stop_rule = after.effective_stop(plan)
    return BreachTest(
        side=signal.side,
        bid=bid,
        ask=ask,
        judged_price=plan.price_of(quote),
        sl=plan.sl,
        tp=plan.tp,
        tolerance=plan.tolerance,
        breach_type=crossed.kind if crossed else None,
        partials_triggered=partials,
        level=CLOSE_REASON_FOR[closing].value if closing else None,
        open_positions=open_positions,
        exit_kind=after.exit_kind or None,
        plan_ended=bool(after.exit_kind),
        effective_stop=stop,
        stop_set_by=None if stop is None else stop_rule,
        stop_moved=any(event.kind == STOP_MOVED for event in events),
        best=after.best,
        partials_hit=after.partials_hit,
        status=status,
    )


def _partial_due(plan: ExitPlan, indexes: tuple[int, ...]) -> Q:
    """Positions one of these partials would close part of (as the claim sizes it:
    not taken before, and at least one lot step of the original volume)."""
    due = Q()
    for index in indexes:
        taken = CloseCommand.objects.filter(
            position=OuterRef("pk"),
            partial_index=index,
            status__in=[
                CloseCommandStatus.PENDING,
                CloseCommandStatus.DELIVERED,
                CloseCommandStatus.EXECUTED,
            ],
        )
        due |= Q(volume__gte=LOT_STEP / plan.partials[index][1]) & ~Exists(taken)
    return due


def live_position_counts() -> tuple[dict[str, int], int]:
    """Open positions per instrument (every instrument, none open included) and active
    close commands, for the gauges."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.symbol, count(p.id) FROM signals_app_instrument i LEFT JOIN positions_openposition p "
            "ON p.instrument_id = i.id AND p.status = %s GROUP BY i.symbol",
            [PositionStatus.OPEN],
        )
        per_instrument = dict(cursor.fetchall())
        cursor.execute("SELECT count(*) FROM positions_closecommand WHERE status IN ('pending', 'delivered')")
        (pending,) = cursor.fetchone()
    return per_instrument, pending
