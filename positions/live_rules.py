"""The live book's arithmetic (no Django): what the latest quote of the owner's feed means
for a position, for a signal's book of positions and for the exit plan's levels. Tested
in microseconds; ``positions.live`` reads the data and calls these.

1. A position is valued where it would close, the price the breach rule judges
   (``positions.rules``): the bid for a buy, the ask for a sell.
2. Its floating P&L is what closing its remaining volume there would realize
   (``rules.realized_pnl``), in its instrument's quote currency: nothing is converted.
3. A distance to a level is in pips from that same price: positive while the level is
   still ahead, negative once the price is beyond it (a crossing a sweep has not judged
   yet, or one waiting out ``BREACH_RECHECK_DELAY_SECONDS``). It is measured to the
   level itself; ``BREACH_PRICE_TOLERANCE_PIPS`` is not added.
4. The levels are the signal's plan as the sweeps left it (``PlanState``): the
   effective stop (the stop-loss, or where trailing or breakeven moved it), the target,
   each partial take-profit (those already hit are marked hit, with no distance). A plan
   that has ended has no levels left to watch: its positions are being closed.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal

from positions.exit_plan import BUY, KIND_NAMES, TP, ExitPlan, PlanState
from positions.rules import closing_price, realized_pnl

STOP, TARGET, PARTIAL = "stop", "target", "partial"
# A level's state.
WATCHING = "watching"  # the price has not reached it
BEYOND = "beyond"  # the price is past it; the next sweep judges it
CONFIRMING = "confirming"  # crossed, waiting for the recheck delay's second quote
HIT = "hit"  # a partial take-profit already taken
NO_QUOTE = "no quote"

PIP_STEP = Decimal("0.1")


def floating_pnl(
    *, side: str, entry: Decimal, volume: Decimal, contract_size: Decimal, bid: Decimal, ask: Decimal
) -> Decimal:
    """What closing ``volume`` lots now would realize, in the quote currency."""
    return realized_pnl(
        side=side,
        entry_price=entry,
        close_price=closing_price(side=side, bid=bid, ask=ask),
        volume=volume,
        contract_size=contract_size,
    )


def book_pnl(
    *,
    side: str,
    volume: Decimal,
    entry_volume: Decimal,
    contract_size: Decimal,
    bid: Decimal,
    ask: Decimal,
) -> Decimal:
    """The floating P&L of several positions of one side and instrument from two sums, so
    a whole book is summed by the database: ``volume`` = Σ vᵢ and ``entry_volume`` =
    Σ eᵢ·vᵢ. Exact, since Σ (p - eᵢ)·vᵢ = p·Σ vᵢ - Σ eᵢ·vᵢ: one position of volume 1 whose
    entry is Σ eᵢ·vᵢ, closed at p·Σ vᵢ."""
    price = closing_price(side=side, bid=bid, ask=ask)
    return realized_pnl(
        side=side,
        entry_price=entry_volume,
        close_price=price * volume,
        volume=Decimal(1),
        contract_size=contract_size,
    )


def pips(distance: Decimal, pip_size: Decimal) -> Decimal:
    """A price distance in pips, to a tenth of a pip."""
    return (distance / pip_size).quantize(PIP_STEP, rounding=ROUND_HALF_EVEN)


def pips_to(*, side: str, kind: str, level: Decimal, price: Decimal, pip_size: Decimal) -> Decimal:
    """How far ``price`` may still move towards ``level`` before reaching it: a buy's
    stop is below it and its targets above, a sell's the other way round."""
    below = kind == STOP
    distance = price - level if below == (side == BUY) else level - price
    return pips(distance, pip_size)


@dataclass(frozen=True)
class LevelView:
    kind: str  # STOP, TARGET or PARTIAL
    label: str  # "stop-loss", "trailing stop", "breakeven stop", "take-profit", "partial TP #0"
    price: Decimal
    pips: Decimal | None  # None: no quote, or a partial already hit
    state: str  # WATCHING, BEYOND, CONFIRMING, HIT or NO_QUOTE


@dataclass(frozen=True)
class PlanView:
    levels: tuple[LevelView, ...]
    ended: str = ""  # the exit that ended the plan, by name ("" while it runs)

    @property
    def stop(self) -> LevelView | None:
        return next((level for level in self.levels if level.kind == STOP), None)

    @property
    def targets(self) -> tuple[LevelView, ...]:
        """The partial take-profits not yet hit, then the take-profit."""
        return tuple(level for level in self.levels if level.kind != STOP and level.state != HIT)


def plan_view(plan: ExitPlan, state: PlanState, *, price: Decimal | None, pip_size: Decimal) -> PlanView:
    """Every level of the plan as it stands, with its distance from ``price`` (the judged
    price; None without a quote) and its state."""
    if state.exit_kind:
        return PlanView(levels=(), ended=KIND_NAMES.get(state.exit_kind, state.exit_kind))
    pending = state.pending[0] if state.pending else None

    def level(kind: str, label: str, at: Decimal, *, confirming: bool = False) -> LevelView:
        if price is None:
            return LevelView(kind, label, at, None, NO_QUOTE)
        distance = pips_to(side=plan.side, kind=kind, level=at, price=price, pip_size=pip_size)
        status = CONFIRMING if confirming else BEYOND if distance < 0 else WATCHING
        return LevelView(kind, label, at, distance, status)

    levels = []
    stop, stop_kind = state.effective_stop(plan)
    if stop is not None:
        name = KIND_NAMES[stop_kind]
        levels.append(level(STOP, name, stop, confirming=pending is not None and pending != TP))
    for index, (at, _) in enumerate(plan.partials):
        label = f"partial TP #{index}"
        if index in state.partials_hit:
            levels.append(LevelView(PARTIAL, label, at, None, HIT))
        else:
            levels.append(level(PARTIAL, label, at))
    if plan.tp is not None:
        levels.append(level(TARGET, KIND_NAMES[TP], plan.tp, confirming=pending == TP))
    return PlanView(levels=tuple(levels))
