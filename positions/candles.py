"""Candles of the owner's feed: one-minute bars of the bid, and the ATR read from them.

1. ``candles_record``: a batch of quotes becomes one bar per (instrument,
   minute) of the quote's own time (``positions.bars.minute_bars``), written in
   one statement: ``INSERT … ON CONFLICT (instrument_id, minute) DO UPDATE``
   merges a minute an earlier batch already holds (high the greater, low the
   lesser, open from the earlier first quote, close from the later last quote,
   quotes summed). Rows go in instrument-then-minute order, so concurrent
   batches lock them in the same order.
2. ``candles_read``: the newest ``limit`` bars of any ``Timeframe``, aggregated
   from the minutes in SQL (``date_bin``, bars on UTC multiples of their
   length). A minute without quotes has no bar, and neither has a longer
   period without any (weekends, like MetaTrader's charts).
3. ``candles_between``: the bars of a period (a signal's chart), binned the same way;
4. ``atr``: ``positions.bars.average_true_range`` over the newest bars.
5. ``candles_prune``: minutes older than ``CANDLE_RETENTION_DAYS`` go, in
   batches (beat: ``positions.candles_prune``).

Bars are built on the bid, as MetaTrader's charts are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Protocol

from django.conf import settings
from django.db import connection
from django.utils import timezone

from positions.bars import Bar, Timeframe, average_true_range, minute_bars
from positions.models import Candle
from signals_app.models import Instrument

PRUNE_BATCH = 10_000


class BidQuote(Protocol):
    """What a bar needs of a quote; ``positions.quotes.Quote`` is one (a protocol,
    so the quote path can call this module without this module importing it)."""

    @property
    def instrument(self) -> str: ...
    @property
    def bid(self) -> Decimal: ...
    @property
    def ts(self) -> float: ...


_RECORD = """
INSERT INTO positions_candle AS c
       (instrument_id, minute, open, high, low, close, quotes, first_ts, last_ts)
SELECT * FROM unnest(
       %(instrument_ids)s::bigint[], %(minutes)s::timestamptz[], %(opens)s::numeric[],
       %(highs)s::numeric[], %(lows)s::numeric[], %(closes)s::numeric[], %(quotes)s::integer[],
       %(first_ts)s::double precision[], %(last_ts)s::double precision[])
 ORDER BY 1, 2
    ON CONFLICT (instrument_id, minute) DO UPDATE SET
       open = CASE WHEN EXCLUDED.first_ts < c.first_ts THEN EXCLUDED.open ELSE c.open END,
       first_ts = LEAST(c.first_ts, EXCLUDED.first_ts),
       close = CASE WHEN EXCLUDED.last_ts >= c.last_ts THEN EXCLUDED.close ELSE c.close END,
       last_ts = GREATEST(c.last_ts, EXCLUDED.last_ts),
       high = GREATEST(c.high, EXCLUDED.high),
       low = LEAST(c.low, EXCLUDED.low),
       quotes = c.quotes + EXCLUDED.quotes
"""


def candles_record(*, instrument_ids_by_symbol: Mapping[str, int], quotes: Sequence[BidQuote]) -> int:
    """Add a batch of quotes (in arrival order) to the minute bars of their bids;
    return how many bars were written. One statement, whatever the batch holds.

    Every quote's instrument must be in ``instrument_ids_by_symbol`` (the feed
    rejects unknown instruments before this; a missing one raises KeyError).
    Quotes older than the latest stored one belong here too: they still fall in
    their own minute. A batch sent twice counts its quotes twice; prices are
    unaffected.
    """
    bars = minute_bars((instrument_ids_by_symbol[quote.instrument], quote.bid, quote.ts) for quote in quotes)
    if not bars:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            _RECORD,
            {
                "instrument_ids": [bar.instrument_id for bar in bars],
                "minutes": [bar.minute for bar in bars],
                "opens": [bar.open for bar in bars],
                "highs": [bar.high for bar in bars],
                "lows": [bar.low for bar in bars],
                "closes": [bar.close for bar in bars],
                "quotes": [bar.quotes for bar in bars],
                "first_ts": [bar.first_ts for bar in bars],
                "last_ts": [bar.last_ts for bar in bars],
            },
        )
    return len(bars)


# 1. ``starts``: the newest ``limit`` bar starts, found by stepping from each bar's
#    start to the newest minute before it (one index probe per bar, however many
#    minutes the table holds); 2. the minutes from the oldest of them on, binned.
_READ = """
WITH RECURSIVE starts(start, n) AS (
    SELECT date_bin(%(step)s, m.minute, %(origin)s), 1
      FROM (SELECT minute FROM positions_candle WHERE instrument_id = %(instrument_id)s
             ORDER BY minute DESC LIMIT 1) m
    UNION ALL
    SELECT date_bin(%(step)s, m.minute, %(origin)s), s.n + 1
      FROM starts s
     CROSS JOIN LATERAL (SELECT minute FROM positions_candle
                          WHERE instrument_id = %(instrument_id)s AND minute < s.start
                          ORDER BY minute DESC LIMIT 1) m
     WHERE s.n < %(limit)s
)
SELECT date_bin(%(step)s, minute, %(origin)s) AS start,
       (array_agg(open ORDER BY minute))[1],
       max(high),
       min(low),
       (array_agg(close ORDER BY minute DESC))[1],
       sum(quotes)
  FROM positions_candle
 WHERE instrument_id = %(instrument_id)s AND minute >= (SELECT min(start) FROM starts)
 GROUP BY 1
 ORDER BY 1
"""
BAR_ORIGIN = datetime(2000, 1, 1, tzinfo=UTC)  # midnight UTC: H4 bars start at 00:00, 04:00, …; D1 at 00:00


def candles_read(*, instrument_id: int, timeframe: Timeframe | str, limit: int) -> list[Bar]:
    """The newest ``limit`` bars of ``timeframe``, oldest first; the newest may
    still be forming."""
    if limit < 1:
        return []
    step = timedelta(seconds=Timeframe(timeframe).seconds)
    with connection.cursor() as cursor:
        cursor.execute(
            _READ, {"step": step, "origin": BAR_ORIGIN, "instrument_id": instrument_id, "limit": limit}
        )
        return _bars(cursor.fetchall())


# The newest ``limit`` bars that start before ``until`` and end after ``since``, through
# the (instrument, minute) index.
_BETWEEN = """
SELECT * FROM (
SELECT date_bin(%(step)s, minute, %(origin)s) AS start,
       (array_agg(open ORDER BY minute))[1],
       max(high),
       min(low),
       (array_agg(close ORDER BY minute DESC))[1],
       sum(quotes)
  FROM positions_candle
 WHERE instrument_id = %(instrument_id)s
   AND minute >= date_bin(%(step)s, %(since)s, %(origin)s) AND minute <= %(until)s
 GROUP BY 1
 ORDER BY 1 DESC
 LIMIT %(limit)s
) newest ORDER BY 1
"""


def candles_between(
    *, instrument_id: int, timeframe: Timeframe | str, since: datetime, until: datetime, limit: int
) -> list[Bar]:
    """The bars of ``timeframe`` covering ``since`` to ``until`` (the bar holding ``since``
    included), oldest first; the newest ``limit`` of them when there are more."""
    if limit < 1 or until < since:
        return []
    step = timedelta(seconds=Timeframe(timeframe).seconds)
    params = {
        "step": step,
        "origin": BAR_ORIGIN,
        "instrument_id": instrument_id,
        "since": since,
        "until": until,
        "limit": limit,
    }
    with connection.cursor() as cursor:
        cursor.execute(_BETWEEN, params)
        return _bars(cursor.fetchall())


def _bars(rows: list[tuple]) -> list[Bar]:
    return [
        Bar(start=start, open=open_, high=high, low=low, close=close, quotes=int(quotes))
        for start, open_, high, low, close, quotes in rows
    ]


def atr(*, instrument_id: int, period: int, timeframe: Timeframe | str) -> Decimal | None:
    """The Average True Range of the newest ``period`` bars of ``timeframe``,
    the still-forming current bar included (its range so far), as MetaTrader's
    ATR shows on the live bar: the simple mean of their true ranges
    (``positions.bars.average_true_range``: a simple mean, not Wilder's
    smoothing). None while fewer than ``period + 1`` bars exist.
    """
    return average_true_range(
        candles_read(instrument_id=instrument_id, timeframe=timeframe, limit=period + 1), period
    )


def candles_prune(*, now: datetime | None = None) -> int:
    """Delete minute bars older than ``CANDLE_RETENTION_DAYS``; return how many.

    Instrument by instrument, through the (instrument, minute) index, in
    batches of ``PRUNE_BATCH`` each committed on its own: no long lock on a
    table the feed writes to every second, and a run cut short by its time
    limit keeps what it deleted (the next run goes on).
    """
    cutoff = (now or timezone.now()) - timedelta(days=settings.CANDLE_RETENTION_DAYS)
    deleted = 0
    for instrument_id in Instrument.objects.order_by("pk").values_list("pk", flat=True):
        oldest = Candle.objects.filter(instrument_id=instrument_id, minute__lt=cutoff).order_by("minute")
        while True:
            batch, _ = Candle.objects.filter(pk__in=oldest.values("pk")[:PRUNE_BATCH]).delete()
            deleted += batch
            if batch < PRUNE_BATCH:
                break
    return deleted
