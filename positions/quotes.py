"""The owner's price feed: quotes in (feed API, replay), the latest bid/ask per
instrument kept in Redis, and a sweep of each instrument that moved.

A quote replaces the stored one only if it is newer (compare-and-set in one
Lua script), so batches arriving out of order never move the price back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

from celery import current_app
from django.db import transaction

from core.errors import DomainError
from core.redis import get_redis
from positions.choices import PositionStatus
from positions.models import OpenPosition
from signals_app.models import Instrument

KEY = "veilstop:quote:{symbol}"
# Set while a quote-triggered sweep of the instrument is queued: quotes in between queue no more.
SWEEP_QUEUED_KEY = "veilstop:scan-queued:{symbol}"
SWEEP_INSTRUMENT_TASK = "positions.sweep_instrument"  # positions.tasks runs it; sent here by name

# KEYS[1] = quote hash; ARGV = bid, ask, ts, received_at. Returns 1 if stored.
# The replaced quote is kept as prev_*: the spike guard compares the two.
_SET_IF_NEWER = """
local current = redis.call('HMGET', KEYS[1], 'bid', 'ask', 'ts')
if current[3] and tonumber(current[3]) >= tonumber(ARGV[3]) then
    return 0
end
if current[3] then
    redis.call('HSET', KEYS[1], 'prev_bid', current[1], 'prev_ask', current[2], 'prev_ts', current[3])
end
redis.call('HSET', KEYS[1], 'bid', ARGV[1], 'ask', ARGV[2], 'ts', ARGV[3], 'received_at', ARGV[4])
return 1
"""


@dataclass(frozen=True)
class Quote:
    instrument: str
    bid: Decimal
    ask: Decimal
    ts: float  # when the price was quoted (unix seconds, the feed's clock)
    received_at: float = 0.0
    previous: tuple[Decimal, Decimal, float] | None = None  # bid, ask, ts of the quote before

    def as_json(self) -> dict:
        data: dict = {
            "instrument": self.instrument,
            "bid": str(self.bid),
            "ask": str(self.ask),
            "ts": self.ts,
        }
        if self.received_at:
            data["received_at"] = self.received_at
        if self.previous:
            data["previous"] = {
                "bid": str(self.previous[0]),
                "ask": str(self.previous[1]),
                "ts": self.previous[2],
            }
        return data


def quote_store(quote: Quote, *, received_at: float) -> bool:
    """Store ``quote`` if it is newer than the one held; return whether it was."""
    stored = get_redis().eval(
        _SET_IF_NEWER,
        1,
        KEY.format(symbol=quote.instrument),
        str(quote.bid),
        str(quote.ask),
        repr(quote.ts),
        repr(received_at),
    )
    return bool(stored)


def _parse(instrument: str, raw: dict[bytes, bytes]) -> Quote | None:
    if not raw:
        return None
    previous = None
    if b"prev_ts" in raw:
        previous = (
            Decimal(raw[b"prev_bid"].decode()),
            Decimal(raw[b"prev_ask"].decode()),
            float(raw[b"prev_ts"]),
        )
    return Quote(
        instrument=instrument,
        bid=Decimal(raw[b"bid"].decode()),
        ask=Decimal(raw[b"ask"].decode()),
        ts=float(raw[b"ts"]),
        received_at=float(raw[b"received_at"]),
        previous=previous,
    )


def quote_latest(instrument: str) -> Quote | None:
    return _parse(instrument, get_redis().hgetall(KEY.format(symbol=instrument)))


def quotes_latest(instruments: list[str]) -> dict[str, Quote]:
    """The latest quote of each instrument that has one, in one round trip."""
    pipeline = get_redis().pipeline(transaction=False)
    for instrument in instruments:
        pipeline.hgetall(KEY.format(symbol=instrument))
    quotes = (
        _parse(instrument, raw) for instrument, raw in zip(instruments, pipeline.execute(), strict=True)
    )
    return {quote.instrument: quote for quote in quotes if quote is not None}


@dataclass(frozen=True)
class QuoteBatchResult:
    accepted: int
    ignored: int


def quotes_ingest(*, quotes: list[Quote]) -> QuoteBatchResult:
    """Store the owner's quotes (from the feed API or a replay) and sweep at once
    every instrument that moved and has open positions.

    An unknown instrument rejects the whole batch: nothing is stored.
    """
    symbols = {quote.instrument for quote in quotes}
    known = set(Instrument.objects.filter(symbol__in=symbols, active=True).values_list("symbol", flat=True))
    unknown = sorted(symbols - known)
    if unknown:
        raise DomainError(
            "invalid",
            "Unknown instruments in the batch.",
            fields={"quotes": [f"unknown instrument {symbol!r}" for symbol in unknown[:20]]},
        )
    received_at = time.time()
    stored = [
        quote for quote in sorted(quotes, key=lambda q: q.ts) if quote_store(quote, received_at=received_at)
    ]
    for symbol in sorted({quote.instrument for quote in stored}):
        if OpenPosition.objects.filter(instrument__symbol=symbol, status=PositionStatus.OPEN).exists():
            sweep_instrument_soon(symbol)
    return QuoteBatchResult(accepted=len(stored), ignored=len(quotes) - len(stored))


def sweep_instrument_soon(symbol: str) -> None:
    """Queue a sweep of one instrument after the commit, unless one is already queued
    (debounce). Sent by name: the task module imports this one, not the other way."""
    if get_redis().set(SWEEP_QUEUED_KEY.format(symbol=symbol), 1, nx=True, ex=5):
        transaction.on_commit(lambda: current_app.send_task(SWEEP_INSTRUMENT_TASK, args=[symbol]))
