"""The owner's price feed: quotes in (feed API, replay), the latest bid/ask per
instrument kept in Redis, and a sweep of each instrument that moved.

A quote replaces the stored one only if it is newer (compare-and-set in one
Lua script), so batches arriving out of order never move the price back.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import dataclass
from decimal import Decimal

from celery import current_app
from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from core.errors import DomainError
from core.redis import get_redis, get_script
from positions.candles import candles_record
from positions.choices import PositionStatus
from positions.models import OpenPosition
from signals_app.models import Instrument

logger = logging.getLogger(__name__)

KEY = "veilstop:quote:{symbol}"
# Every accepted quote since the sweeps last looked (positions.quote_path reads it).
PATH_KEY = "veilstop:quote-path:{symbol}"
# A path longer than this means sweeps stopped for a long while: the oldest quotes go.
PATH_CAP = 20_000
# Set while a quote-triggered sweep of the instrument is queued: quotes in between queue no more.
SWEEP_QUEUED_KEY = "veilstop:scan-queued:{symbol}"
SWEEP_INSTRUMENT_TASK = "positions.sweep_instrument"  # positions.tasks runs it; sent here by name

# KEYS[1] = the batch's record ("" for none), then per quote its hash and its quote path
# (see positions.quote_path). ARGV[1..5] = received_at, max age, max jump, path cap,
# sequence base; ARGV[6] = how long the batch record is kept; then bid, ask, ts per quote.
# Returns the stored flags ("1"/"0" per quote) and whether the batch had been applied before.
#
# The whole batch is one script, so Redis applies all of it or none of it. Its record
# (the flags, later a mark once its bars are in PostgreSQL) makes a batch sent again,
# by a feed retrying after a 503 or a lost answer, a replay: nothing is stored twice,
# no sequence number or spike flag is spent again, and the answer is the first one's.
#
# Per quote: it replaces the held one only if it is newer. A quote fresh on arrival also
# joins the path, numbered (seq) and flagged when it jumped beyond the spike limit from
# the quote before; seq is never below the arrival time in microseconds, so it keeps
# growing across a Redis restart that lost (or rolled back) the counter.
_STORE_BATCH = """
if KEYS[1] ~= '' then
    local recorded = redis.call('HMGET', KEYS[1], 'stored', 'bars')
    if recorded[1] then
        return {recorded[1], recorded[2] or '0', 1}
    end
end
local flags = {}
for i = 0, (#KEYS - 1) / 2 - 1 do
    local quote_key, path_key = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
    local bid, ask, ts = ARGV[7 + 3 * i], ARGV[8 + 3 * i], ARGV[9 + 3 * i]
    local current = redis.call('HMGET', quote_key, 'bid', 'ask', 'ts')
    if current[3] and tonumber(current[3]) >= tonumber(ts) then
        flags[#flags + 1] = '0'
    else
        flags[#flags + 1] = '1'
        redis.call('HSET', quote_key, 'bid', bid, 'ask', ask, 'ts', ts, 'received_at', ARGV[1])
        if tonumber(ARGV[1]) - tonumber(ts) <= tonumber(ARGV[2]) then
            local spike = 0
            if current[1] then
                local previous_mid = (tonumber(current[1]) + tonumber(current[2])) / 2
                local mid = (tonumber(bid) + tonumber(ask)) / 2
                if previous_mid > 0 and math.abs(mid - previous_mid) / previous_mid > tonumber(ARGV[3]) then
                    spike = 1
                end
            end
            local seq = redis.call('HINCRBY', quote_key, 'seq', 1)
            if seq < tonumber(ARGV[5]) then
                seq = tonumber(ARGV[5])
                redis.call('HSET', quote_key, 'seq', ARGV[5])
            end
            local entry = table.concat({string.format('%.0f', seq), bid, ask, ts, ARGV[1], spike}, '|')
            redis.call('RPUSH', path_key, entry)
            redis.call('LTRIM', path_key, -tonumber(ARGV[4]), -1)
        end
    end
end
local stored = table.concat(flags)
if KEYS[1] ~= '' then
    redis.call('HSET', KEYS[1], 'stored', stored)
    redis.call('EXPIRE', KEYS[1], tonumber(ARGV[6]))
end
return {stored, '0', 0}
"""
# A feed batch's record: how it was stored, and whether its bars were written.
BATCH_KEY = "veilstop:feed-batch:{digest}"
# Longer than any feed keeps retrying one batch; a batch sent again after this is
# judged afresh, and its quotes, no longer newer than the held ones, are ignored.
BATCH_MEMORY_SECONDS = 600


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


@dataclass(frozen=True)
class StoredBatch:
    stored: list[bool]  # per quote, in the order given: whether it was newer than the held one
    replayed: bool  # the batch had been applied before: nothing was stored this time
    bars_recorded: bool  # a replay whose minute bars are already in PostgreSQL


def quotes_store_batch(quotes: list[Quote], *, received_at: float, batch_key: str = "") -> StoredBatch:
    """Store each quote, in order, if it is newer than the one held: the whole batch in
    one script (all or nothing), remembered under ``batch_key`` when one is given."""
    keys = [batch_key]
    args = [
        repr(received_at),
        str(settings.QUOTE_MAX_AGE_SECONDS),
        str(settings.SPIKE_MAX_JUMP_FRACTION),
        str(PATH_CAP),
        str(int(received_at * 1_000_000)),
        str(BATCH_MEMORY_SECONDS),
    ]
    for quote in quotes:
        keys += [KEY.format(symbol=quote.instrument), PATH_KEY.format(symbol=quote.instrument)]
        args += [str(quote.bid), str(quote.ask), repr(quote.ts)]
    flags, bars, replayed = get_script(_STORE_BATCH)(keys=keys, args=args)
    return StoredBatch(
        stored=[flag == ord("1") for flag in flags],
        replayed=bool(replayed),
        bars_recorded=bars == b"1",
    )


def quotes_store(quotes: list[Quote], *, received_at: float) -> list[bool]:
    """Store each quote, in order, if it is newer than the one held; say which were."""
    return quotes_store_batch(quotes, received_at=received_at).stored


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


def quotes_ingest(*, quotes: list[Quote], source: str = "") -> QuoteBatchResult:
    """Store the owner's quotes (from the feed API or a replay): the latest per
    instrument and the quote path in Redis, the minute bars in PostgreSQL; then
    sweep at once every instrument that moved and has live positions.

    An unknown instrument rejects the whole batch: nothing is stored. Redis takes
    the batch whole or not at all; a store failing after it (PostgreSQL gone
    mid-request: the feed is answered 503) leaves the batch's record behind, so the
    feed's retry of the same batch from the same ``source`` stores nothing again,
    finishes what is missing (the bars, unless marked written; the sweeps) and is
    answered what the first attempt would have been.
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
    batch_key = BATCH_KEY.format(digest=_batch_digest(source, ordered))
    batch = quotes_store_batch(ordered, received_at=received_at, batch_key=batch_key)
    stored = [quote for quote, kept in zip(ordered, batch.stored, strict=True) if kept]
    if not batch.bars_recorded:
        candles_record(instrument_ids_by_symbol=known, quotes=stored)
        # A failure between the bars' commit and this mark makes a retry count those
        # quotes twice in their bars (prices unaffected, see candles_record).
        get_redis().hset(batch_key, "bars", "1")
    for symbol in sorted({quote.instrument for quote in stored}):
        if OpenPosition.objects.filter(
            instrument__symbol=symbol, status__in=[PositionStatus.OPEN, PositionStatus.CLOSING]
        ).exists():
            sweep_instrument_soon(symbol)
    return QuoteBatchResult(accepted=len(stored), ignored=len(quotes) - len(stored))


def _batch_digest(source: str, ordered: list[Quote]) -> str:
    """The same quotes from the same source are the same batch, however often sent."""
    text = "\n".join(
        [source, *(f"{quote.instrument}|{quote.bid}|{quote.ask}|{quote.ts!r}" for quote in ordered)]
    )
    return hashlib.sha256(text.encode()).hexdigest()


def sweep_instrument_soon(symbol: str) -> None:
    """After the commit, queue a sweep of one instrument unless one is already queued
    (debounce). Sent by name: the task module imports this one, not the other way.

    Best effort: what it follows (a stored quote, a fill, a close) is committed, and
    the periodic sweep judges the instrument within POSITION_MONITOR_INTERVAL_SECONDS
    anyway, so a broker or Redis that is down costs that delay, not an error answer
    for a write that happened."""

    def queue() -> None:
        debounce = SWEEP_QUEUED_KEY.format(symbol=symbol)
        try:
            if get_redis().set(debounce, 1, nx=True, ex=5):
                current_app.send_task(SWEEP_INSTRUMENT_TASK, args=[symbol])
        except (BrokerError, RedisError) as error:
            logger.warning("sweep of %s not queued (the periodic sweep will judge it): %s", symbol, error)
            with contextlib.suppress(RedisError):
                get_redis().delete(debounce)  # so the next quote tries again

    transaction.on_commit(queue)
