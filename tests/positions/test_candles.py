"""Minute bars of the owner's bid, their timeframes and the ATR: the arithmetic
pure, the bars against real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings
from django_celery_beat.models import PeriodicTask

from config.schedule import periodic_tasks
from positions import candles as candles_module
from positions.bars import Bar, Timeframe, average_true_range, minute_bars, minute_of, true_ranges
from positions.candles import atr, candles_prune, candles_read, candles_record
from positions.models import Candle
from positions.quotes import Quote
from positions.tasks import candles_prune_task
from tests.factories import instrument

# A Monday, on the hour.
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def at(minutes: float, seconds: float = 0) -> float:
    return (T0 + timedelta(minutes=minutes, seconds=seconds)).timestamp()


def quote(bid: str, ts: float, symbol: str = "XAUUSD") -> Quote:
    return Quote(symbol, Decimal(bid), Decimal(bid) + Decimal("0.30"), ts)


def bar(high: str, low: str, close: str, minute: int = 0) -> Bar:
    return Bar(T0 + timedelta(minutes=minute), Decimal(low), Decimal(high), Decimal(low), Decimal(close), 1)


@pytest.fixture
def ids() -> dict[str, int]:
    return {symbol: instrument(symbol).pk for symbol in ("XAUUSD", "EURUSD")}


# --- the arithmetic (no database) ----------------------------------------------


def test_a_batch_makes_one_bar_per_instrument_and_minute_with_open_and_close_by_quote_time():
    bars = minute_bars(
        [
            (1, Decimal("10"), at(0, 30)),
            (1, Decimal("12"), at(0, 50)),
            (1, Decimal("9"), at(0, 5)),  # late, but the minute's first quote: it opens
            (2, Decimal("1.1"), at(0, 10)),
            (1, Decimal("11"), at(0, 40)),  # late, not the last: close stays 12
            (1, Decimal("20"), at(1, 0)),  # the next minute
        ]
    )

    assert [(b.instrument_id, b.minute) for b in bars] == [
        (1, T0),
        (1, T0 + timedelta(minutes=1)),
        (2, T0),
    ]
    first = bars[0]
    assert (first.open, first.high, first.low, first.close, first.quotes) == (9, 12, 9, 12, 4)
    assert (first.first_ts, first.last_ts) == (at(0, 5), at(0, 50))


def test_true_range_reaches_to_the_previous_close_across_gaps():
    bars = [
        bar(high="10", low="8", close="9"),
        bar(high="11", low="9", close="10.5"),  # plain range: 2
        bar(high="13", low="12", close="12.5"),  # gap up from 10.5: 13 - 10.5
        bar(high="11", low="10", close="10.2"),  # gap down from 12.5: 12.5 - 10
        bar(high="10.8", low="10.0", close="10.5"),  # inside: 10.8 - 10.0
    ]

    assert true_ranges(bars) == [Decimal("2"), Decimal("2.5"), Decimal("2.5"), Decimal("0.8")]
    # a simple mean of the last `period` true ranges (MetaTrader's ATR)
    assert average_true_range(bars, 4) == Decimal("1.95")
    assert average_true_range(bars, 3) == Decimal("5.8") / 3
    assert average_true_range(bars, 1) == Decimal("0.8")


def test_atr_needs_one_bar_more_than_its_period():
    bars = [bar(high="10", low="8", close="9", minute=minute) for minute in range(5)]

    assert average_true_range(bars, 5) is None
    assert average_true_range(bars[:1], 1) is None
    assert average_true_range([], 14) is None
    assert average_true_range(bars, 4) == Decimal("2")
    with pytest.raises(ValueError, match="period"):
        average_true_range(bars, 0)


def test_the_bar_arithmetic_imports_no_django():
    probe = "import sys, positions.bars; sys.exit('django' in sys.modules)"
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", probe], cwd=root, check=False).returncode == 0


# --- recording ------------------------------------------------------------------


@pytest.mark.django_db
def test_a_batch_is_written_in_one_statement_with_open_and_close_by_quote_time(
    ids, django_assert_num_queries
):
    batch = [
        quote("2650.10", at(0, 20)),
        quote("2651.00", at(0, 45)),
        quote("2649.50", at(0, 2)),  # arrives third, quoted first: the open
        quote("2650.40", at(0, 30)),  # arrives last, not quoted last: not the close
        quote("2655.00", at(1, 1)),
        quote("1.08500", at(0, 15), symbol="EURUSD"),
    ]

    with django_assert_num_queries(1):
        written = candles_record(instrument_ids_by_symbol=ids, quotes=batch)

    assert written == 3
    gold = Candle.objects.get(instrument_id=ids["XAUUSD"], minute=T0)
    assert (gold.open, gold.high, gold.low, gold.close, gold.quotes) == (
        Decimal("2649.50"),
        Decimal("2651.00"),
        Decimal("2649.50"),
        Decimal("2651.00"),
        4,
    )
    assert (gold.first_ts, gold.last_ts) == (at(0, 2), at(0, 45))
    next_minute = Candle.objects.get(instrument_id=ids["XAUUSD"], minute=T0 + timedelta(minutes=1))
    assert (next_minute.open, next_minute.close, next_minute.quotes) == (Decimal("2655"), Decimal("2655"), 1)
    euro = Candle.objects.get(instrument_id=ids["EURUSD"])
    assert (euro.minute, euro.open, euro.quotes) == (T0, Decimal("1.085"), 1)


@pytest.mark.django_db
def test_batches_hitting_the_same_minute_merge(ids):
    # given: a minute half recorded
    candles_record(
        instrument_ids_by_symbol=ids, quotes=[quote("2650.00", at(0, 20)), quote("2652.00", at(0, 40))]
    )

    # when: a batch with an earlier quote (late), a middle one and nothing later
    candles_record(
        instrument_ids_by_symbol=ids,
        quotes=[quote("2648.00", at(0, 10)), quote("2653.00", at(0, 30))],
    )
    # then: the late quote opens, the close stays the latest quote's, extremes widen
    merged = Candle.objects.get(instrument_id=ids["XAUUSD"], minute=T0)
    assert (merged.open, merged.high, merged.low, merged.close, merged.quotes) == (
        Decimal("2648"),
        Decimal("2653"),
        Decimal("2648"),
        Decimal("2652"),
        4,
    )

    # when: a batch with the minute's newest quote, inside the range
    candles_record(instrument_ids_by_symbol=ids, quotes=[quote("2651.00", at(0, 59))])
    # then: only the close (and the count) move
    merged.refresh_from_db()
    assert (merged.open, merged.high, merged.low, merged.close, merged.quotes) == (
        Decimal("2648"),
        Decimal("2653"),
        Decimal("2648"),
        Decimal("2651"),
        5,
    )
    assert (merged.first_ts, merged.last_ts) == (at(0, 10), at(0, 59))
    assert Candle.objects.count() == 1


@pytest.mark.django_db
def test_an_empty_batch_writes_nothing(ids, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert candles_record(instrument_ids_by_symbol=ids, quotes=[]) == 0


# --- reading timeframes -----------------------------------------------------------


def record_ramp(ids: dict[str, int], minutes: list[int]) -> None:
    """Minute i: bid 2000 + i at :10, 2000 + i + 0.5 at :50; EURUSD alongside, to stay out."""
    quotes = []
    for minute in minutes:
        quotes += [
            quote(str(2000 + minute), at(minute, 10)),
            quote(str(2000 + minute + Decimal("0.5")), at(minute, 50)),
            quote("1.08", at(minute, 30), symbol="EURUSD"),
        ]
    candles_record(instrument_ids_by_symbol=ids, quotes=quotes)


@pytest.mark.django_db
def test_minutes_aggregate_to_longer_bars_on_read(ids):
    # given: 10:00 to 11:09 with nothing from 10:20 to 10:29
    record_ramp(ids, [minute for minute in range(70) if not 20 <= minute < 30])

    # when
    m5 = candles_read(instrument_id=ids["XAUUSD"], timeframe=Timeframe.M5, limit=10)
    h1 = candles_read(instrument_id=ids["XAUUSD"], timeframe="H1", limit=5)
    m1 = candles_read(instrument_id=ids["XAUUSD"], timeframe=Timeframe.M1, limit=3)

    # then: the newest ten M5 bars, oldest first, the empty ones skipped
    assert [b.start for b in m5] == [
        T0 + timedelta(minutes=5 * k) for k in (2, 3, 6, 7, 8, 9, 10, 11, 12, 13)
    ]
    assert m5[-1] == Bar(
        start=T0 + timedelta(minutes=65),
        open=Decimal(2065),
        high=Decimal("2069.5"),
        low=Decimal(2065),
        close=Decimal("2069.5"),
        quotes=10,
    )
    assert h1 == [
        Bar(T0, Decimal(2000), Decimal("2059.5"), Decimal(2000), Decimal("2059.5"), 100),
        Bar(T0 + timedelta(hours=1), Decimal(2060), Decimal("2069.5"), Decimal(2060), Decimal("2069.5"), 20),
    ]
    assert [(b.start.minute, b.open, b.close) for b in m1] == [
        (7, Decimal(2067), Decimal("2067.5")),
        (8, Decimal(2068), Decimal("2068.5")),
        (9, Decimal(2069), Decimal("2069.5")),
    ]


@pytest.mark.django_db
def test_reading_an_instrument_without_bars(ids):
    assert candles_read(instrument_id=ids["XAUUSD"], timeframe=Timeframe.H4, limit=10) == []
    assert atr(instrument_id=ids["XAUUSD"], period=14, timeframe=Timeframe.M1) is None


@pytest.mark.django_db
def test_atr_from_stored_bars(ids):
    # given: 20 minutes of the ramp: every M1 bar spans 0.5, opening 0.5 above the last close
    record_ramp(ids, list(range(20)))

    # then: on M1 each true range runs from the previous close (0.5 below the open) to the high
    assert atr(instrument_id=ids["XAUUSD"], period=14, timeframe=Timeframe.M1) == Decimal("1")
    # four M5 bars, each spanning 4.5 from its open, 0.5 above the previous close: 5
    assert atr(instrument_id=ids["XAUUSD"], period=3, timeframe=Timeframe.M5) == Decimal("5")
    assert atr(instrument_id=ids["XAUUSD"], period=4, timeframe=Timeframe.M5) is None
    bars = candles_read(instrument_id=ids["XAUUSD"], timeframe=Timeframe.M5, limit=4)
    assert atr(instrument_id=ids["XAUUSD"], period=3, timeframe="M5") == average_true_range(bars, 3)


# --- retention ------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(CANDLE_RETENTION_DAYS=30)
def test_prune_deletes_only_bars_past_the_retention(ids, monkeypatch):
    # given: bars either side of the cutoff, on two instruments; batches of one, to loop
    monkeypatch.setattr(candles_module, "PRUNE_BATCH", 1)
    now = T0 + timedelta(days=40)
    cutoff = now - timedelta(days=30)
    for symbol in ("XAUUSD", "EURUSD"):
        for when in (cutoff - timedelta(days=5), cutoff - timedelta(minutes=1), cutoff, now):
            candles_record(instrument_ids_by_symbol=ids, quotes=[quote("1.5", when.timestamp(), symbol)])

    # when
    deleted = candles_prune(now=now)

    # then
    assert deleted == 4
    assert sorted(Candle.objects.values_list("minute", flat=True)) == [cutoff, cutoff, now, now]
    assert candles_prune(now=now) == 0


@pytest.mark.django_db
def test_the_prune_task_runs_the_prune(ids):
    recent = time.time() - 60
    candles_record(instrument_ids_by_symbol=ids, quotes=[quote("2650", recent)])
    candles_record(instrument_ids_by_symbol=ids, quotes=[quote("2650", 946684800.0)])  # 2000-01-01

    assert candles_prune_task.apply().get() == {"deleted": 1}
    assert list(Candle.objects.values_list("minute", flat=True)) == [minute_of(recent)]


@pytest.mark.django_db
def test_the_prune_is_declared_hourly_and_synced_into_beat():
    spec = next(spec for spec in periodic_tasks() if spec.task == "positions.candles_prune")
    assert spec.name == "veilstop:candles-prune"
    assert spec.every_seconds == 3600
    assert spec.why

    call_command("setup_periodic_tasks")

    task = PeriodicTask.objects.get(name="veilstop:candles-prune")
    assert (task.task, task.interval.every, task.expire_seconds, task.enabled) == (
        "positions.candles_prune",
        3600,
        3600,
        True,
    )
