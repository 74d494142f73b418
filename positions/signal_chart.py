"""What a signal's chart shows, read for the owner (it reveals the hidden levels; the
admin view lets only holders of ``signals_app.view_hidden_levels`` ask).

1. the window: the signal's life, from a few bars before its first fill (or its
   publication, with no fill) to a few bars after its last close, or now while a position
   is live; the timeframe by default the shortest that shows all of it in ``MAX_CANDLES``;
2. the candles of the owner's feed in that window (``positions.candles.candles_between``),
   the newest ``MAX_CANDLES`` when there are more;
3. the levels as the scanner reads them (``positions.selectors.plan_status``): entry,
   stop-loss, take-profit, each partial take-profit;
4. the effective stop over time, from what the sweeps recorded: each move (trailing,
   breakeven) is a ``signal.stop_moved`` audit event with the new stop and the quote that
   moved it (``positions.plan_store``), each edit of the levels a
   ``signal.levels_changed`` event; ``stop_steps`` folds them with the exit plan's own
   rule (``PlanState.effective_stop``), never a second copy of it; the last step in
   each bar is drawn (a bar is the chart's finest step);
5. the fills and the executed closes, grouped per bar (a signal may have thousands of
   positions; one marker per bar, side or reason, with the count in its tooltip).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from cryptography.fernet import InvalidToken
from django.db import connection
from django.db.models import Count, Max, Min, Q
from django.utils import timezone

from positions.bars import Bar, Timeframe
from positions.candles import BAR_ORIGIN, candles_between
from positions.choices import LIVE_STATUSES, CloseCommandStatus, CloseReason
from positions.exit_plan import PLAN_UNWALKABLE, SL, ExitPlan, PlanState
from positions.models import OpenPosition
from positions.selectors import PlanStatus, plan_status
from signals_app.choices import AuditAction
from signals_app.hidden_levels import HiddenLevelsError
from signals_app.models import AuditEvent, Signal

MAX_CANDLES = 300  # about 4 px per candle across a 1366 px screen
MARGIN_BARS = 5  # shown before the first fill and after the last close
MAX_STOP_EVENTS = 5000  # records of the stop read for one chart (decrypted one by one)

STOP_MOVED = AuditAction.SIGNAL_STOP_MOVED.value
LEVELS_CHANGED = AuditAction.SIGNAL_LEVELS_CHANGED.value


@dataclass(frozen=True)
class Level:
    kind: str  # entry, sl, tp, partial
    label: str
    price: Decimal


@dataclass(frozen=True)
class StopStep:
    """From ``at`` on, the effective stop was ``price`` (None: no stop), set by ``set_by``."""

    at: datetime
    price: Decimal | None
    set_by: str


@dataclass(frozen=True)
class Mark:
    """Fills (``kind`` the side) or executed closes (``kind`` the close reason) in one bar."""

    at: datetime  # the first of them
    kind: str
    count: int
    price: Decimal  # their mean fill price
    volume: Decimal


@dataclass(frozen=True)
class SignalChart:
    symbol: str
    digits: int
    side: str
    timeframe: Timeframe
    since: datetime
    until: datetime
    bars: list[Bar]
    truncated: bool  # the life holds more than MAX_CANDLES bars of this timeframe: the newest shown
    levels: list[Level] = field(default_factory=list)
    stop_steps: list[StopStep] = field(default_factory=list)
    fills: list[Mark] = field(default_factory=list)
    closes: list[Mark] = field(default_factory=list)
    levels_unreadable: bool = False
    stop_history_capped: bool = False  # more than MAX_STOP_EVENTS moves in the window: the oldest left out


def default_timeframe(span: timedelta) -> Timeframe:
    """The shortest timeframe that shows ``span`` in ``MAX_CANDLES`` bars (the longest if none)."""
    for timeframe in Timeframe:
        if span.total_seconds() <= (MAX_CANDLES - 2 * MARGIN_BARS) * timeframe.seconds:
            return timeframe
    return list(Timeframe)[-1]


@dataclass(frozen=True)
class Life:
    start: datetime  # first fill, or publication
    end: datetime  # last close, or now while a position is live
    live: bool


def signal_life(signal: Signal, *, now: datetime | None = None) -> Life:
    now = now or timezone.now()
    positions = OpenPosition.objects.filter(signal_id=signal.pk).aggregate(
        first_fill=Min("opened_at"),
        last_close=Max("closed_at"),  # set when a position is closed in full, by us or outside
        live=Count("pk", filter=Q(status__in=LIVE_STATUSES)),
    )
    if positions["first_fill"] is None:
        return Life(signal.published_at or signal.created_at, now, True)
    if positions["live"] or positions["last_close"] is None:
        return Life(positions["first_fill"], now, True)
    return Life(positions["first_fill"], max(positions["last_close"], positions["first_fill"]), False)


def signal_chart(
    *, signal: Signal, timeframe: Timeframe | None = None, now: datetime | None = None
) -> SignalChart:
    now = now or timezone.now()
    life = signal_life(signal, now=now)
    timeframe = timeframe or default_timeframe(life.end - life.start)
    margin = timedelta(seconds=MARGIN_BARS * timeframe.seconds)
    since = life.start - margin
    until = now if life.live else min(now, life.end + margin)
    instrument = signal.instrument
    bars = candles_between(
        instrument_id=instrument.pk, timeframe=timeframe, since=since, until=until, limit=MAX_CANDLES + 1
    )
    truncated = len(bars) > MAX_CANDLES
    bars = bars[-MAX_CANDLES:]
    if truncated:
        since = bars[0].start
    chart = SignalChart(
        symbol=instrument.symbol,
        digits=instrument.digits,
        side=signal.side,
        timeframe=timeframe,
        since=since,
        until=until,
        bars=bars,
        truncated=truncated,
        fills=_marks(_FILLS, signal.pk, timeframe, since, until),
        closes=_marks(_CLOSES, signal.pk, timeframe, since, until),
    )
    try:
        status = plan_status(signal=signal)
        plan = status.plan
        events, capped = _stop_events(signal.pk, since, until)
        # Capped: where the stop stood before the oldest event kept is not known; the line starts there.
        start = min((event.at for event in events), default=since) if capped else since
        steps = thin_steps(stop_steps(plan, since=max(start, since), events=events), timeframe)
        ended_at = _plan_ended_at(signal.pk, status) if status.state.exit_kind else None
    except (InvalidToken, HiddenLevelsError, KeyError, TypeError, ArithmeticError, *PLAN_UNWALKABLE):
        # Candles, fills and closes still tell the story; the page says the levels (or the
        # stop's recorded moves) do not read.
        return replace(chart, levels_unreadable=True)
    if ended_at is not None and steps:
        steps = [step for step in steps if step.at <= ended_at]
        steps.append(StopStep(ended_at, None, ""))  # the plan ended: no stop after
    return replace(chart, levels=plan_levels(plan), stop_steps=steps, stop_history_capped=capped)


def _plan_ended_at(signal_id: int, status: PlanStatus) -> datetime | None:
    """When the plan ended: its exit quote's time, or for the strategy's exit (no quote) when
    it was asked for."""
    if status.exit_quote is not None and status.exit_quote.at is not None:
        return status.exit_quote.at
    return (
        AuditEvent.objects.filter(
            subject_type="signal", subject_id=signal_id, action=AuditAction.SIGNAL_EXIT_REQUESTED
        )
        .order_by("-occurred_at")
        .values_list("occurred_at", flat=True)
        .first()
    )


def plan_levels(plan: ExitPlan) -> list[Level]:
    levels = [Level("entry", "Entry", plan.entry)]
    if plan.sl is not None:
        levels.append(Level("sl", "Stop-loss", plan.sl))
    if plan.tp is not None:
        levels.append(Level("tp", "Take-profit", plan.tp))
    for index, (price, fraction) in enumerate(plan.partials):
        share = f"{(fraction * 100).normalize():f}%"
        levels.append(Level("partial", f"Partial TP #{index} ({share})", price))
    return levels


@dataclass(frozen=True)
class StopEvent:
    at: datetime
    action: str  # STOP_MOVED or LEVELS_CHANGED
    secret: dict[str, Any]


def stop_steps(plan: ExitPlan, *, since: datetime, events: Iterable[StopEvent]) -> list[StopStep]:
    """The effective stop from ``since`` on, from the recorded moves and level edits in time
    order (those before ``since`` set where it starts). ``plan`` holds the levels as they are
    now; a stop-loss edited since then started at the first edit's old value."""
    events = sorted(events, key=lambda event: event.at)
    edits = [event for event in events if event.action == LEVELS_CHANGED]
    sl = _sl(edits[0].secret.get("old")) if edits else plan.sl
    state = PlanState()
    steps: list[StopStep] = []
    for event in [StopEvent(since, "", {}), *events]:
        if event.action == LEVELS_CHANGED:
            sl = _sl(event.secret.get("new"))
        elif event.action == STOP_MOVED:
            state = PlanState(moved_stop=Decimal(str(event.secret["new_stop"])), moved_by=_mover(event))
        price, set_by = state.effective_stop(ExitPlan(side=plan.side, entry=plan.entry, sl=sl))
        step = StopStep(max(event.at, since), price, set_by if price is not None else "")
        if steps and steps[-1].at == step.at:
            steps[-1] = step
        elif not steps or (steps[-1].price, steps[-1].set_by) != (step.price, step.set_by):
            steps.append(step)
    return steps if any(step.price is not None for step in steps) else []


def _sl(levels: dict[str, Any] | None) -> Decimal | None:
    value = (levels or {}).get("sl")
    return None if value in (None, "") else Decimal(str(value))


def _mover(event: StopEvent) -> str:
    return str(event.secret.get("moved_by") or SL)


# The latest event of each action recorded before the window (where the stop starts from).
_STOP_EVENTS_BEFORE = """
SELECT DISTINCT ON (action) id FROM signals_app_auditevent
 WHERE subject_type = 'signal' AND subject_id = %(signal_id)s
   AND action IN (%(moved)s, %(changed)s) AND occurred_at < %(since)s
 ORDER BY action, occurred_at DESC, id DESC
"""
# The newest events recorded since: a record's time is its sweep's transaction's, a little
# after its quote's (quotes are at most QUOTE_MAX_AGE_SECONDS old when judged).
_STOP_EVENTS_SINCE = """
SELECT id FROM signals_app_auditevent
 WHERE subject_type = 'signal' AND subject_id = %(signal_id)s
   AND action IN (%(moved)s, %(changed)s) AND occurred_at >= %(since)s
 ORDER BY occurred_at DESC, id DESC
 LIMIT %(limit)s
"""
RECORD_SLACK = timedelta(minutes=1)


def _stop_events(signal_id: int, since: datetime, until: datetime) -> tuple[list[StopEvent], bool]:
    """The recorded moves and edits of the stop up to ``until`` (by the quote's time), and
    whether the window held more than ``MAX_STOP_EVENTS`` (its oldest are then left out)."""
    params = {
        "since": since - RECORD_SLACK,
        "signal_id": signal_id,
        "moved": STOP_MOVED,
        "changed": LEVELS_CHANGED,
        "limit": MAX_STOP_EVENTS + 1,
    }
    with connection.cursor() as cursor:
        cursor.execute(_STOP_EVENTS_SINCE, params)
        recent = [row[0] for row in cursor.fetchall()]
        capped = len(recent) > MAX_STOP_EVENTS
        before = []
        if not capped:
            cursor.execute(_STOP_EVENTS_BEFORE, params)
            before = [row[0] for row in cursor.fetchall()]
    events = []
    rows = AuditEvent.objects.filter(pk__in=[*before, *recent[:MAX_STOP_EVENTS]])
    for event in rows.only("occurred_at", "action", "data", "secret_data"):
        secret = dict(event.secret_data or {})
        secret.setdefault("moved_by", event.data.get("moved_by"))
        at = _moved_at(event.occurred_at, secret)
        if at <= until:
            events.append(StopEvent(at, event.action, secret))
    return events, capped


def thin_steps(steps: list[StopStep], timeframe: Timeframe) -> list[StopStep]:
    """The last step in each bar (the first step kept as it is): a bar is the finest the
    chart draws, and a trailing stop may move on every sweep."""
    kept: dict[int, StopStep] = {}
    for index, step in enumerate(steps):
        bar = -1 if index == 0 else int((step.at - BAR_ORIGIN).total_seconds() // timeframe.seconds)
        kept[bar] = step
    return list(kept.values())


def _moved_at(recorded: datetime, secret: dict[str, Any]) -> datetime:
    """When the quote that moved the stop was quoted (the candles' clock), else the record's time."""
    ts = (secret.get("at_quote") or {}).get("ts")
    return datetime.fromtimestamp(float(ts), tz=UTC) if ts is not None else recorded


_FILLS = """
SELECT min(opened_at), side, count(*), avg(entry_price), sum(volume)
  FROM positions_openposition
 WHERE signal_id = %(signal_id)s AND opened_at >= %(since)s AND opened_at <= %(until)s
 GROUP BY date_bin(%(step)s, opened_at, %(origin)s), side
 ORDER BY 1
"""
_CLOSES = """
SELECT min(c.completed_at), c.reason, count(*), avg((c.result->>'close_price')::numeric), sum(c.volume)
  FROM positions_closecommand c JOIN positions_openposition p ON p.id = c.position_id
 WHERE p.signal_id = %(signal_id)s AND c.status = %(executed)s
   AND c.completed_at >= %(since)s AND c.completed_at <= %(until)s
 GROUP BY date_bin(%(step)s, c.completed_at, %(origin)s), c.reason
 ORDER BY 1
"""


def _marks(sql: str, signal_id: int, timeframe: Timeframe, since: datetime, until: datetime) -> list[Mark]:
    params = {
        "signal_id": signal_id,
        "since": since,
        "until": until,
        "step": timedelta(seconds=timeframe.seconds),
        "origin": BAR_ORIGIN,
        "executed": CloseCommandStatus.EXECUTED.value,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    return [Mark(*row) for row in rows if row[3] is not None]


def close_reason_label(reason: str) -> str:
    return str(CloseReason(reason).label) if reason in CloseReason.values else reason
