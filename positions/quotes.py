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
from django.conf import settings
from django.db import transaction

from core.errors import DomainError
from core.redis import get_redis
from positions.candles import candles_record
from positions.choices import PositionStatus
from positions.models import OpenPosition
from signals_app.models import Instrument

KEY = "veilstop:quote:{symbol}"
# Every accepted quote since the sweeps last looked (positions.quote_path reads it).
PATH_KEY = "veilstop:quote-path:{symbol}"
# A path longer than this means sweeps stopped for a long while: the oldest quotes go.
PATH_CAP = 20_000
# Set while a quote-triggered sweep of the instrument is queued: quotes in between queue no more.
SWEEP_QUEUED_KEY = "veilstop:scan-queued:{symbol}"
SWEEP_INSTRUMENT_TASK = "positions.sweep_instrument"  # positions.tasks runs it; sent here by name

# KEYS[1] = quote hash, KEYS[2] = the instrument's quote path (see positions.quote_path).
# ARGV = bid, ask, ts, received_at, max age, max jump, path cap, sequence base. Returns 1 if stored.
# A quote fresh on
# arrival also joins the path, numbered (seq) and flagged when it jumped beyond the spike
# limit from the quote before; seq is never below the arrival time in microseconds, so it
# keeps growing across a Redis restart that lost (or rolled back) the counter.
_SET_IF_NEWER = """
local current = redis.call('HMGET', KEYS[1], 'bid', 'ask', 'ts')
if current[3] and tonumber(current[3]) >= tonumber(ARGV[3]) then
    return 0
end
redis.call('HSET', KEYS[1], 'bid', ARGV[1], 'ask', ARGV[2], 'ts', ARGV[3], 'received_at', ARGV[4])
if tonumber(ARGV[4]) - tonumber(ARGV[3]) > tonumber(ARGV[5]) then
    return 1
end
local spike = 0
if current[1] then
    local previous_mid = (tonumber(current[1]) + tonumber(current[2])) / 2
    local mid = (tonumber(ARGV[1]) + tonumber(ARGV[2])) / 2
    if previous_mid > 0 and math.abs(mid - previous_mid) / previous_mid > tonumber(ARGV[6]) then
        spike = 1
    end
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
if seq < tonumber(ARGV[8]) then
    seq = tonumber(ARGV[8])
    redis.call('HSET', KEYS[1], 'seq', ARGV[8])
end
local entry = table.concat({string.format('%.0f', seq), ARGV[1], ARGV[2], ARGV[3], ARGV[4], spike}, '|')
redis.call('RPUSH', KEYS[2], entry)
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[7]), -1)
return 1
"""


@dataclass(frozen=True)
class Quote:
    instrument: str
    bid: Decimal
    ask: Decimal
    ts: float  # when the price was quoted (unix seconds, the feed's clock)
    received_at: float = 0.0

    def as_json(self) -> dict:
        data: dict = {
            "instrument": self.instrument,
            "bid": str(self.bid),
            "ask": str(self.ask),
            "ts": self.ts,
        }
        if self.received_at:
            data["received_at"] = self.received_at
        return data


def quotes_store(quotes: list[Quote], *, received_at: float) -> list[bool]:
    """Store each quote, in order, if it is newer than the one held; say which were.
    One round trip for the whole batch (a pipeline of one script per quote)."""
    redis = get_redis()
    script = redis.register_script(_SET_IF_NEWER)
    pipeline = redis.pipeline(transaction=False)
    for quote in quotes:
        script(
            keys=[KEY.format(symbol=quote.instrument), PATH_KEY.format(symbol=quote.instrument)],
            args=[
                str(quote.bid),
                str(quote.ask),
                repr(quote.ts),
                repr(received_at),
                str(settings.QUOTE_MAX_AGE_SECONDS),
                str(settings.SPIKE_MAX_JUMP_FRACTION),
                str(PATH_CAP),
                str(int(received_at * 1_000_000)),
            ],
            client=pipeline,
        )
    return [bool(stored) for stored in pipeline.execute()]


def quote_store(quote: Quote, *, received_at: float) -> bool:
    """Store one quote if it is newer than the one held; return whether it was."""
    return quotes_store([quote], received_at=received_at)[0]


def _parse(instrument: str, raw: dict[bytes, bytes]) -> Quote | None:
    if not raw:
        return None
    return Quote(
        instrument=instrument,
        bid=Decimal(raw[b"bid"].decode()),
        ask=Decimal(raw[b"ask"].decode()),
        ts=float(raw[b"ts"]),
        received_at=float(raw[b"received_at"]),
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
    """Store the owner's quotes (from the feed API or a replay): the latest per
    instrument and the quote path in Redis, the minute bars in PostgreSQL; then
    sweep at once every instrument that moved and has live positions.

    An unknown instrument rejects the whole batch: nothing is stored.
    """
    symbols = {quote.instrument for quote in quotes}
    known = dict(Instrument.objects.filter(symbol__in=symbols, active=True).values_list("symbol", "id"))
    unknown = sorted(symbols - set(known))
    if unknown:
        raise DomainError(
            "invalid",
            "Unknown instruments in the batch.",
            fields={"quotes": [f"unknown instrument {symbol!r}" for symbol in unknown[:20]]},
        )
    received_at = time.time()
    ordered = sorted(quotes, key=lambda q: q.ts)
    stored = [
        quote
        for quote, kept in zip(ordered, quotes_store(ordered, received_at=received_at), strict=True)
        if kept
    ]
    candles_record(instrument_ids_by_symbol=known, quotes=stored)
    for symbol in sorted({quote.instrument for quote in stored}):
        if OpenPosition.objects.filter(
            instrument__symbol=symbol, status__in=[PositionStatus.OPEN, PositionStatus.CLOSING]
        ).exists():
            sweep_instrument_soon(symbol)
    return QuoteBatchResult(accepted=len(stored), ignored=len(quotes) - len(stored))


def sweep_instrument_soon(symbol: str) -> None:
    """After the commit, queue a sweep of one instrument unless one is already queued
    (debounce). Sent by name: the task module imports this one, not the other way."""

    def queue() -> None:
        if get_redis().set(SWEEP_QUEUED_KEY.format(symbol=symbol), 1, nx=True, ex=5):
            current_app.send_task(SWEEP_INSTRUMENT_TASK, args=[symbol])

    transaction.on_commit(queue)
