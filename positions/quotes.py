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
from dataclasses import dataclass, field
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
from positions.quote_script import STORE_BATCH
from signals_app.models import Instrument

logger = logging.getLogger(__name__)

KEY = "veilstop:quote:{symbol}"
# Every accepted quote since the sweeps last looked (positions.quote_path reads it).
PATH_KEY = "veilstop:quote-path:{symbol}"
# A path longer than this means sweeps stopped for a long while: the oldest quotes go.
PATH_CAP = 20_000
# The spreads of the latest fresh quotes (MARKET_GUARD_SPREAD_WINDOW of them), oldest first.
SPREAD_WINDOW_KEY = "veilstop:spread-window:{symbol}"
# A spread is judged against its window's median once the window holds this many.
SPREAD_FEWEST = 10
# Set while a quote-triggered sweep of the instrument is queued: quotes in between queue no more.
SWEEP_QUEUED_KEY = "veilstop:scan-queued:{symbol}"
SWEEP_INSTRUMENT_TASK = "positions.sweep_instrument"  # positions.tasks runs it; sent here by name

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
    # As stored: the market guard's flag ("spread", "gap", "spread+gap"; "" for a normal quote).
    anomaly: str = field(default="", compare=False)

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


@dataclass(frozen=True)
class GuardThresholds:
    """The market guard's limits for one instrument's quotes (0: that check is off)."""

    spread_factor: Decimal
    gap: Decimal  # a price distance: the gap in pips times the pip size

    @classmethod
    def of(cls, *, pip_size: Decimal, spread_factor: Decimal | None, gap_pips: Decimal | None):
        """An instrument's own thresholds, or the global settings where it has none."""
        factor = settings.MARKET_GUARD_SPREAD_FACTOR if spread_factor is None else spread_factor
        pips = settings.MARKET_GUARD_GAP_PIPS if gap_pips is None else gap_pips
        return cls(spread_factor=factor, gap=pips * pip_size)


GUARD_OFF = GuardThresholds(Decimal(0), Decimal(0))


def quotes_store_batch(
    quotes: list[Quote],
    *,
    received_at: float,
    batch_key: str = "",
    thresholds: dict[str, GuardThresholds] | None = None,
) -> StoredBatch:
    """Store each quote, in order, if it is newer than the one held: the whole batch in
    one script (all or nothing), remembered under ``batch_key`` when one is given.
    ``thresholds``: the market guard's, per instrument (none given: nothing is flagged)."""
    keys = [batch_key]
    args = [
        repr(received_at),
        str(settings.QUOTE_MAX_AGE_SECONDS),
        str(settings.SPIKE_MAX_JUMP_FRACTION),
        str(PATH_CAP),
        str(int(received_at * 1_000_000)),
        str(BATCH_MEMORY_SECONDS),
        str(settings.MARKET_GUARD_SPREAD_WINDOW),
        str(SPREAD_FEWEST),
    ]
    thresholds = thresholds or {}
    for quote in quotes:
        symbol = quote.instrument
        guard = thresholds.get(symbol, GUARD_OFF)
        keys += [
            KEY.format(symbol=symbol),
            PATH_KEY.format(symbol=symbol),
            SPREAD_WINDOW_KEY.format(symbol=symbol),
        ]
        args += [
            str(quote.bid),
            str(quote.ask),
            repr(quote.ts),
            str(quote.ask - quote.bid),
            str(guard.spread_factor),
            str(guard.gap),
        ]
    flags, bars, replayed = get_script(STORE_BATCH)(keys=keys, args=args)
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
        anomaly=raw.get(b"anomaly", b"").decode(),
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
    rows = Instrument.objects.filter(symbol__in=symbols, active=True).values_list(
        "symbol", "id", "pip_size", "market_guard_spread_factor", "market_guard_gap_pips"
    )
    known = {symbol: instrument_id for symbol, instrument_id, *_ in rows}
    thresholds = {
        symbol: GuardThresholds.of(pip_size=pip_size, spread_factor=factor, gap_pips=gap_pips)
        for symbol, _, pip_size, factor, gap_pips in rows
    }
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
    batch = quotes_store_batch(ordered, received_at=received_at, batch_key=batch_key, thresholds=thresholds)
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
