"""The owner's exit plan for one signal, advanced quote by quote. Pure (no Django).

The plan is the owner's trade: every client position of the signal follows it.
``plan_advance`` walks the owner's quotes since the last look, in arrival order,
and returns the plan's new live state and what happened:

1. a quote is judged where the trade would close: the bid for a buy, the ask
   for a sell;
2. first against the plan as it stood before the quote: the effective stop
   (``sl``, or tighter where trailing or breakeven moved it), the target
   (``tp``) and each partial take-profit not yet hit. A crossed stop or target
   ends the plan (one exit, whichever the path crossed first); a crossed
   partial is recorded (each once);
3. then the quote may move the stop: the best price since publication feeds
   breakeven (after ``breakeven_trigger`` of favourable move, to entry ±
   offset) and trailing (after ``trailing_activation``, ``trailing_distance``
   behind the best); the stop only ever tightens;
4. with a recheck delay, a crossing of the stop or the target counts once a
   quote at least that much newer still crosses the same kind of level; a
   quote in between that does not, resets it. A partial take-profit takes
   profit on its first crossing (a partial is never a loss to confirm).

Spikes and stale quotes never reach this function: the quote path
(``positions.quotes``) leaves out quotes stale on arrival and holds a spike
back until the next quote confirms it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from positions.rules import STOP, TARGET, breach, closing_price

BUY = "buy"

# The kinds of exit, as close reasons name them.
SL = "sl"
TP = "tp"
PARTIAL_TP = "partial_tp"
TRAILING = "trailing"
BREAKEVEN = "breakeven"
SIGNAL_EXIT = "signal_exit"

# How the owner's pages name them (test-breach, the live book).
KIND_NAMES = {
    SL: "stop-loss",
    TP: "take-profit",
    TRAILING: "trailing stop",
    BREAKEVEN: "breakeven stop",
    SIGNAL_EXIT: "the strategy's exit",
}


# What reading or walking a stored plan raises when its state no longer fits its levels
# (or a value is malformed): the scanner skips such a plan with an alert, the owner's
# tools say so; never a crash of everything else.
PLAN_UNWALKABLE = (ArithmeticError, ValueError, TypeError, KeyError, IndexError)


@dataclass(frozen=True)
class PathQuote:
    """One accepted quote of the owner's feed, numbered per instrument in arrival order."""

    seq: int
    bid: Decimal
    ask: Decimal
    ts: float
    received_at: float

    def as_json(self, instrument: str) -> dict[str, Any]:
        return {
            "instrument": instrument,
            "bid": str(self.bid),
            "ask": str(self.ask),
            "ts": self.ts,
            "received_at": self.received_at,
            "seq": self.seq,
        }


@dataclass(frozen=True)
class ExitPlan:
    """A signal's hidden exits as price distances and levels (resolved from
    ``owner_only``, the instrument's pip size and, for ATR trailing, the ATR now)."""

    side: str
    entry: Decimal
    tolerance: Decimal = Decimal(0)  # how far beyond a level a quote must go
    sl: Decimal | None = None
    tp: Decimal | None = None
    partials: tuple[tuple[Decimal, Decimal], ...] = ()  # (price, fraction), in owner_only's order
    trailing_distance: Decimal | None = None
    trailing_activation: Decimal = Decimal(0)
    breakeven_trigger: Decimal | None = None
    breakeven_offset: Decimal = Decimal(0)
    max_holding_minutes: int | None = None

    @property
    def moves_stop(self) -> bool:
        return self.trailing_distance is not None or self.breakeven_trigger is not None

    def favour(self, price: Decimal) -> Decimal:
        """How far ``price`` is in the trade's favour from the entry."""
        return price - self.entry if self.side == BUY else self.entry - price

    def tighter(self, first: Decimal | None, second: Decimal | None) -> Decimal | None:
        """The stop nearer the market (higher for a buy, lower for a sell)."""
        if first is None or second is None:
            return first if second is None else second
        return max(first, second) if self.side == BUY else min(first, second)

    # The breach rule (positions.rules) on the price the trade would close at.
    def stop_crossed(self, stop: Decimal, price: Decimal) -> bool:
        return (
            breach(side=self.side, sl=stop, tp=None, bid=price, ask=price, tolerance=self.tolerance) == STOP
        )

    def target_crossed(self, target: Decimal, price: Decimal) -> bool:
        return (
            breach(side=self.side, sl=None, tp=target, bid=price, ask=price, tolerance=self.tolerance)
            == TARGET
        )

    def price_of(self, quote: PathQuote) -> Decimal:
        return closing_price(side=self.side, bid=quote.bid, ask=quote.ask)


@dataclass(frozen=True)
class PlanState:
    """The plan's live state. ``moved_stop`` and ``best`` reveal levels: stored encrypted."""

    last_seq: int = 0
    best: Decimal | None = None
    moved_stop: Decimal | None = None
    moved_by: str = ""  # TRAILING or BREAKEVEN: which rule set moved_stop
    partials_hit: tuple[int, ...] = ()
    exit_kind: str = ""
    pending: tuple[str, float] | None = None  # (kind, first seen ts) under a recheck delay

    def effective_stop(self, plan: ExitPlan) -> tuple[Decimal | None, str]:
        stop = plan.tighter(plan.sl, self.moved_stop)
        if stop is not None and stop == self.moved_stop and stop != plan.sl:
            return stop, self.moved_by
        return stop, SL

    def to_json(self) -> dict[str, Any]:
        return {
            "last_seq": self.last_seq,
            "best": None if self.best is None else str(self.best),
            "moved_stop": None if self.moved_stop is None else str(self.moved_stop),
            "moved_by": self.moved_by,
            "partials_hit": list(self.partials_hit),
            "exit_kind": self.exit_kind,
            "pending": list(self.pending) if self.pending else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> PlanState:
        if not data:
            return cls()
        return cls(
            last_seq=int(data["last_seq"]),
            best=None if data["best"] is None else Decimal(data["best"]),
            moved_stop=None if data["moved_stop"] is None else Decimal(data["moved_stop"]),
            moved_by=data["moved_by"],
            partials_hit=tuple(data["partials_hit"]),
            exit_kind=data["exit_kind"],
            pending=(data["pending"][0], float(data["pending"][1])) if data["pending"] else None,
        )


@dataclass(frozen=True)
class PlanEvent:
    kind: str  # an exit kind, PARTIAL_TP, or "stop_moved"
    quote: PathQuote
    partial_index: int | None = None
    old_stop: Decimal | None = None
    new_stop: Decimal | None = None


STOP_MOVED = "stop_moved"


@dataclass
class _Walk:
    state: PlanState
    events: list[PlanEvent] = field(default_factory=list)


def plan_advance(
    plan: ExitPlan, state: PlanState, path: list[PathQuote], *, recheck_delay_seconds: float = 0
) -> tuple[PlanState, list[PlanEvent]]:
    """Walk ``path`` (quotes newer than ``state.last_seq``) through the plan."""
    walk = _Walk(state)
    for quote in path:
        if quote.seq <= walk.state.last_seq:
            continue
        if not walk.state.exit_kind:
            _judge(plan, walk, quote, recheck_delay_seconds)
            if not walk.state.exit_kind:
                _move_stop(plan, walk, quote)
        walk.state = replace(walk.state, last_seq=quote.seq)
    return walk.state, walk.events


def _crossing(plan: ExitPlan, state: PlanState, price: Decimal) -> str | None:
    stop, stop_kind = state.effective_stop(plan)
    if stop is not None and plan.stop_crossed(stop, price):
        return stop_kind
    if plan.tp is not None and plan.target_crossed(plan.tp, price):
        return TP
    return None


def _judge(plan: ExitPlan, walk: _Walk, quote: PathQuote, recheck_delay_seconds: float) -> None:
    price = plan.price_of(quote)
    kind = _crossing(plan, walk.state, price)
    if kind is not None:
        first_seen = (
            walk.state.pending[1] if walk.state.pending and walk.state.pending[0] == kind else quote.ts
        )
        if quote.ts - first_seen >= recheck_delay_seconds:
            walk.state = replace(walk.state, exit_kind=kind, pending=None)
            walk.events.append(PlanEvent(kind, quote))
            return
        walk.state = replace(walk.state, pending=(kind, first_seen))
    elif walk.state.pending is not None:
        walk.state = replace(walk.state, pending=None)
    hit = [
        index
        for index, (level, _) in enumerate(plan.partials)
        if index not in walk.state.partials_hit and plan.target_crossed(level, price)
    ]
    if hit:
        walk.state = replace(walk.state, partials_hit=tuple(sorted((*walk.state.partials_hit, *hit))))
        walk.events.extend(PlanEvent(PARTIAL_TP, quote, partial_index=index) for index in hit)


def _move_stop(plan: ExitPlan, walk: _Walk, quote: PathQuote) -> None:
    if not plan.moves_stop:
        return
    price = plan.price_of(quote)
    state = walk.state
    best = price if state.best is None or plan.favour(price) > plan.favour(state.best) else state.best
    if best != state.best:
        state = replace(state, best=best)
    gained = plan.favour(best)
    candidates: list[tuple[Decimal, str]] = []
    if plan.breakeven_trigger is not None and gained >= plan.breakeven_trigger:
        offset = plan.breakeven_offset if plan.side == BUY else -plan.breakeven_offset
        candidates.append((plan.entry + offset, BREAKEVEN))
    if plan.trailing_distance is not None and gained >= plan.trailing_activation:
        distance = plan.trailing_distance if plan.side == BUY else -plan.trailing_distance
        candidates.append((best - distance, TRAILING))
    old_stop = state.effective_stop(plan)[0]
    for level, rule in candidates:
        if plan.tighter(level, state.moved_stop) == level and level != state.moved_stop:
            state = replace(state, moved_stop=level, moved_by=rule)
    new_stop = state.effective_stop(plan)[0]
    if new_stop != old_stop:
        walk.events.append(PlanEvent(STOP_MOVED, quote, old_stop=old_stop, new_stop=new_stop))
    walk.state = state
