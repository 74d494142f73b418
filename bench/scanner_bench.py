"""Breach scanner benchmark: ``positions.scanner.sweep()`` against the seed's position
monitor as the seed built it (``bench/seed_baseline.py``), on the same data.

Shapes (positions spread evenly over the signals; 100,000 positions unless
``--positions`` says otherwise; 50 instruments):

* A: 500 signals, a full sweep, no breach;
* B: 2,000 signals, a full sweep, no breach;
* C: 10,000 signals (2,000 of them on EURUSD, the hot instrument), a full sweep, no
  breach; again at half the positions (C/2) with the same signals;
* D: C's book, the quote-triggered sweep of the hot instrument
  (``sweep(symbols={"EURUSD"})`` after a fresh EURUSD quote): 2,000 signals;
* E: C's book, every signal's level crossed by the quote: a full sweep that closes
  every position (the claim that creates the close commands included; reset between
  runs);
* E/10: C's book, one signal in ten crossed: a tenth of the positions closed.

For each: Veilstop warm (steady state: the process has swept before, its per-process
caches are filled) and the seed, run by run in turn in this process (medians of
interleaved runs; the ratio is of these two); Veilstop cold (the first sweep of a
fresh process, one process per run) and warm again in those processes (a check on the
warm figure: this process also runs the seed and holds the bench's data); memory (the
sweeping process's peak RSS growth and tracemalloc peak, cold and warm; the seed loop's
tracemalloc peak).

Then scale-out on C's book: 1, 2 and 4 sweeping processes at once while a feeder
stores quotes (the hot instrument every 10 ms, every other one every 250 ms; or, in
the saturated run, every instrument every 10 ms), each process either running full
sweeps back to back (as beat does) or taking quote-triggered sweeps of one instrument
from a debounced queue (as the Celery task does); sweeps try each instrument's advisory
lock and skip those another holds. Reported: sweeps/s, instrument-sweeps/s, quote ->
judged latency, and whether any quote was judged twice (read under the lock by two
sweeps) or never.

Then the exit-plan bench (bench/plan_bench.py) and the quote → close-command latency
with a real Celery worker (bench/latency_bench.py).

    make bench                                        # everything (about an hour on 2 CPUs)
    make bench BENCH_ARGS="--quick"                   # smoke run: 10k positions, signals / 5
    make bench BENCH_ARGS="--only shapes"             # shapes (with memory) | scaleout | plans | latency
    make bench BENCH_ARGS="--only scanner"            # shapes, memory and scale-out
    make bench BENCH_ARGS="--only shapes --shapes D --profile"

Targets are reported, not enforced: the exit status is 0 whenever the run worked.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import os
import pstats
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

# Run as a script (`python bench/scanner_bench.py`): the repository root must be
# importable for `bench` and the Django project alike.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness, plan_bench  # import no Django: safe before setup

POSITIONS = 100_000
QUICK_POSITIONS = 10_000
QUICK_SIGNAL_DIVISOR = 5

# Targets the scanner is built towards (reported, not enforced).
TARGET_NO_BREACH_MS = 50.0  # shape C, warm
TARGET_SPEEDUP = 50.0  # shape C, against the seed
TARGET_HOT_MS = 20.0  # shape D, warm
TARGET_BREACH_MS = 500.0  # shape E

SCALE_OUT_WORKERS = (1, 2, 4)
FEED_TICK_SECONDS = 0.010  # the hot instrument gets a quote every tick
FEED_OTHERS_EVERY_TICKS = 25  # every other instrument every 25 ticks (250 ms)


@dataclass(frozen=True)
class Runs:
    warm: int  # Veilstop and seed each, interleaved
    cold: int  # fresh processes
    breach_warm: int  # shape E (100k closes: the seed takes minutes per run)
    breach_cold: int
    hot_warm: int  # shape D (fast)
    scale_out_seconds: float


@dataclass
class Shape:
    key: str
    title: str
    symbols: set[str] | None  # None: a full sweep
    move: Decimal | None  # None: no breach
    hot: bool = False

    @property
    def breach(self) -> bool:
        return self.move is not None


@dataclass
class Book:
    name: str
    signals: list[harness.BenchSignal]
    positions: int
    markets: list[harness.Market]
    client_ids: list[int] = field(default_factory=list)

    def signals_on(self, symbols: set[str] | None) -> list[harness.BenchSignal]:
        return [s for s in self.signals if symbols is None or s.market.symbol in symbols]


@dataclass
class ShapeResult:
    shape: Shape
    book: Book
    signals: int  # judged by the sweep
    positions: int  # in the book
    closes: int
    warm: harness.Measurement
    seed: harness.Measurement
    cold: list[float]
    warm_apart: list[float]  # warm sweeps in the fresh processes
    memory: dict[str, Any]

    @property
    def ratio_warm(self) -> float:
        return self.seed.median_ms / self.warm.median_ms

    @property
    def cold_ms(self) -> float | None:
        return statistics.median(self.cold) * 1000 if self.cold else None

    @property
    def warm_apart_ms(self) -> float | None:
        return statistics.median(self.warm_apart) * 1000 if self.warm_apart else None

    @property
    def ratio_cold(self) -> float | None:
        return self.seed.median_ms / self.cold_ms if self.cold_ms else None


# --- books ---------------------------------------------------------------------------------


def build(name: str, markets: list[harness.Market], *, signals: int, positions: int, hot: int = 0) -> Book:
    from bench import seed_baseline
    from signals_app.models import Client

    harness.clear_book(signals_too=True)
    harness.clear_quote_paths()
    started = time.perf_counter()
    created = harness.create_signals(markets, signals, hot=harness.HOT_SYMBOL if hot else None, hot_count=hot)
    per_signal = positions // signals
    total = harness.build_book(created, per_signal, tag=name)
    loaded = seed_baseline.load_book(created)
    if loaded != total:
        raise RuntimeError(f"the seed's table holds {loaded} positions, the book {total}")
    client_ids = list(
        Client.objects.filter(name__startswith=f"bench-{name}-").order_by("pk").values_list("pk", flat=True)
    )
    print(
        f"\nbook {name}: {total:,} open positions ({signals:,} signals x {per_signal} clients"
        f"{f', {hot:,} signals on {harness.HOT_SYMBOL}' if hot else ''}; {harness.INSTRUMENTS} instruments); "
        f"built in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return Book(name, created, total, markets, client_ids)


def halve(book: Book) -> Book:
    """The same signals with half the positions: those of half the clients removed."""
    from bench import seed_baseline

    gone = book.client_ids[len(book.client_ids) - len(book.client_ids) // 2 :]
    seed_baseline.drop_positions_of(gone)
    harness.execute("DELETE FROM positions_openposition WHERE client_id = ANY(%s)", [gone])
    harness.plans_changed()
    harness.vacuum_analyze("positions_openposition")
    positions = harness.fetch_value("SELECT count(*) FROM positions_openposition")
    print(
        f"\nbook {book.name}/2: {positions:,} open positions, the same {len(book.signals):,} signals",
        flush=True,
    )
    kept = book.client_ids[: len(book.client_ids) - len(gone)]
    return Book(f"{book.name}/2", book.signals, positions, book.markets, kept)


# --- one shape -----------------------------------------------------------------------------


def _expect(condition: bool, detail: Any) -> None:
    # A benchmark of a sweep that did the wrong thing measures nothing.
    if not condition:
        raise RuntimeError(f"unexpected sweep result: {detail}")


def expected_closes(book: Book, shape: Shape) -> int:
    if shape.move is None:
        return 0
    per_signal = book.positions // len(book.signals)
    crossed = [
        s
        for s in book.signals_on(shape.symbols)
        if shape.move <= harness.ALL_BREACH_MOVE or (shape.move <= harness.FEW_BREACH_MOVE and s.near_few)
    ]
    return len(crossed) * per_signal


def _prepare_quotes(book: Book, shape: Shape) -> None:
    """Fresh quotes: every instrument of the sweep at its mid, then moved by the shape's move."""
    markets = [market for market in book.markets if shape.symbols is None or market.symbol in shape.symbols]
    harness.clear_quote_paths()
    prices = [(market, market.mid) for market in markets]
    if shape.move is not None:
        prices += [(market, market.moved(shape.move)) for market in markets]
    harness.store_quotes(prices)


def _prepare_veilstop(book: Book, shape: Shape, settle: Callable[[], Any] | None = None) -> None:
    """The shape's quotes; for a breach, first the reset, then (with ``settle``) a sweep of
    the unmoved market in the process that is timed next, untimed: the reset changed what
    sweeps watch (plan states deleted, positions reopened), so that sweep re-reads its books
    and saves the plans' first state, and the timed sweep finds the steady state a breach
    meets in production. Without ``settle`` (a fresh process's first sweep) it builds them."""
    if shape.breach:
        harness.reset_breaches()
        if settle is not None:
            _prepare_quotes(book, replace(shape, move=None))
            report = settle()
            _expect(report.commands_created == 0, f"settling sweep: {report}")
    _prepare_quotes(book, shape)


def _prepare_seed(book: Book, shape: Shape) -> None:
    from bench import seed_baseline

    if shape.breach:
        seed_baseline.reset()
    _prepare_quotes(book, shape)


def run_shape(shape: Shape, book: Book, runs: Runs, *, profile: bool) -> ShapeResult:
    from bench import seed_baseline
    from positions.scanner import sweep

    signals = len(book.signals_on(shape.symbols))
    closes = expected_closes(book, shape)
    prices = seed_baseline.PriceCache([market.symbol for market in book.markets])
    hot_symbol = next(iter(shape.symbols)) if shape.symbols else None

    def check_veilstop(report: Any) -> None:
        _expect(report.signals == signals and report.commands_created == closes, report)
        if not shape.breach:
            _expect(report.outcomes.get("none") == signals, report)

    def check_seed(closed: int) -> None:
        _expect(closed == closes, f"the seed closed {closed} positions, expected {closes}")

    breach_all = shape.breach and closes >= book.positions
    warm_runs = runs.breach_warm if breach_all else runs.hot_warm if shape.hot else runs.warm
    cold_runs = runs.breach_cold if breach_all else runs.cold
    print(
        f"  {shape.key}: {shape.title} ({signals:,} signals judged, {closes:,} closes): "
        f"{warm_runs} interleaved runs ",
        end="",
        flush=True,
    )
    measured = harness.interleaved(
        [
            harness.Contender(
                "veilstop",
                prepare=lambda: _prepare_veilstop(book, shape, settle=lambda: sweep(symbols=shape.symbols)),
                run=lambda: sweep(symbols=shape.symbols),
                check=check_veilstop,
                runs=warm_runs,
            ),
            harness.Contender(
                "seed",
                prepare=lambda: _prepare_seed(book, shape),
                run=lambda: seed_baseline.monitor_all_positions(prices, instrument=hot_symbol),
                check=check_seed,
                runs=warm_runs,
                # The seed keeps nothing from one loop to the next; where a loop takes minutes
                # (100,000 closes one by one) it is not run untimed first.
                warmup=0 if breach_all else 1,
            ),
        ]
    )
    warm, seed = measured["veilstop"], measured["seed"]
    print(
        f" Veilstop {warm.median_ms:,.1f} ms, seed {seed.median_ms:,.1f} ms; {cold_runs} cold ",
        end="",
        flush=True,
    )

    # The seed loop's Python memory (tracemalloc), one more run (not where it takes minutes).
    seed_peak = None
    if not breach_all:
        seed_peak = harness.measure(
            prepare=lambda: _prepare_seed(book, shape),
            run=lambda: seed_baseline.monitor_all_positions(prices, instrument=hot_symbol),
            check=check_seed,
            repeats=0,
        ).peak_bytes

    cold: list[float] = []
    warm_apart: list[float] = []
    rss_cold: list[int] = []
    rss_warm: list[int] = []
    symbols = sorted(shape.symbols) if shape.symbols else None

    def settle_in(process: harness.SweepProcess) -> Callable[[], Any]:
        return lambda: _Report(process.call(op="sweep", symbols=symbols)["report"])

    # Each fresh process: its first sweep (cold), then a few more (warm, in a process that
    # does nothing else: a check on the warm figure taken in this one, which also runs the seed).
    attempts = ["cold", "warm"] if breach_all else ["cold", "warm", "warm", "warm"]
    for _ in range(cold_runs):
        process = harness.SweepProcess.start()
        try:
            for index, attempt in enumerate(attempts):
                _prepare_veilstop(book, shape, settle=settle_in(process) if attempt == "warm" else None)
                answer = process.call(op="sweep", symbols=symbols)
                check_veilstop(_Report(answer["report"]))
                growth = _rss_growth(answer)
                if attempt == "cold":
                    cold.append(answer["seconds"])
                    if growth is not None:
                        rss_cold.append(growth)
                else:
                    warm_apart.append(answer["seconds"])
                    if growth is not None and index == 1:
                        rss_warm.append(growth)
        finally:
            process.close()
        print(".", end="", flush=True)
    # tracemalloc in a process of its own (it slows allocation: never in a timed run).
    traced: dict[str, int | None] = {}
    process = harness.SweepProcess.start()
    try:
        for attempt in ("cold", "warm"):
            _prepare_veilstop(book, shape, settle=settle_in(process) if attempt == "warm" else None)
            answer = process.call(op="sweep", symbols=symbols, tracemalloc=True)
            check_veilstop(_Report(answer["report"]))
            traced[attempt] = answer["tracemalloc_peak_bytes"]
            if attempt == "cold":
                traced["rss_kib"] = answer["rss_before_kib"]
    finally:
        process.close()
    memory = {
        "rss_growth_cold_kib": statistics.median(rss_cold) if rss_cold else None,
        "rss_growth_warm_kib": statistics.median(rss_warm) if rss_warm else None,
        "traced_cold": traced.get("cold"),
        "traced_warm": traced.get("warm"),
        "seed_traced": seed_peak,
    }
    result = ShapeResult(shape, book, signals, book.positions, closes, warm, seed, cold, warm_apart, memory)
    own = ", ".join(f"{seconds * 1000:,.0f}" for seconds in warm_apart)
    print(f" {result.cold_ms:,.1f} ms; warm in a process of its own: {own} ms", flush=True)
    if profile:
        profile_sweep(book, shape, sweeps=3 if breach_all else 10)
    if shape.breach:
        harness.reset_breaches()
        seed_baseline.reset()
    return result


def _rss_growth(answer: dict[str, Any]) -> int | None:
    if answer.get("rss_peak_kib") is None or answer.get("rss_before_kib") is None:
        return None
    return answer["rss_peak_kib"] - answer["rss_before_kib"]


class _Report:
    """A sweep report as a sweeping process answers it, read like ``SweepReport``."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.signals = data["signals"]
        self.commands_created = data["commands_created"]
        self.outcomes = data["outcomes"]
        self.skipped_locked_instruments = data["skipped_locked_instruments"]

    def __repr__(self) -> str:
        return f"SweepReport({self.__dict__})"


def profile_sweep(book: Book, shape: Shape, sweeps: int = 10) -> None:
    """Where a warm sweep of the shape spends its time: cProfile of ``sweeps`` sweeps, and
    the time of each SQL statement (through Django's ``execute_wrapper``), by statement."""
    from django.db import connection

    from positions.scanner import sweep

    profiler = cProfile.Profile()
    statements: dict[str, list[float]] = {}
    first: dict[str, tuple[str, Any]] = {}  # each statement as first run, for EXPLAIN

    def timed(execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            key = " ".join(sql.split())[:90]
            statements.setdefault(key, []).append(time.perf_counter() - started)
            if not many:
                first.setdefault(key, (sql, params))

    total = 0.0
    for _ in range(sweeps):
        _prepare_veilstop(book, shape, settle=lambda: sweep(symbols=shape.symbols))
        with connection.execute_wrapper(timed):
            started = time.perf_counter()
            profiler.enable()
            sweep(symbols=shape.symbols)
            profiler.disable()
            total += time.perf_counter() - started
    heaviest = max(statements, key=lambda key: sum(statements[key]), default=None)
    if shape.breach and heaviest in first:
        # Its plan on this data: the sweep's state again (reset, settled, quotes moved), then
        # the statement as the sweep ran it, under EXPLAIN ANALYZE in a rolled-back transaction.
        _prepare_veilstop(book, shape, settle=lambda: sweep(symbols=shape.symbols))
        explain(*first[heaviest])
    if shape.breach:
        harness.reset_breaches()
    sql = sum(sum(times) for times in statements.values())
    print(
        f"\n  {shape.key}: {sweeps} warm sweeps under cProfile, {total / sweeps * 1000:,.1f} ms each; "
        f"SQL {sql / sweeps * 1000:,.1f} ms of it. Statements by time per sweep:"
    )
    for key, times in sorted(statements.items(), key=lambda item: -sum(item[1]))[:12]:
        print(f"    {sum(times) / sweeps * 1000:8.2f} ms  {len(times) / sweeps:5.1f}x  {key}")
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats(order).print_stats(20)
        print(f"\n  cProfile of {shape.key} by {order}:\n{out.getvalue()}")
    # The cold sweep: the first of a fresh process (what a worker pays after a start).
    process = harness.SweepProcess.start()
    try:
        _prepare_veilstop(book, shape)
        answer = process.call(
            op="sweep", symbols=sorted(shape.symbols) if shape.symbols else None, profile=True
        )
    finally:
        process.close()
    if shape.breach:
        harness.reset_breaches()
    print(f"\n  cProfile of {shape.key}, the first sweep of a fresh process:\n{answer['profile']}")


def explain(sql: str, params: Any) -> None:
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params)
        plan = "\n".join(f"      {row[0]}" for row in cursor.fetchall())
        transaction.set_rollback(True)
    print(f"\n  EXPLAIN ANALYZE of the heaviest statement ({' '.join(sql.split())[:60]}...):\n{plan}")


# --- scale-out -----------------------------------------------------------------------------

# KEYS[1] = the debounce key, KEYS[2] = the queue; ARGV[1] = the symbol. As
# positions.quotes.sweep_instrument_soon: queue a sweep unless one is queued already.
_QUEUE_SWEEP = """
if redis.call('SET', KEYS[1], 1, 'NX', 'EX', 5) then
    redis.call('RPUSH', KEYS[2], ARGV[1])
end
return 1
"""


class Feeder(threading.Thread):
    """Stores quotes while the sweeping processes run: the hot instrument every tick, each
    other one every ``others_every`` ticks, one point up or down from its mid in turn (never
    near a level). With ``queue``, each stored quote also queues a sweep of its instrument
    (debounced). Counts what it stored, per instrument."""

    def __init__(
        self,
        markets: list[harness.Market],
        *,
        queue: bool,
        others_every: int,
        start_at: float,
        stop_at: float,
    ) -> None:
        super().__init__(daemon=True)
        self.markets = markets
        self.queue = queue
        self.others_every = others_every
        self.start_at = start_at
        self.stop_at = stop_at
        self.stored: Counter[str] = Counter()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._feed()
        except BaseException as error:  # reported by the bench after the run
            self.error = error

    def _feed(self) -> None:
        from bench.sweep_process import QUEUE_KEY, QUEUED_KEY
        from core.redis import get_redis
        from positions.quotes import Quote, quotes_store

        redis = get_redis()
        queue_sweep = redis.register_script(_QUEUE_SWEEP)
        hot = [market for market in self.markets if market.symbol == harness.HOT_SYMBOL]
        others = [market for market in self.markets if market.symbol != harness.HOT_SYMBOL]
        time.sleep(max(0.0, self.start_at - time.time()))
        tick = 0
        next_at = time.time()
        while time.time() < self.stop_at:
            due = hot + [m for i, m in enumerate(others) if i % self.others_every == tick % self.others_every]
            quotes = []
            for market in due:
                point = Decimal(1).scaleb(-market.digits)
                bid, ask = market.bid_ask(market.mid + (point if tick % 2 else 0))
                quotes.append(Quote(market.symbol, bid, ask, harness.next_ts()))
            stored = quotes_store(quotes, received_at=harness.next_ts())
            pipeline = redis.pipeline(transaction=False)
            for quote, kept in zip(quotes, stored, strict=True):
                if kept:
                    self.stored[quote.instrument] += 1
                    if self.queue:
                        queue_sweep(
                            keys=[QUEUED_KEY.format(symbol=quote.instrument), QUEUE_KEY],
                            args=[quote.instrument],
                            client=pipeline,
                        )
            pipeline.execute()
            tick += 1
            next_at += FEED_TICK_SECONDS
            time.sleep(max(0.0, next_at - time.time()))


@dataclass(frozen=True)
class ScaleOutMode:
    name: str
    queue: bool  # quote-triggered sweeps of one instrument from the queue; else full sweeps
    others_every: int  # ticks between two quotes of a non-hot instrument


SCALE_OUT_MODES = (
    ScaleOutMode("full sweeps, back to back", queue=False, others_every=FEED_OTHERS_EVERY_TICKS),
    ScaleOutMode("quote-triggered", queue=True, others_every=FEED_OTHERS_EVERY_TICKS),
    ScaleOutMode("quote-triggered, saturated feed", queue=True, others_every=1),
)


@dataclass
class ScaleOutResult:
    mode: ScaleOutMode
    workers: int
    seconds: float
    sweeps: int
    instrument_sweeps: int | None
    hot_sweeps: int | None
    skipped: int
    sweep_ms: list[float]
    quotes_stored: int
    reads_observed: bool
    judged_twice: int | None = None
    # The second read started before the first reader's trim ended: read between the first
    # sweep's commit and its trim of the path (after the commit the lock is free again).
    twice_before_trim: int | None = None
    never_judged: int | None = None  # neither judged nor left in a path for the next sweep
    left_in_paths: int = 0
    lag_ms: list[float] = field(default_factory=list)  # quote arrival -> first read, every quote
    hot_lag_ms: list[float] = field(default_factory=list)
    load: float | None = None  # the machine's 1-minute load average at the end of the run

    def per_second(self, count: int | None) -> float | None:
        return None if count is None else count / self.seconds


def run_scale_out(book: Book, runs: Runs) -> list[ScaleOutResult]:
    from bench.sweep_process import QUEUE_KEY
    from core.redis import get_redis
    from positions.quote_path import paths_read

    redis = get_redis()
    symbols = [market.symbol for market in book.markets]
    results = []
    for mode in SCALE_OUT_MODES:
        for workers in SCALE_OUT_WORKERS:
            print(f"  scale-out, {mode.name}: {workers} process(es) ...", end="", flush=True)
            processes = [harness.SweepProcess.start() for _ in range(workers)]
            try:
                for process in processes:  # each one's cold sweep, out of the measurement
                    harness.store_market(book.markets)
                    process.call(op="sweep", symbols=None)
                harness.clear_quote_paths()
                redis.delete(QUEUE_KEY)
                start_at = time.time() + 1.0
                stop_at = start_at + runs.scale_out_seconds
                feeder = Feeder(
                    book.markets,
                    queue=mode.queue,
                    others_every=mode.others_every,
                    start_at=start_at,
                    stop_at=stop_at,
                )
                feeder.start()
                for process in processes:
                    process.send(
                        op="loop", mode="queue" if mode.queue else "all", start_at=start_at, stop_at=stop_at
                    )
                answers = [process.answer() for process in processes]
                feeder.join()
                if feeder.error:
                    raise feeder.error
            finally:
                for process in processes:
                    process.close()
            left = {(symbol, e.quote.seq) for symbol, entries in paths_read(symbols).items() for e in entries}
            result = _scale_out_result(mode, workers, answers, feeder, left, start_at, stop_at)
            result.load = os.getloadavg()[0]
            results.append(result)
            harness.clear_quote_paths()
            redis.delete(QUEUE_KEY)
            print(
                f" {result.per_second(result.sweeps):,.1f} sweeps/s, "
                f"{_fmt(result.per_second(result.instrument_sweeps), ',.0f')} instrument-sweeps/s, "
                f"judged twice {_fmt(result.judged_twice, 'd')}, never {_fmt(result.never_judged, 'd')}",
                flush=True,
            )
    return results


def _scale_out_result(
    mode: ScaleOutMode,
    workers: int,
    answers: list[dict[str, Any]],
    feeder: Feeder,
    left: set[tuple[str, int]],
    start_at: float,
    stop_at: float,
) -> ScaleOutResult:
    sweeps = [s for answer in answers for s in answer["sweeps"]]
    observed = all(answer["reads_observed"] for answer in answers)
    seconds = max([stop_at - start_at] + [s["started"] + s["seconds"] - start_at for s in sweeps])
    result = ScaleOutResult(
        mode=mode,
        workers=workers,
        seconds=seconds,
        sweeps=len(sweeps),
        instrument_sweeps=sum(s["instruments_judged"] for s in sweeps) if observed else None,
        hot_sweeps=sum(harness.HOT_SYMBOL in s["symbols"] for s in sweeps) if observed else None,
        skipped=sum(s["skipped"] for s in sweeps),
        sweep_ms=[s["seconds"] * 1000 for s in sweeps],
        quotes_stored=sum(feeder.stored.values()),
        reads_observed=observed,
        left_in_paths=len(left),
    )
    if not observed:
        return result
    readers: dict[tuple[str, int], list[tuple[float, float | None, float]]] = {}
    for s in sweeps:
        for symbol, seq, received_at in s["reads"]:
            readers.setdefault((symbol, seq), []).append((s["read_at"], s["trim_at"], received_at))
    result.judged_twice = sum(len(reads) - 1 for reads in readers.values())
    result.twice_before_trim = 0
    for reads in readers.values():
        reads.sort()
        for (_, first_trim, _), (second_read, _, _) in itertools.pairwise(reads):
            result.twice_before_trim += first_trim is None or second_read < first_trim
    result.never_judged = result.quotes_stored - len(set(readers) | left)
    for (symbol, _), reads in readers.items():
        lag = (reads[0][0] - reads[0][2]) * 1000
        result.lag_ms.append(lag)
        if symbol == harness.HOT_SYMBOL:
            result.hot_lag_ms.append(lag)
    return result


# --- report --------------------------------------------------------------------------------


def _fmt(value: float | int | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _mib(value: float | None, *, kib: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value / (2**10 if kib else 2**20):,.1f}"


def print_shapes(results: list[ShapeResult]) -> None:
    print(
        "\n| shape | signals judged | positions | closes | Veilstop warm, ms | seed, ms | seed / warm "
        "| Veilstop cold, ms | seed / cold | Veilstop warm in a process of its own, ms "
        "| runs (warm + seed, cold, own) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        cells = [
            f"{r.shape.key}: {r.shape.title}",
            f"{r.signals:,}",
            f"{r.positions:,}",
            f"{r.closes:,}",
            f"{r.warm.median_ms:,.1f}",
            f"{r.seed.median_ms:,.1f}",
            f"{r.ratio_warm:,.1f}x",
            _fmt(r.cold_ms, ",.1f"),
            _fmt(r.ratio_cold, ",.1f", "x"),
            _fmt(r.warm_apart_ms, ",.1f"),
            f"{len(r.warm.seconds)} + {len(r.seed.seconds)}, {len(r.cold)}, {len(r.warm_apart)}",
        ]
        print("| " + " | ".join(cells) + " |")


def print_memory(results: list[ShapeResult]) -> None:
    print(
        "\n| shape | signals judged | positions | Veilstop peak RSS growth cold / warm, MiB "
        "| Veilstop tracemalloc peak cold / warm, MiB | seed tracemalloc peak, MiB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        m = r.memory
        print(
            f"| {r.shape.key} | {r.signals:,} | {r.positions:,} "
            f"| {_mib(m['rss_growth_cold_kib'], kib=True)} / {_mib(m['rss_growth_warm_kib'], kib=True)} "
            f"| {_mib(m['traced_cold'])} / {_mib(m['traced_warm'])} | {_mib(m['seed_traced'])} |"
        )


def _p(values: list[float], fraction: float) -> str:
    return _fmt(harness.percentile(values, fraction) if values else None, ",.1f")


def print_scale_out(results: list[ScaleOutResult]) -> None:
    print(
        "\n| sweeps | processes | sweeps/s | instrument-sweeps/s | hot judged/s | locks skipped/s "
        "| sweep p50 / p95, ms | quote -> judged p50 / p95, ms (hot p95) | quotes | judged twice "
        "(before the trim) | never judged | load |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        cells = [
            r.mode.name,
            str(r.workers),
            f"{r.per_second(r.sweeps):,.1f}",
            _fmt(r.per_second(r.instrument_sweeps), ",.0f"),
            _fmt(r.per_second(r.hot_sweeps), ",.1f"),
            f"{r.per_second(r.skipped):,.1f}",
            f"{_p(r.sweep_ms, 0.5)} / {_p(r.sweep_ms, 0.95)}",
            f"{_p(r.lag_ms, 0.5)} / {_p(r.lag_ms, 0.95)} ({_p(r.hot_lag_ms, 0.95)})",
            f"{r.quotes_stored:,}",
            f"{_fmt(r.judged_twice, ',d')} ({_fmt(r.twice_before_trim, ',d')})",
            _fmt(r.never_judged, ",d"),
            _fmt(r.load, ".1f"),
        ]
        print("| " + " | ".join(cells) + " |")


def _verdict(value: float | None, target: float, *, at_most: bool) -> str:
    if value is None:
        return "not measured"
    if (value <= target) if at_most else (value >= target):
        return "met"
    return f"MISSED ({value / target if at_most else target / value:.2f}x the target)"


def print_targets(results: list[ShapeResult]) -> None:
    by_key = {r.shape.key: r for r in results}
    rows: list[tuple[str, str, str]] = []

    def time_target(key: str, label: str, value: float | None, target: float) -> None:
        rows.append(
            (
                f"{key} {label} <= {target:.0f} ms",
                f"{_fmt(value, ',.1f')} ms",
                _verdict(value, target, at_most=True),
            )
        )

    if c := by_key.get("C"):
        time_target("C", "warm", c.warm.median_ms, TARGET_NO_BREACH_MS)
        time_target("C", "cold", c.cold_ms, TARGET_NO_BREACH_MS)
        rows.append(
            (
                f"C warm >= {TARGET_SPEEDUP:.0f}x the seed",
                f"{c.ratio_warm:,.1f}x",
                _verdict(c.ratio_warm, TARGET_SPEEDUP, at_most=False),
            )
        )
    if d := by_key.get("D"):
        time_target("D", "warm", d.warm.median_ms, TARGET_HOT_MS)
        time_target("D", "cold", d.cold_ms, TARGET_HOT_MS)
    for key in ("E", "E/10"):
        if e := by_key.get(key):
            time_target(key, f"({e.closes:,} closes) warm", e.warm.median_ms, TARGET_BREACH_MS)
    for big_key, small_key, what in (("C", "C/2", "positions"), ("C", "B", "signals")):
        big, small = by_key.get(big_key), by_key.get(small_key)
        if not (big and small):
            continue
        for label, key in (("cold", "traced_cold"), ("warm", "traced_warm")):
            if big.memory[key] and small.memory[key]:
                counts = (
                    (big.positions, small.positions) if what == "positions" else (big.signals, small.signals)
                )
                rows.append(
                    (
                        f"tracemalloc peak {label}, {counts[0]:,} / {counts[1]:,} {what}",
                        f"{big.memory[key] / small.memory[key]:.2f}x",
                        f"{what} x{counts[0] / counts[1]:.1f}",
                    )
                )
    if rows:
        print("\nTargets (reported, not enforced)")
        for label, value, verdict in rows:
            print(f"  {label:<52} {value:>12}   {verdict}")


# --- main ----------------------------------------------------------------------------------

SECTIONS = ("shapes", "memory", "scaleout", "plans", "latency")
ALL_SHAPES = ("A", "B", "C", "D", "E", "E/10", "C/2")


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/scanner_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 10k positions, signals / 5, few runs"
    )
    parser.add_argument(
        "--only",
        choices=[*SECTIONS, "scanner"],
        help="one part only (scanner = shapes, memory and scale-out)",
    )
    parser.add_argument(
        "--positions",
        type=lambda text: int(text.replace("_", "")),
        default=None,
        help=f"open positions of each book (default {POSITIONS:,}; {QUICK_POSITIONS:,} with --quick)",
    )
    parser.add_argument("--shapes", default=",".join(ALL_SHAPES), help="which shapes (default: all)")
    parser.add_argument(
        "--runs", type=int, default=None, help="interleaved runs per shape (default 11; 3 quick)"
    )
    parser.add_argument(
        "--cold", type=int, default=None, help="fresh processes per shape (default 5; 2 quick)"
    )
    parser.add_argument("--scale-out-seconds", type=float, default=None, help="per run (default 10; 3 quick)")
    parser.add_argument(
        "--profile", action="store_true", help="cProfile and SQL time of warm sweeps per shape"
    )
    parser.add_argument("--latency-iterations", type=int, default=None, help="default 30 (10 with --quick)")
    parser.add_argument(
        "--plan-positions",
        type=lambda text: int(text.replace("_", "")),
        default=None,
        help=f"positions of each exit-plan shape (default {POSITIONS:,}, {QUICK_POSITIONS:,} with --quick)",
    )
    parser.add_argument(
        "--plan-quotes",
        type=lambda text: [int(part) for part in text.split(",") if part],
        default=plan_bench.DEFAULT_QUOTES,
        help="quotes per instrument before each exit-plan sweep, comma-separated (default 1,10,100)",
    )
    arguments = parser.parse_args(argv)
    arguments.positions = arguments.positions or (QUICK_POSITIONS if arguments.quick else POSITIONS)
    arguments.plan_positions = arguments.plan_positions or (QUICK_POSITIONS if arguments.quick else POSITIONS)
    arguments.shapes = {part.strip().upper() for part in arguments.shapes.split(",") if part.strip()}
    if unknown := arguments.shapes - set(ALL_SHAPES):
        parser.error(f"--shapes: unknown {', '.join(sorted(unknown))} (known: {', '.join(ALL_SHAPES)})")
    if arguments.plan_positions % plan_bench.HOT_SIGNALS:
        parser.error(f"--plan-positions: not a multiple of {plan_bench.HOT_SIGNALS}")
    sections = SECTIONS if arguments.only is None else (arguments.only,)
    arguments.sections = {"shapes", "memory", "scaleout"} if arguments.only == "scanner" else set(sections)
    return arguments


def run_scanner(arguments: argparse.Namespace, markets: list[harness.Market], runs: Runs) -> None:
    """Shapes A..E (and C/2) against the seed, memory, scale-out; then the tables."""
    from bench import seed_baseline

    divisor = QUICK_SIGNAL_DIVISOR if arguments.quick else 1
    positions, wanted, sections = arguments.positions, arguments.shapes, arguments.sections
    timed = bool({"shapes", "memory"} & sections)
    results: list[ShapeResult] = []
    scale_results: list[ScaleOutResult] = []
    code = harness.code_version()
    print(
        f"\nBreach scanner vs the seed's monitor: {positions:,} positions per book, {harness.INSTRUMENTS} "
        f"instruments, real PostgreSQL + Redis, {os.cpu_count()} CPU(s), load {os.getloadavg()[0]:.1f}; "
        f"code: {code}",
        flush=True,
    )
    seed_baseline.create_tables()

    def shape(key: str, book: Book, title: str, symbols=None, move=None, hot=False) -> None:
        if timed and key in wanted:
            results.append(
                run_shape(Shape(key, title, symbols, move, hot), book, runs, profile=arguments.profile)
            )

    for key, signals in (("A", 500), ("B", 2_000)):
        if timed and key in wanted:
            book = build(key.lower(), markets, signals=signals // divisor, positions=positions)
            shape(key, book, f"{len(book.signals):,} signals, full sweep")
    book = None
    if (timed and wanted & {"C", "D", "E", "E/10", "C/2"}) or "scaleout" in sections:
        book = build("c", markets, signals=10_000 // divisor, positions=positions, hot=2_000 // divisor)
        shape("C", book, f"{len(book.signals):,} signals, full sweep")
        shape("D", book, f"hot {harness.HOT_SYMBOL}, quote-triggered sweep", {harness.HOT_SYMBOL}, hot=True)
        shape("E", book, "every signal crossed, full sweep + claim", move=harness.ALL_BREACH_MOVE)
        shape("E/10", book, "1 signal in 10 crossed, full sweep + claim", move=harness.FEW_BREACH_MOVE)
        if "scaleout" in sections:
            scale_results = run_scale_out(book, runs)
        if timed and "C/2" in wanted:
            half = halve(book)
            shape("C/2", half, f"{len(half.signals):,} signals, half the positions, full sweep")
    print("\n" + "=" * 100)
    if results:
        print(
            "Breach scanner, median sweep time. Veilstop warm: the steady state (the process has swept "
            "before, its per-process caches are filled), run by run in turn with the seed's monitor in one "
            "process. Veilstop cold: the first sweep of a fresh process (median over processes). "
            "Ratios: seed / Veilstop."
        )
        print_shapes(results)
        print(
            "\nMemory of the sweeping process: peak RSS growth during one sweep (Linux VmHWM) and "
            "tracemalloc peak, cold (first sweep of a fresh process) and warm; the seed loop's "
            "tracemalloc peak."
        )
        print_memory(results)
    if scale_results and book is not None:
        print(
            f"\nScale-out on book c ({len(book.signals):,} signals, {book.positions:,} positions, hot "
            f"{harness.HOT_SYMBOL}), {os.cpu_count()} CPU(s) shared with PostgreSQL, Redis and the feeder; "
            f"{runs.scale_out_seconds:.0f} s per run. Feeder: {harness.HOT_SYMBOL} every "
            f"{FEED_TICK_SECONDS * 1000:.0f} ms, the others every "
            f"{FEED_TICK_SECONDS * FEED_OTHERS_EVERY_TICKS * 1000:.0f} ms "
            f"(saturated: every instrument every {FEED_TICK_SECONDS * 1000:.0f} ms)."
        )
        print_scale_out(scale_results)
    print_targets(results)
    print(f"\ncode: {code}; load at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    if (now := harness.code_version()).split(", ")[-1] != code.split(", ")[-1]:
        print(f"WARNING: the sweep code changed during the run ({code} -> {now}): these figures mix both.")


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    quick = arguments.quick
    runs = Runs(
        warm=arguments.runs or (3 if quick else 11),
        cold=arguments.cold or (2 if quick else 5),
        breach_warm=min(arguments.runs or 3, 3),
        breach_cold=1 if quick else min(arguments.cold or 3, 3),
        hot_warm=arguments.runs or (3 if quick else 21),
        scale_out_seconds=arguments.scale_out_seconds or (3.0 if quick else 10.0),
    )
    harness.setup_django()
    from bench import latency_bench

    with harness.bench_database():
        markets = harness.ensure_instruments()
        if arguments.sections & {"shapes", "memory", "scaleout"}:
            run_scanner(arguments, markets, runs)
        if "plans" in arguments.sections:
            harness.clear_book(signals_too=True)
            plan_results = plan_bench.run_plans(
                markets,
                positions=arguments.plan_positions,
                quotes=arguments.plan_quotes,
                repeats=3 if quick else 5,
            )
            plan_bench.print_results(plan_results)
        if "latency" in arguments.sections:
            harness.clear_book(signals_too=True)
            iterations = arguments.latency_iterations or (10 if quick else 30)
            latency_bench.print_result(latency_bench.run_latency(markets, iterations=iterations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
