"""Breach scanner benchmark: positions.scanner.sweep() against the seed's per-position loop.

For each book size N (open positions; default 1k, 10k, 100k) over 500 signals on
50 instruments, it times a sweep with no breach and one with 1% of the positions
breached (5 signals cross their stop-loss), and in the same process and data the
seed's algorithm: load every open position, check each against its own quote
fetch, create close commands one by one. Then it times sweeps of exit plans whose
trailing stops the quotes move, k quotes per sweep (bench/plan_bench.py: every
signal trailing over 50 instruments, and 2,000 signals on one hot instrument; N =
100k, 10k with --quick), and the quote → close-command latency with a real Celery
worker (bench/latency_bench.py).

    make bench                                   # everything
    make bench BENCH_ARGS="--sizes 1000,10000"   # fewer sizes
    make bench BENCH_ARGS="--quick"              # smoke run: 1k and 10k, few repetitions
    make bench BENCH_ARGS="--only scanner --explain"
    make bench BENCH_ARGS="--only plans --plan-positions 100000 --plan-quotes 1,10,100"

Targets are reported, not enforced: the exit status is 0 whenever the run worked.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Run as a script (`python bench/scanner_bench.py`): the repository root must be
# importable for `bench` and the Django project alike.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness, plan_bench  # import no Django: safe before setup

DEFAULT_SIZES = [1_000, 10_000, 100_000]
QUICK_SIZES = [1_000, 10_000]
DEFAULT_PLAN_POSITIONS = 100_000
QUICK_PLAN_POSITIONS = 10_000

# Targets from the issue.
TARGET_NO_BREACH_MS = 50.0
TARGET_BREACH_MS = 250.0
TARGET_SPEEDUP = 50.0
TARGET_MEMORY_RATIO = 1.2
TARGET_SIZE = 100_000


@dataclass(frozen=True)
class Plan:
    scanner_repeats_clear: int
    scanner_repeats_breach: int
    baseline_repeats: dict[int, int]  # by N; default below
    baseline_memory: bool
    latency_iterations: int
    plan_repeats: int

    def baseline_repeats_for(self, size: int) -> int:
        return self.baseline_repeats.get(size, 1 if size >= 100_000 else 3)


@dataclass
class CaseResult:
    case: str
    scanner: harness.Measurement
    baseline: harness.Measurement | None
    commands: int

    @property
    def ratio(self) -> float | None:
        if self.baseline is None:
            return None
        return self.baseline.median_ms / self.scanner.median_ms


# --- the seed's algorithm, kept here as the baseline --------------------------------


def baseline_sweep() -> int:
    """The seed's monitor: every open position loaded, decrypted, quoted and judged alone.

    Per position: its signal's levels are decrypted and parsed, its instrument's
    latest quote is fetched (one Redis round trip each), the breach rule is applied
    (buy on the bid, sell on the ask), and a breach queues its close through
    ``close_command_request`` (its own transaction, update, insert and audit row).
    """
    from django.conf import settings

    from positions.choices import CloseReason
    from positions.closes import close_command_request
    from positions.models import OpenPosition
    from positions.quotes import quote_latest
    from positions.rules import breach
    from signals_app.events import Actor
    from signals_app.hidden_levels import parse_hidden_levels

    by = Actor.system("baseline")
    created = 0
    for position in OpenPosition.objects.filter(status="open").select_related("signal", "instrument"):
        levels = parse_hidden_levels(position.signal.owner_only)
        quote = quote_latest(position.instrument.symbol)
        if quote is None:
            continue
        level = breach(
            side=position.side,
            sl=levels.sl,
            tp=levels.tp,
            bid=quote.bid,
            ask=quote.ask,
            tolerance=settings.BREACH_PRICE_TOLERANCE_PIPS * position.instrument.pip_size,
        )
        if level is None:
            continue
        command = close_command_request(
            position=position, reason=CloseReason(level), by=by, trigger_quote=quote.as_json()
        )
        created += command is not None
    return created


# --- one book size ----------------------------------------------------------------------


def run_size(
    size: int, markets: list[harness.Market], signals: list[harness.BenchSignal], plan: Plan, explain: bool
) -> list[CaseResult]:
    from positions.scanner import sweep

    per_signal = size // harness.SIGNALS
    expected = harness.BREACHED_SIGNALS * per_signal
    harness.clear_book()
    started = time.perf_counter()
    created = harness.build_book(signals, per_signal, tag=str(size))
    print(
        f"\nN = {created:,} open positions ({harness.SIGNALS} signals x {per_signal} clients, "
        f"{harness.INSTRUMENTS} instruments); built in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    moved = {signal.market.symbol: signal.breaching_mid() for signal in signals if signal.breach_target}

    def clear() -> None:
        harness.store_market(markets)

    def breached() -> None:
        harness.reset_breaches()
        harness.store_market(markets, moved)

    def scanner_clear(report: Any) -> None:
        _expect(report.commands_created == 0 and report.outcomes.get("none") == harness.SIGNALS, report)

    def scanner_breached(report: Any) -> None:
        ok = report.breached_signals == harness.BREACHED_SIGNALS and report.commands_created == expected
        _expect(ok, report)

    def baseline_clear(commands: int) -> None:
        _expect(commands == 0, f"baseline created {commands} commands, expected none")

    def baseline_breached(commands: int) -> None:
        _expect(commands == expected, f"baseline created {commands} commands, expected {expected}")

    results = []
    for case, prepare, check_scanner, check_baseline, repeats, commands in (
        ("no breach", clear, scanner_clear, baseline_clear, plan.scanner_repeats_clear, 0),
        (
            f"1% breached ({expected:,})",
            breached,
            scanner_breached,
            baseline_breached,
            plan.scanner_repeats_breach,
            expected,
        ),
    ):
        print(f"  {case}: scanner ...", end="", flush=True)
        scanner = harness.measure(prepare=prepare, run=sweep, check=check_scanner, repeats=repeats, warmup=1)
        print(f" {scanner.median_ms:.1f} ms; baseline ...", end="", flush=True)
        baseline = None
        if plan.baseline_repeats_for(size):
            baseline = harness.measure(
                prepare=prepare,
                run=baseline_sweep,
                check=check_baseline,
                repeats=plan.baseline_repeats_for(size),
                memory=plan.baseline_memory,
            )
            print(f" {baseline.median_ms:,.0f} ms", flush=True)
        results.append(CaseResult(case, scanner, baseline, commands))
    if explain:
        explain_statements(signals, markets)
    harness.reset_breaches()
    return results


def _expect(condition: bool, detail: Any) -> None:
    # A benchmark of a sweep that did the wrong thing measures nothing.
    if not condition:
        raise RuntimeError(f"unexpected sweep result: {detail}")


# The scanner's statements worth a plan, each known by a fragment of its SQL.
EXPLAINED = {
    "signals with live positions": "WITH RECURSIVE walk",
    "the close claim (breached signals)": "WITH wanted",
    "held back by canary": "NOT c.auto_close_enabled",
}


def explain_statements(signals: list[harness.BenchSignal], markets: list[harness.Market]) -> None:
    """EXPLAIN ANALYZE of the scanner's SQL on this book: a breaching sweep runs inside a
    rolled-back transaction with its statements captured, then each one of ``EXPLAINED``
    is explained (and so run again) in a rolled-back transaction of its own."""
    from django.db import connection, transaction

    from positions.scanner import sweep

    moved = {signal.market.symbol: signal.breaching_mid() for signal in signals if signal.breach_target}
    harness.reset_breaches()
    harness.store_market(markets, moved)
    captured: dict[str, tuple[str, Any]] = {}

    def capture(execute, sql, params, many, context):
        for title, fragment in EXPLAINED.items():
            if fragment in sql:
                captured.setdefault(title, (sql, params))
        return execute(sql, params, many, context)

    with transaction.atomic():
        with connection.execute_wrapper(capture):
            sweep()
        transaction.set_rollback(True)
    for title, (sql, params) in captured.items():
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", params)
            plan = "\n".join(f"      {row[0]}" for row in cursor.fetchall())
            transaction.set_rollback(True)
        print(f"\n    EXPLAIN ANALYZE: {title}\n{plan}")


# --- report -------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def print_table(size: int, results: list[CaseResult]) -> None:
    print(f"\nN = {size:,} open positions")
    header = (
        f"  {'case':<24} {'scanner ms':>11} {'baseline ms':>12} {'ratio':>9} "
        f"{'scanner MiB':>12} {'baseline MiB':>13} {'runs (s/b)':>11}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for result in results:
        baseline = result.baseline
        print(
            f"  {result.case:<24} {result.scanner.median_ms:>11.1f} "
            f"{_fmt(baseline and baseline.median_ms, ',.1f'):>12} {_fmt(result.ratio, ',.0f', 'x'):>9} "
            f"{_fmt(result.scanner.peak_mib, '.3f'):>12} {_fmt(baseline and baseline.peak_mib, ',.1f'):>13} "
            f"{len(result.scanner.seconds):>5}/{len(baseline.seconds) if baseline else 0:<5}"
        )


def _verdict(value: float | None, target: float, *, at_most: bool, unit: str) -> str:
    if value is None:
        return "not measured"
    met = value <= target if at_most else value >= target
    if met:
        return "met"
    gap = value - target if at_most else target - value
    factor = value / target if at_most else target / value
    return f"MISSED by {gap:,.1f}{unit} ({factor:.2f}x the target)"


def print_summary(all_results: dict[int, list[CaseResult]]) -> None:
    sizes = sorted(all_results)
    small, large = sizes[0], sizes[-1]
    if large != small:
        print(f"\nScanner peak memory, N = {large:,} vs N = {small:,}")
        for index, result in enumerate(all_results[large]):
            small_peak = all_results[small][index].scanner.peak_bytes
            large_peak = result.scanner.peak_bytes
            if small_peak and large_peak:
                case = result.case.split(" (")[0]
                print(
                    f"  {case:<24} {large_peak / 2**20:.3f} / {small_peak / 2**20:.3f} MiB"
                    f" = {large_peak / small_peak:.2f}x"
                )
    if TARGET_SIZE not in all_results:
        print(f"\n(targets are stated at N = {TARGET_SIZE:,}; not run)")
        return
    clear, breach = all_results[TARGET_SIZE]
    print(f"\nTargets at N = {TARGET_SIZE:,} (reported, not enforced)")
    rows = [
        (
            f"sweep, no breach: median <= {TARGET_NO_BREACH_MS:.0f} ms",
            f"{clear.scanner.median_ms:.1f} ms",
            _verdict(clear.scanner.median_ms, TARGET_NO_BREACH_MS, at_most=True, unit=" ms"),
        ),
        (
            f"sweep, {breach.commands:,} breached: median <= {TARGET_BREACH_MS:.0f} ms",
            f"{breach.scanner.median_ms:.1f} ms",
            _verdict(breach.scanner.median_ms, TARGET_BREACH_MS, at_most=True, unit=" ms"),
        ),
    ]
    for result in (clear, breach):
        rows.append(
            (
                f"{result.case.split(' (')[0]}: >= {TARGET_SPEEDUP:.0f}x the baseline",
                _fmt(result.ratio, ",.0f", "x"),
                _verdict(result.ratio, TARGET_SPEEDUP, at_most=False, unit="x"),
            )
        )
    if 1_000 in all_results:
        for index, result in enumerate(all_results[TARGET_SIZE]):
            small_peak = all_results[1_000][index].scanner.peak_bytes
            ratio = (
                result.scanner.peak_bytes / small_peak if small_peak and result.scanner.peak_bytes else None
            )
            rows.append(
                (
                    f"{result.case.split(' (')[0]}: peak memory <= {TARGET_MEMORY_RATIO}x N = 1,000",
                    _fmt(ratio, ".2f", "x"),
                    _verdict(ratio, TARGET_MEMORY_RATIO, at_most=True, unit="x"),
                )
            )
    for label, value, verdict in rows:
        print(f"  {label:<46} {value:>10}   {verdict}")


# --- main -----------------------------------------------------------------------------------


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/scanner_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes",
        type=lambda text: [int(part.replace("_", "")) for part in text.split(",") if part],
        default=None,
        help="open-position counts, comma-separated, multiples of 500 (default 1000,10000,100000)",
    )
    parser.add_argument("--quick", action="store_true", help="few repetitions; sizes 1000,10000 unless given")
    parser.add_argument("--only", choices=["scanner", "plans", "latency"], help="run one benchmark only")
    parser.add_argument("--latency-iterations", type=int, default=None, help="default 30 (10 with --quick)")
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN ANALYZE of the scanner's SQL")
    parser.add_argument(
        "--plan-positions",
        type=lambda text: int(text.replace("_", "")),
        default=None,
        help=f"open positions of each exit-plan shape, a multiple of {plan_bench.HOT_SIGNALS} "
        f"(default {DEFAULT_PLAN_POSITIONS}, {QUICK_PLAN_POSITIONS} with --quick)",
    )
    parser.add_argument(
        "--plan-quotes",
        type=lambda text: [int(part) for part in text.split(",") if part],
        default=plan_bench.DEFAULT_QUOTES,
        help="quotes per instrument before each exit-plan sweep, comma-separated (default 1,10,100)",
    )
    arguments = parser.parse_args(argv)
    arguments.sizes = arguments.sizes or (QUICK_SIZES if arguments.quick else DEFAULT_SIZES)
    for size in arguments.sizes:
        if size <= 0 or size % harness.SIGNALS:
            parser.error(f"--sizes: {size} is not a positive multiple of {harness.SIGNALS}")
    arguments.plan_positions = arguments.plan_positions or (
        QUICK_PLAN_POSITIONS if arguments.quick else DEFAULT_PLAN_POSITIONS
    )
    if arguments.plan_positions <= 0 or arguments.plan_positions % plan_bench.HOT_SIGNALS:
        parser.error(f"--plan-positions: not a positive multiple of {plan_bench.HOT_SIGNALS}")
    if not arguments.plan_quotes or min(arguments.plan_quotes) < 1:
        parser.error("--plan-quotes: one or more positive counts")
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    plan = Plan(
        scanner_repeats_clear=3 if arguments.quick else 7,
        scanner_repeats_breach=3 if arguments.quick else 5,
        baseline_repeats={size: 1 for size in arguments.sizes} if arguments.quick else {},
        baseline_memory=not arguments.quick,
        latency_iterations=arguments.latency_iterations or (10 if arguments.quick else 30),
        plan_repeats=3 if arguments.quick else 5,
    )
    harness.setup_django()
    from bench import latency_bench

    with harness.bench_database():
        markets = harness.ensure_instruments()
        if arguments.only in (None, "scanner"):
            signals = harness.create_signals(markets)
            all_results = {}
            for size in sorted(arguments.sizes):
                all_results[size] = run_size(size, markets, signals, plan, arguments.explain)
            print("\n" + "=" * 100)
            print(
                f"Breach scanner: median sweep time, baseline = the seed's per-position loop "
                f"({harness.SIGNALS} signals, {harness.INSTRUMENTS} instruments, real PostgreSQL + Redis)"
            )
            for size in sorted(all_results):
                print_table(size, all_results[size])
            print_summary(all_results)
        if arguments.only in (None, "plans"):
            plan_results = plan_bench.run_plans(
                markets,
                positions=arguments.plan_positions,
                quotes=arguments.plan_quotes,
                repeats=plan.plan_repeats,
            )
            plan_bench.print_results(plan_results)
        if arguments.only in (None, "latency"):
            harness.clear_book(signals_too=True)
            result = latency_bench.run_latency(markets, iterations=plan.latency_iterations)
            latency_bench.print_result(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
