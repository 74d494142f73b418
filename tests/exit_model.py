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
2. Per position (``expected_closes``), a fill made after the plan ended closes
   at once, by the plan's exit and its quote. Otherwise every partial the plan
   hits, before or after the fill, closes ``floor(fraction x volume, 0.01)``
   of it once (nothing when that is 0); the plan's exit closes the rest; and a
   time limit (``max_holding_minutes`` from the fill) closes the rest when it
   comes first.

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
    """A client's fill, reported after the first ``after`` quotes of the path were sent."""

    after: int
    volume: Decimal
    at: float | None = None  # when (for time limits); None: no time limit applies


@dataclass(frozen=True)
class Close:
    """One close command the server must send and the EA execute."""

    time: float  # when it is due
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


def position_closes(
    plan: Plan, timeline: Timeline, fill: Fill, path: list[Tick], *, until: float = math.inf
) -> list[Close]:
    """Step 2 for one fill, as far as ``until`` (a time limit later than that is not due yet)."""
    filled_at = fill.at if fill.at is not None else (path[fill.after - 1].ts if fill.after else 0.0)

    def due(quote: int) -> float:
        return max(path[quote].ts, filled_at) if quote >= fill.after else filled_at

    if timeline.exit_at is not None and timeline.exit_at < fill.after:
        return [Close(filled_at, timeline.exit_kind, fill.volume, timeline.exit_at)]
    time_limit = (
        filled_at + plan.max_holding_minutes * 60
        if plan.max_holding_minutes and fill.at is not None
        else None
    )
    closes: list[Close] = []
    remaining = fill.volume
    for partial, quote in sorted(timeline.partial_hits, key=lambda hit: (due(hit[1]), hit[0])):
        if time_limit is not None and due(quote) >= time_limit:
            break
        volume = min(partial_volume(plan.partials[partial][1], fill.volume), remaining)
        if volume > 0:
            closes.append(Close(due(quote), PARTIAL_TP, volume, quote, partial))
            remaining -= volume
    if remaining <= 0:
        return closes
    if timeline.exit_at is not None and (time_limit is None or due(timeline.exit_at) < time_limit):
        closes.append(Close(due(timeline.exit_at), timeline.exit_kind, remaining, timeline.exit_at))
    elif time_limit is not None and time_limit <= until:
        closes.append(Close(time_limit, TIME, remaining, None))
    return closes


def expected_closes(
    plan: Plan, fills: list[Fill], path: list[Tick], *, until: float = math.inf
) -> list[list[Close]]:
    """The close commands each fill must get by ``until``, in the order they fall due."""
    timeline = plan_timeline(plan, path)
    return [position_closes(plan, timeline, fill, path, until=until) for fill in fills]
