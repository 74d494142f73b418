"""Exit plans under load: sweeps in which the quotes move every signal's trailing stop.

Every signal is a buy with a trailing stop 10 pips behind the best price
(activation 0) and a stop-loss and take-profit far away; one signal in five also
has two partial take-profits. The first partial is crossed and executed for every
position of those signals at set-up (a fifth of the book): a standing order that
a sweep sends again only for a signal marked dirty (a fill, a reopen) or in the
once-a-minute safety net that re-sends them all (``positions.standing_orders``);
the second partial is never reached. Shapes:

* ``trailing``: 500 signals on 50 instruments (10 each), N positions;
* ``trailing, no partials``: the same without partial take-profits, the control
  that shows what the standing partial orders cost;
* ``hot instrument``: 2,000 signals on one instrument (EURUSD), N positions.

Before each timed sweep, k quotes per instrument are stored (k = 1, 10, 100 by
default), each one point above the last: the sweep walks every plan through k
quotes, the stop moves k times, and one plan row and one audit row per signal
are written. Steady-state sweeps (no dirty mark, safety net not due), and for
the shapes with partials one more case at k = 1: the safety-net sweep, which
re-sends every standing order (the claim looks at every position holding one).
Checked after every run: no close command, every signal judged, one
``signal.stop_moved`` audit row per signal (every stop moved).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from bench import harness  # imports no Django: safe before setup

HOT_SYMBOL = harness.HOT_SYMBOL
SIGNALS = 500  # the trailing shapes: 10 per instrument
HOT_SIGNALS = 2_000
PARTIAL_EVERY = 5  # one signal in five has partial take-profits
TRAILING_PIPS = 10
PARTIAL_FRACTION = "0.3"
DEFAULT_QUOTES = [1, 10, 100]


@dataclass(frozen=True)
class Shape:
    name: str
    signals: int
    symbols: list[str] | None  # None: every instrument
    partials: bool = True  # one signal in PARTIAL_EVERY with partial take-profits


@dataclass
class PlanResult:
    shape: str
    positions: int
    signals: int
    instruments: int
    quotes_per_sweep: int
    standing_partials: int  # positions whose first partial is a standing order, already executed
    measurement: harness.Measurement

    @property
    def plan_steps(self) -> int:
        return self.signals * self.quotes_per_sweep


def shapes() -> list[Shape]:
    return [
        Shape("trailing", SIGNALS, None),
        # The control: the same without partials, so without standing partial orders.
        Shape("trailing, no partials", SIGNALS, None, partials=False),
        Shape("hot instrument", HOT_SIGNALS, [HOT_SYMBOL]),
    ]


def _point(market: harness.Market) -> Decimal:
    return Decimal(1).scaleb(-market.digits)


def plan_levels(market: harness.Market, *, partials: bool) -> dict[str, Any]:
    """A buy's owner_only: sl 3% below, tp 20% above, a trailing stop; with ``partials``, a
    first partial two points above the mid (crossed at set-up) and a second 10% above."""
    levels: dict[str, Any] = {
        "sl": str(market.moved(-harness.WIDE)),
        "tp": str(market.moved(Decimal("0.2"))),
        "trailing": {"distance_pips": str(TRAILING_PIPS)},
    }
    if partials:
        levels["partial_take_profits"] = [
            {"price": str(market.mid + 2 * _point(market)), "fraction": PARTIAL_FRACTION},
            {"price": str(market.moved(Decimal("0.1"))), "fraction": PARTIAL_FRACTION},
        ]
    return levels


def create_plan_signal(market: harness.Market, *, partials: bool) -> harness.BenchSignal:
    from signals_app.events import Actor
    from signals_app.services import signal_create, signal_publish

    by = Actor.system("bench")
    levels = plan_levels(market, partials=partials)
    signal = signal_create(
        instrument=market.symbol,
        side="buy",
        entry_price=market.mid,
        ttl_minutes=240,
        payload={},
        owner_only=levels,
        by=by,
    )
    signal_publish(signal=signal, by=by)
    return harness.BenchSignal(
        pk=signal.pk,
        market=market,
        side="buy",
        sl=Decimal(levels["sl"]),
        tp=Decimal(levels["tp"]),
        near_few=False,
    )


@dataclass
class Book:
    shape: Shape
    markets: list[harness.Market]
    signals: list[harness.BenchSignal]
    positions: int
    standing_partials: int
    mids: dict[str, Decimal]


def build(shape: Shape, all_markets: list[harness.Market], positions: int) -> Book:
    """The shape's signals and book, and its steady state: plans saved, the first partial
    of one signal in five executed on every position (the EA acknowledged it)."""
    from positions.scanner import sweep

    harness.clear_book(signals_too=True)  # signals go, and their plans with them (CASCADE)
    harness.clear_quote_paths()
    markets = [m for m in all_markets if shape.symbols is None or m.symbol in shape.symbols]
    started = time.perf_counter()
    signals = [
        create_plan_signal(
            markets[index % len(markets)], partials=shape.partials and index % PARTIAL_EVERY == 0
        )
        for index in range(shape.signals)
    ]
    per_signal = positions // shape.signals
    created = harness.build_book(signals, per_signal, tag=shape.name.replace(" ", "-").replace(",", ""))
    with_partials = len(range(0, shape.signals, PARTIAL_EVERY)) * per_signal if shape.partials else 0
    # One quote per instrument past the first partials (bid = mid + 3 points).
    mids = {m.symbol: m.mid + m.pip * harness.SPREAD_PIPS + 3 * _point(m) for m in markets}
    for market in markets:
        harness.store_quote(market, mids[market.symbol])
    report = sweep()
    _expect(report.commands_created == with_partials, f"set-up sweep: {report}")
    harness.execute(
        "UPDATE positions_closecommand SET status = 'executed', completed_at = now(), "
        """result = '{"status": "executed"}' WHERE status = 'pending'"""
    )
    harness.execute(
        "UPDATE positions_openposition p SET status = 'open',"
        " remaining_volume = p.remaining_volume - c.volume"
        " FROM positions_closecommand c WHERE c.position_id = p.id AND p.status = 'closing'"
    )
    harness.vacuum_analyze(
        "positions_openposition", "positions_closecommand", "positions_signalplan", "signals_app_auditevent"
    )
    print(
        f"\n{shape.name}: {created:,} open positions ({shape.signals:,} signals x {per_signal} clients, "
        f"{len(markets)} instrument(s)); {with_partials:,} with a standing partial order; "
        f"built in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return Book(shape, markets, signals, created, with_partials, mids)


def measure(book: Book, quotes_per_sweep: int, repeats: int, *, recheck_all: bool = False) -> PlanResult:
    from core.redis import get_redis
    from positions import plan_store
    from positions.scanner import sweep
    from signals_app.choices import AuditAction
    from signals_app.models import AuditEvent

    signals = len(book.signals)
    last_audit = [0]

    def prepare() -> None:
        last_audit[0] = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
        if recheck_all:  # the safety net is due: this sweep re-sends every standing order
            get_redis().delete(plan_store._RECHECK_KEY)
        else:  # it has just run: not due for RECHECK_ALL_SECONDS
            plan_store.plans_recheck_all_due()
        for _ in range(quotes_per_sweep):
            for market in book.markets:
                book.mids[market.symbol] += _point(market)
                harness.store_quote(market, book.mids[market.symbol])

    def check(report: Any) -> None:
        judged = report.signals == signals and report.outcomes.get("none") == signals
        _expect(judged and report.commands_created == 0, report)
        moved = AuditEvent.objects.filter(pk__gt=last_audit[0], action=AuditAction.SIGNAL_STOP_MOVED).count()
        _expect(moved == signals, f"{moved} stops moved, expected {signals}")

    measurement = harness.measure(
        prepare=prepare, run=sweep, check=check, repeats=repeats, warmup=1, memory=False
    )
    return PlanResult(
        shape=f"{book.shape.name} (safety net)" if recheck_all else book.shape.name,
        positions=book.positions,
        signals=signals,
        instruments=len(book.markets),
        quotes_per_sweep=quotes_per_sweep,
        standing_partials=book.standing_partials,
        measurement=measurement,
    )


def run_plans(
    markets: list[harness.Market], *, positions: int, quotes: list[int], repeats: int
) -> list[PlanResult]:
    results = []
    for shape in shapes():
        book = build(shape, markets, positions)
        for quotes_per_sweep in quotes:
            print(f"  {quotes_per_sweep} quote(s) per instrument per sweep ...", end="", flush=True)
            result = measure(book, quotes_per_sweep, repeats)
            print(f" {result.measurement.median_ms:,.1f} ms", flush=True)
            results.append(result)
        if shape.partials:
            print("  the safety-net sweep, 1 quote per instrument ...", end="", flush=True)
            result = measure(book, 1, repeats, recheck_all=True)
            print(f" {result.measurement.median_ms:,.1f} ms", flush=True)
            results.append(result)
    harness.clear_book(signals_too=True)
    return results


def print_results(results: list[PlanResult]) -> None:
    print("\n" + "=" * 100)
    print(
        f"Exit plans: median sweep time, every signal a buy with a trailing stop {TRAILING_PIPS} pips "
        f"behind the best price, moved by every quote; 1 in {PARTIAL_EVERY} signals with partial "
        "take-profits (the first executed: a standing order, re-sent by the safety net)"
    )
    header = (
        f"  {'shape':<30} {'positions':>10} {'signals':>8} {'instr.':>6} {'quotes/sweep':>13} "
        f"{'plan steps':>11} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'us/step':>8} {'runs':>5}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for result in results:
        seconds = result.measurement.seconds
        print(
            f"  {result.shape:<30} {result.positions:>10,} {result.signals:>8,} {result.instruments:>6} "
            f"{result.quotes_per_sweep:>13} {result.plan_steps:>11,} {result.measurement.median_ms:>10,.1f} "
            f"{min(seconds) * 1000:>8,.1f} {max(seconds) * 1000:>8,.1f} "
            f"{result.measurement.median_ms * 1000 / result.plan_steps:>8.1f} {len(seconds):>5}"
        )


def _expect(condition: bool, detail: Any) -> None:
    # A benchmark of a sweep that did the wrong thing measures nothing.
    if not condition:
        raise RuntimeError(f"unexpected sweep result: {detail}")
