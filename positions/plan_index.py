"""The book's index (``positions.plan_book``): one side's plans ordered by the prices
at which a quote would change them, so a sweep finds by range the plans a path can
change.

For a buy, a plan can change only if the path's lowest bid reaches its effective
stop (less the tolerance), its highest bid reaches its nearest unhit target (plus
the tolerance), or, for a stop that trails or goes to breakeven, its highest bid
beats the best price so far; mirrored for a sell on the ask. Keys are floats and
the path's extremes are widened by a margin, so the index may offer a plan that
nothing changes (the walk decides, in Decimal) but never misses one.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right, insort
from dataclasses import dataclass

from positions.exit_plan import BUY, ExitPlan, PathQuote, PlanState


@dataclass(frozen=True)
class Extremes:
    """The lowest and highest bid and ask of a path (what the index is asked)."""

    low_bid: float
    high_bid: float
    low_ask: float
    high_ask: float

    @classmethod
    def of(cls, quotes: list[PathQuote]) -> Extremes | None:
        if not quotes:
            return None
        bids = [float(quote.bid) for quote in quotes]
        asks = [float(quote.ask) for quote in quotes]
        return cls(_down(min(bids)), _up(max(bids)), _down(min(asks)), _up(max(asks)))


def _down(value: float) -> float:
    return value - 1e-9 * max(1.0, abs(value))


def _up(value: float) -> float:
    return value + 1e-9 * max(1.0, abs(value))


class _Sorted:
    """Signal ids ordered by a float key, updated one id at a time."""

    def __init__(self) -> None:
        self.keys: list[tuple[float, int]] = []
        self.key_of: dict[int, float] = {}

    def put(self, signal_id: int, key: float | None) -> None:
        self.drop(signal_id)
        if key is not None:
            insort(self.keys, (key, signal_id))
            self.key_of[signal_id] = key

    def drop(self, signal_id: int) -> None:
        old = self.key_of.pop(signal_id, None)
        if old is not None:
            del self.keys[bisect_left(self.keys, (old, signal_id))]

    def at_least(self, value: float) -> list[int]:
        return [signal_id for _, signal_id in self.keys[bisect_left(self.keys, (value, -1)) :]]

    def at_most(self, value: float) -> list[int]:
        return [signal_id for _, signal_id in self.keys[: bisect_right(self.keys, (value, math.inf))]]


class SideIndex:
    """One side's plans by the prices at which a quote would change them."""

    def __init__(self, side: str) -> None:
        self.buy = side == BUY
        self.stop, self.target, self.best = _Sorted(), _Sorted(), _Sorted()

    def put(self, signal_id: int, plan: ExitPlan, state: PlanState, *, best_moves_stop: bool) -> None:
        """``best_moves_stop``: a new best price may move the stop (trailing by pips,
        breakeven); an ATR trailing stop is walked every sweep instead."""
        tolerance = plan.tolerance
        sign = -1 if self.buy else 1
        stop = state.effective_stop(plan)[0]
        self.stop.put(signal_id, None if stop is None else float(stop + sign * tolerance))
        targets = [plan.tp] if plan.tp is not None else []
        targets += [level for i, (level, _) in enumerate(plan.partials) if i not in state.partials_hit]
        nearest = (min if self.buy else max)(targets) if targets else None
        self.target.put(signal_id, None if nearest is None else float(nearest - sign * tolerance))
        best = None if state.best is None else float(state.best)
        self.best.put(signal_id, (best if best is not None else sign * math.inf) if best_moves_stop else None)

    def drop(self, signal_id: int) -> None:
        for index in (self.stop, self.target, self.best):
            index.drop(signal_id)

    def reached(self, path: Extremes) -> set[int]:
        if self.buy:  # judged on the bid
            found = self.stop.at_least(path.low_bid) + self.target.at_most(path.high_bid)
            found += self.best.at_most(path.high_bid)
        else:  # judged on the ask
            found = self.stop.at_most(path.high_ask) + self.target.at_least(path.low_ask)
            found += self.best.at_least(path.low_ask)
        return set(found)
