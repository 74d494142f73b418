"""The reference model of exit plans: what closes, when, for how much, and which
quote triggered it. Pure Python (no Django), and written apart from
``positions.exit_plan`` on purpose: it is a second implementation of the rules
as /tmp/design.md and the docstring of ``positions.exit_plan`` state them, so
the two can check each other.

Everything is measured in *favour*: how far a price is in the trade's favour
from the entry (``price - entry`` for a buy, ``entry - price`` for a sell). In
favour, a buy and a sell are the same trade: the stop is crossed at or below
it, a target at or above it, and a tighter stop is a larger number.

1. The plan is the owner's trade, followed from publication over the whole
   path, whoever has filled (``plan_timeline``). Per quote, on the bid for a
   buy and the ask for a sell: first against the plan as it stood before the
   quote — the stop (the tighter of ``sl`` and the moved stop) ends the plan,
   else the target ends it, else each partial level reached and not hit
   before is hit; then, unless the plan ended, the best price so far may move
   the stop (breakeven to entry ± offset once the best gained the trigger,
   trailing at its distance behind the best once it gained the activation),
   only ever tighter. A moved stop ends the plan under the name of the rule
   that set it, unless ``sl`` is at least as tight.
2. The server acts at sweeps (``expected_closes``), which the tests schedule
   (``Sweep``: after how many quotes of the path; fills and the EAs'
   acknowledgements in between). A sweep claims, for each open position that
   has no close command still active (one per position), one close:
   - once the plan has ended (by a quote the sweep has seen), whatever the
     position still holds, at once, in ONE close of the exit's kind and quote:
     a partial hit but not claimed yet for that position is part of it (same
     market, one order; a stop must not wait for a partial's ack). A partial
     claimed at an earlier sweep is executed as it is, and the exit closes the
     remainder at the first sweep after its acknowledgement;
   - else, when its time limit (``max_holding_minutes`` from the fill) has come
     by the sweep's clock, the remainder;
   - else the lowest-index partial the plan has hit that the position has not
     had, ``floor(fraction x volume, 0.01)`` capped at the remainder, skipping
     those that round to 0: one partial per position per sweep, the next at a
     later sweep after this one was acknowledged.

Scope, as the tests need it: no tolerance, no recheck delay, no spikes, every
quote fresh, positions of clients with auto-close on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

BUY = "buy"
LOT_STEP = Decimal("0.01")

# Close reasons, as the server's close commands name them.
STOP_LOSS = "stop_loss"
TAKE_PROFIT = "take_profit"
PARTIAL_TP = "partial_tp"
TRAILING = "trailing"
BREAKEVEN = "breakeven"
TIME = "time"


@dataclass(frozen=True)
class Plan:
    """A signal's exits in prices (levels) and price distances."""

    side: str
    entry: Decimal
    sl: Decimal | None = None
    tp: Decimal | None = None
    partials: tuple[tuple[Decimal, Decimal], ...] = ()  # (price, fraction of the original volume)
    trailing_distance: Decimal | None = None
    trailing_activation: Decimal = Decimal(0)
    breakeven_trigger: Decimal | None = None
    breakeven_offset: Decimal = Decimal(0)
    max_holding_minutes: int | None = None

    def favour(self, price: Decimal) -> Decimal:
        return price - self.entry if self.side == BUY else self.entry - price


def plan_from_owner_only(owner_only: dict, *, side: str, entry: Decimal, pip_size: Decimal) -> Plan:
    """The plan in prices from the owner_only schema: pips times the pip size, a
    breakeven ``trigger_fraction`` of the way from entry to tp. Pip trailing only."""

    def price(value) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    def pips(value) -> Decimal:
        return Decimal(str(value)) * pip_size

    tp = price(owner_only.get("tp"))
    trailing = owner_only.get("trailing")
    breakeven = owner_only.get("breakeven")
    trigger = None
    if breakeven is not None:
        if "trigger_pips" in breakeven:
            trigger = pips(breakeven["trigger_pips"])
        else:
            trigger = Decimal(str(breakeven["trigger_fraction"])) * abs(tp - entry)
    return Plan(
        side=side,
        entry=entry,
        sl=price(owner_only.get("sl")),
        tp=tp,
        partials=tuple(
            (Decimal(str(item["price"])), Decimal(str(item["fraction"])))
            for item in owner_only.get("partial_take_profits") or ()
        ),
        trailing_distance=None if trailing is None else pips(trailing["distance_pips"]),
        trailing_activation=pips(trailing.get("activation_pips", 0)) if trailing else Decimal(0),
        breakeven_trigger=trigger,
        breakeven_offset=pips(breakeven.get("offset_pips", 0)) if breakeven else Decimal(0),
        max_holding_minutes=owner_only.get("max_holding_minutes"),
    )


@dataclass(frozen=True)
class Tick:
    """One quote of the owner's feed, in the order it was sent."""

    bid: Decimal
    ask: Decimal
    ts: float


@dataclass(frozen=True)
class Fill:
    """A client's fill, reported after the first ``after`` quotes of the path were sent
    (where in the schedule: a ``Filled`` step)."""

    after: int
    volume: Decimal
    at: float | None = None  # when (for time limits); None: no time limit applies


@dataclass(frozen=True)
class Close:
    """One close command the server must send and the EA execute."""

    time: float  # the clock of the sweep that queued it
    kind: str  # a close reason
    volume: Decimal
    quote: int | None  # index of the triggering quote in the path; None for a time limit
    partial: int | None = None  # which partial take-profit


@dataclass(frozen=True)
class Timeline:
    """What the plan did on the path, whoever had filled."""

    exit_at: int | None = None  # index of the quote that ended the plan
    exit_kind: str = ""
    partial_hits: tuple[tuple[int, int], ...] = ()  # (partial index, quote index), in hit order


def plan_timeline(plan: Plan, path: list[Tick]) -> Timeline:
    """Step 1: walk the owner's trade from publication through every quote."""
    sl = None if plan.sl is None else plan.favour(plan.sl)
    tp = None if plan.tp is None else plan.favour(plan.tp)
    levels = [plan.favour(price) for price, _ in plan.partials]
    best: Decimal | None = None
    moved: Decimal | None = None  # the moved stop, in favour
    moved_by = ""
    hits: list[tuple[int, int]] = []
    for index, tick in enumerate(path):
        here = plan.favour(tick.bid if plan.side == BUY else tick.ask)
        stop, stop_kind = sl, STOP_LOSS
        if moved is not None and (sl is None or moved > sl):
            stop, stop_kind = moved, moved_by
        if stop is not None and here <= stop:
            return Timeline(index, stop_kind, tuple(hits))
        if tp is not None and here >= tp:
            return Timeline(index, TAKE_PROFIT, tuple(hits))
        already = {partial for partial, _ in hits}
        hits.extend(
            (partial, index)
            for partial, level in enumerate(levels)
            if partial not in already and here >= level
        )
        best = here if best is None else max(best, here)
        rules: list[tuple[Decimal, str]] = []
        if plan.breakeven_trigger is not None and best >= plan.breakeven_trigger:
            rules.append((plan.breakeven_offset, BREAKEVEN))
        if plan.trailing_distance is not None and best >= plan.trailing_activation:
            rules.append((best - plan.trailing_distance, TRAILING))
        for level, rule in rules:  # breakeven first: at an equal level, it keeps the name
            if moved is None or level > moved:
                moved, moved_by = level, rule
    return Timeline(None, "", tuple(hits))


def partial_volume(fraction: Decimal, volume: Decimal) -> Decimal:
    return (fraction * volume).quantize(LOT_STEP, rounding=ROUND_FLOOR)


# --- step 2: the sweeps --------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """A sweep, after the first ``seen`` quotes of the path were sent; its clock ``now``
    (for time limits) is the last of those quotes' times unless given. ``settle``: the
    tests' settle loop — the sweep is repeated, every command executed after each, until
    one queues nothing."""

    seen: int
    now: float | None = None
    settle: bool = False


def settled(seen: int, now: float | None = None) -> Sweep:
    return Sweep(seen, now, settle=True)


@dataclass(frozen=True)
class Filled:
    """The fill ``fills[index]`` is reported here."""

    index: int


@dataclass(frozen=True)
class Ack:
    """Every EA executes the close commands queued so far."""


ACK = Ack()
Step = Sweep | Filled | Ack


@dataclass
class _Position:
    fill: Fill
    remaining: Decimal
    closes: list[Close]
    had: set[int]  # partials claimed
    active: Close | None = None  # queued, not executed yet


def _sweep(
    plan: Plan, timeline: Timeline, path: list[Tick], step: Sweep, positions: list[_Position | None]
) -> None:
    """One sweep's claim: per open position without an active command, one close."""
    now = step.now if step.now is not None else (path[step.seen - 1].ts if step.seen else -math.inf)
    ended = timeline.exit_at is not None and timeline.exit_at < step.seen
    hit = sorted((partial, quote) for partial, quote in timeline.partial_hits if quote < step.seen)
    for position in positions:
        if position is None or position.active is not None or position.remaining <= 0:
            continue
        fill = position.fill
        close = None
        if ended:  # whatever the position holds, at once, by the exit: unclaimed partials go with it
            close = Close(now, timeline.exit_kind, position.remaining, timeline.exit_at)
        elif (
            plan.max_holding_minutes
            and fill.at is not None
            and fill.at + plan.max_holding_minutes * 60 <= now
        ):
            close = Close(now, TIME, position.remaining, None)
        else:  # the lowest-index partial hit and not had yet that closes something
            for partial, quote in hit:
                volume = min(partial_volume(plan.partials[partial][1], fill.volume), position.remaining)
                if partial not in position.had and volume > 0:
                    close = Close(now, PARTIAL_TP, volume, quote, partial)
                    position.had.add(partial)
                    break
        if close is not None:
            position.active = close
            position.closes.append(close)


def _ack(positions: list[_Position | None]) -> int:
    """The EAs execute every active command; how many there were."""
    executed = 0
    for position in positions:
        if position is not None and position.active is not None:
            position.remaining -= position.active.volume
            position.active = None
            executed += 1
    return executed


def expected_closes(
    plan: Plan, fills: list[Fill], path: list[Tick], schedule: list[Step]
) -> list[list[Close]]:
    """The close commands each fill gets when the server fills, sweeps and the EAs execute
    as ``schedule`` says, in the order they are queued (the last may not be executed yet)."""
    timeline = plan_timeline(plan, path)
    positions: list[_Position | None] = [None] * len(fills)
    swept = 0  # the most quotes a sweep has seen so far
    for step in schedule:
        if isinstance(step, Filled):
            fill = fills[step.index]
            assert positions[step.index] is None, f"fill {step.index} twice"
            assert swept <= fill.after, (
                f"fill {step.index} after {fill.after} quotes, but a sweep saw {swept}"
            )
            positions[step.index] = _Position(fill, fill.volume, [], set())
        elif isinstance(step, Ack):
            _ack(positions)
        else:
            assert step.seen >= swept, "sweeps see the path in order"
            swept = step.seen
            _sweep(plan, timeline, path, step, positions)
            while step.settle and _ack(positions):
                _sweep(plan, timeline, path, step, positions)
    return [[] if position is None else position.closes for position in positions]
