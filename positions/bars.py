"""Price bars and their arithmetic, pure (no Django): tested in microseconds.

``positions.candles`` stores one-minute bars of the owner's bid and reads them
back in any ``Timeframe``; what happens to the numbers lives here:

1. ``minute_bars``: a batch of quotes becomes one bar per (instrument, minute)
   of the quote's own time, open and close chosen by quote time, not arrival
   order, each bar carrying the first and last quote time so the database can
   merge it with what an earlier batch stored;
2. ``true_ranges``: each bar's range widened to the previous close (a gap is
   volatility too);
3. ``average_true_range``: the simple mean of the last ``period`` true ranges,
   as MetaTrader 5's ATR indicator computes it (see its docstring).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from itertools import pairwise


class Timeframe(StrEnum):
    """Bar lengths, named as MetaTrader names them. Bars start on multiples of
    their length from 2000-01-01 00:00 UTC, so D1 is a UTC day (a broker's
    server-time day may start a few hours apart)."""

    M1 = "M1"
    M5 = "M5"
    M15 = "M15"
    H1 = "H1"
    H4 = "H4"
    D1 = "D1"

    @property
    def seconds(self) -> int:
        return _SECONDS[self]


_SECONDS = {
    Timeframe.M1: 60,
    Timeframe.M5: 5 * 60,
    Timeframe.M15: 15 * 60,
    Timeframe.H1: 60 * 60,
    Timeframe.H4: 4 * 60 * 60,
    Timeframe.D1: 24 * 60 * 60,
}


@dataclass(frozen=True)
class Bar:
    """One bar of the owner's bid; ``start`` is when its period begins (UTC)."""

    start: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    quotes: int


@dataclass
class MinuteBar:
    """A one-minute bar built from a batch, with the quote times that chose its
    open (``first_ts``) and close (``last_ts``), for merging with a stored bar."""

    instrument_id: int
    minute: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    quotes: int
    first_ts: float
    last_ts: float

    def add(self, price: Decimal, ts: float) -> None:
        self.high = max(self.high, price)
        self.low = min(self.low, price)
        self.quotes += 1
        # Ties keep arrival order: the earlier arrival opens, the later closes.
        if ts < self.first_ts:
            self.open, self.first_ts = price, ts
        if ts >= self.last_ts:
            self.close, self.last_ts = price, ts


def minute_of(ts: float) -> datetime:
    """The UTC minute a unix time falls in."""
    return datetime.fromtimestamp(ts // 60 * 60, tz=UTC)


def minute_bars(prices: Iterable[tuple[int, Decimal, float]]) -> list[MinuteBar]:
    """One bar per (instrument id, minute) from ``(instrument_id, price, ts)``
    in arrival order, sorted by instrument and minute (the order the database
    locks them in)."""
    bars: dict[tuple[int, datetime], MinuteBar] = {}
    for instrument_id, price, ts in prices:
        key = (instrument_id, minute_of(ts))
        bar = bars.get(key)
        if bar is None:
            bars[key] = MinuteBar(instrument_id, key[1], price, price, price, price, 1, ts, ts)
        else:
            bar.add(price, ts)
    return [bars[key] for key in sorted(bars)]


def true_ranges(bars: Sequence[Bar]) -> list[Decimal]:
    """The true range of each bar after the first (oldest first in, oldest first
    out): max(high, previous close) - min(low, previous close)."""
    return [max(bar.high, previous.close) - min(bar.low, previous.close) for previous, bar in pairwise(bars)]


def average_true_range(bars: Sequence[Bar], period: int) -> Decimal | None:
    """The ATR of the newest bar: the simple mean of the last ``period`` true
    ranges, or None with fewer than ``period + 1`` bars (the oldest one only
    lends its close).

    A simple mean, not Wilder's smoothing: it is what MetaTrader 5's ATR
    indicator (``iATR``) shows, the chart the owner and the clients' EAs read,
    and it depends on the last ``period + 1`` bars only, so the answer does not
    shift with how much history happens to be stored. (Wilder's recursive
    average, as TradingView's default, weighs old bars forever.)
    """
    if period < 1:
        raise ValueError(f"period must be at least 1, got {period}")
    if len(bars) < period + 1:
        return None
    return sum(true_ranges(bars[-(period + 1) :]), Decimal(0)) / period
