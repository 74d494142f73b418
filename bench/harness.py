"""What the benchmarks share: Django set-up, a database and Redis db of their own, the book,
quotes, and the ways of timing (interleaved in one process, or in fresh processes).

The benchmarks run against the real servers the tests use (``make bench`` goes
through ``config.embedded``), but never against the data of ``make run``, a
concurrent ``make test`` or another bench:

* PostgreSQL: a database of this run alone, ``bench_<pid>_<unix time>``, created
  with Django's test database machinery (migrations, seeded instruments) and
  dropped at the end, also when the run fails or is stopped (Ctrl-C, SIGTERM).
  Two runs on one server, at the same time or one after the other, never share
  it. Only a run killed with SIGKILL leaves it behind: its name is printed at
  the start, ``DROP DATABASE <name> WITH (FORCE)`` removes it;
* Redis: its own database number (``REDIS_TEST_DB``, 12 unless set), flushed at
  the end. Not 9, the one ``make test`` uses: that is also the Celery broker of
  the test suite's workers. A db that holds keys when the bench starts is
  someone else's (a test run with that ``REDIS_TEST_DB``, another bench): the
  bench refuses it rather than flush it.

Processes the bench starts (sweeping processes, a Celery worker) get the
database's URL and the same Redis db; they are stopped before the database is
dropped.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from secrets import token_hex
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_REDIS_DB = "12"

INSTRUMENTS = 50
EXTRA_INSTRUMENTS = [f"BENCH{index:02d}" for index in range(1, 37)]  # 14 seeded + 36 = 50
HOT_SYMBOL = "EURUSD"

# The levels, as fractions of the entry (= the market when the bench starts). Every
# signal has one level below the market and one above, whatever its side: a buy's
# stop-loss and a sell's take-profit below, the others above. The level below is
# NEAR_FEW away for one signal in NEAR_FEW_EVERY, NEAR for the rest; the one above
# FAR. So a move down by FEW_BREACH_MOVE crosses the levels of one signal in ten
# (stops of buys, targets of sells: both rules), one by ALL_BREACH_MOVE crosses
# every signal's, and the market itself crosses none. Both moves stay under the 2%
# spike guard (SPIKE_MAX_JUMP_FRACTION) from the quote before them.
NEAR_FEW = Decimal("0.005")
NEAR = Decimal("0.015")
FAR = Decimal("0.03")
NEAR_FEW_EVERY = 10
FEW_BREACH_MOVE = Decimal("-0.01")
ALL_BREACH_MOVE = Decimal("-0.018")
WIDE = FAR  # the exit-plan bench's stop distance
SPREAD_PIPS = 1  # bid = mid - 1 pip, ask = mid + 1 pip

# Plausible mids for the seeded instruments; the BENCHxx ones trade near 1.1.
BASE_MID = {
    "AUDUSD": "0.66000",
    "BTCUSD": "95000.00",
    "ETHUSD": "3300.00",
    "EURUSD": "1.08500",
    "GBPUSD": "1.27000",
    "NZDUSD": "0.60000",
    "US100": "20800.00",
    "US30": "42000.00",
    "US500": "5900.00",
    "USDCAD": "1.36000",
    "USDCHF": "0.88000",
    "USDJPY": "150.000",
    "XAGUSD": "31.000",
    "XAUUSD": "2650.00",
}
DEFAULT_MID = "1.10000"


def setup_django() -> None:
    """Configure the environment the way ``make test`` does, then ``django.setup()``."""
    if os.environ.get("DJANGO_ENV") != "test":
        # Only DJANGO_ENV=test moves REDIS_URL off the db `make run` uses; the
        # bench flushes its Redis db, so anything else could wipe real data.
        raise SystemExit("run the benchmarks with DJANGO_ENV=test (make bench does)")
    os.environ.setdefault("REDIS_TEST_DB", BENCH_REDIS_DB)
    # Production runs with DEBUG off; with it on, Django keeps every query it runs
    # (CursorDebugWrapper), which costs time and memory the product never pays.
    os.environ["DEBUG"] = "false"
    # The scanner logs each close at INFO; a thousand lines per run is noise here.
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    # Metrics of a throwaway run must not land in a running system's directory.
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


SWEEP_CODE = ("positions", "signals_app", "core", "config")  # what a sweep runs


def code_version() -> str:
    """The commit measured and a digest of the code a sweep runs (``SWEEP_CODE`` as
    committed, plus any uncommitted change to it): figures belong to the code they were
    taken on, and a run whose sweep code changed under it says so (``scanner_bench``
    compares the two; changes elsewhere, in the EA gateway say, do not count)."""
    git = shutil.which("git")
    if git is None:
        return "unknown (no git)"

    def run(*arguments: str) -> str:
        return subprocess.run(  # noqa: S603 - fixed argv
            [git, *arguments], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout

    try:
        commit = run("rev-parse", "--short", "HEAD").strip()
        trees = run("rev-parse", *(f"HEAD:{path}" for path in SWEEP_CODE))
        diff = run("diff", "HEAD", "--", *SWEEP_CODE)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (git failed)"
    digest = hashlib.sha1((trees + diff).encode(), usedforsecurity=False).hexdigest()[:8]
    changed = sum(1 for line in diff.splitlines() if line.startswith("diff --git"))
    return f"{commit}, sweep code {digest}" + (f" ({changed} file(s) uncommitted)" if changed else "")


# --- database and Redis ---------------------------------------------------------

_children: list[subprocess.Popen] = []  # processes to stop before the database is dropped


def bench_database_name() -> str:
    return f"bench_{os.getpid()}_{int(time.time())}"


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    # Turn SIGTERM into an exception, so the `finally` that drops the database runs.
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A fresh, migrated database of this run and an empty Redis db, removed afterwards
    (also on an error, Ctrl-C or SIGTERM). Yields the database's name."""
    from django.conf import settings
    from django.db import connection

    redis = _bench_redis()
    name = bench_database_name()
    print(f"bench database: {name} (Redis db {os.environ['REDIS_TEST_DB']})", flush=True)
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = name
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    previous_handler = signal.signal(signal.SIGTERM, _stop_on_sigterm)
    old_name = connection.settings_dict["NAME"]
    try:
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=False, keepdb=False)
        with connection.cursor() as cursor:
            # The audit log refuses DELETE (migration 0003). Resetting a breach run
            # must delete the audit rows the sweep inserted, so in this throwaway
            # database the append-only trigger is off. It fires only on UPDATE and
            # DELETE, which neither the scanner nor the baseline does: no timing changes.
            cursor.execute("ALTER TABLE signals_app_auditevent DISABLE TRIGGER USER")
        redis.flushdb()
        yield name
    finally:
        stop_children()
        from positions.claim_apart import pool_close

        pool_close()  # the mass claim's threads keep their connections
        try:
            redis.flushdb()
        finally:
            _drop_database(name, old_name)
            signal.signal(signal.SIGTERM, previous_handler)


def _drop_database(name: str, old_name: str) -> None:
    from django.db import connection

    try:
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)
    except Exception as error:  # a session left open (a killed child): force it
        print(f"dropping {name}: {error}; retrying WITH (FORCE)", file=sys.stderr, flush=True)
        connection.close()
        connection.settings_dict["NAME"] = old_name
        with connection._nodb_cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"bench database {name} dropped", flush=True)


def _bench_redis():
    from django.conf import settings

    from core.redis import get_redis

    redis = get_redis()
    db = redis.connection_pool.connection_kwargs.get("db", 0)
    if str(db) != os.environ["REDIS_TEST_DB"] or int(db) == 0:
        raise SystemExit(f"refusing to flush Redis db {db} ({settings.REDIS_URL}): not the bench's db")
    if keys := redis.dbsize():
        raise SystemExit(
            f"Redis db {db} holds {keys} keys: another run (tests or a bench) uses it. Pick a free "
            f"db with REDIS_TEST_DB=<n>, or empty this one if it is yours (redis-cli -n {db} flushdb)."
        )
    return redis


def database_url() -> str:
    """A DATABASE_URL for the bench database, for the processes the bench starts."""
    from django.db import connection

    from config.environment import database_url as url_for

    return url_for(connection.settings_dict)


def child_environment() -> dict[str, str]:
    """The environment of a process the bench starts: this run's database and Redis db."""
    from django.conf import settings

    environment = dict(os.environ)
    environment.update(
        {
            "DATABASE_URL": database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "DJANGO_ENV": "test",
            "REDIS_TEST_DB": os.environ["REDIS_TEST_DB"],
            "DEBUG": "false",
            "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return environment


def start_child(command: list[str], **popen: Any) -> subprocess.Popen:
    """Start a process of the bench's own (stopped before the database is dropped)."""
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=child_environment(), **popen)  # noqa: S603
    _children.append(process)
    return process


def stop_children() -> None:
    while _children:
        process = _children.pop()
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(15)


def execute(sql: str, params: list[Any] | None = None) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def fetch_value(sql: str, params: list[Any] | None = None) -> Any:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    return row[0] if row else None


def vacuum_analyze(*tables: str) -> None:
    # After bulk loads and resets: fresh statistics and a set visibility map, as
    # autovacuum would leave a production table at rest. Without it the first
    # sweeps pay for hint bits and heap visits the steady state never sees.
    execute(f"VACUUM (ANALYZE) {', '.join(tables)}")


# --- instruments, prices, signals -------------------------------------------------


@dataclass(frozen=True)
class Market:
    instrument_id: int
    symbol: str
    mid: Decimal
    pip: Decimal
    digits: int

    def quantize(self, price: Decimal) -> Decimal:
        return price.quantize(Decimal(1).scaleb(-self.digits))

    def moved(self, fraction: Decimal) -> Decimal:
        return self.quantize(self.mid * (1 + fraction))

    def bid_ask(self, mid: Decimal) -> tuple[Decimal, Decimal]:
        half_spread = self.pip * SPREAD_PIPS
        return mid - half_spread, mid + half_spread


def ensure_instruments() -> list[Market]:
    """The 14 seeded instruments plus BENCH01..36: 50, in symbol order."""
    from signals_app.models import Instrument

    Instrument.objects.bulk_create(
        [
            Instrument(
                symbol=symbol,
                description="benchmark instrument",
                digits=5,
                pip_size=Decimal("0.0001"),
                contract_size=Decimal(100000),
            )
            for symbol in EXTRA_INSTRUMENTS
        ],
        ignore_conflicts=True,
    )
    instruments = list(Instrument.objects.filter(active=True).order_by("symbol"))
    if len(instruments) != INSTRUMENTS:
        raise RuntimeError(f"expected {INSTRUMENTS} active instruments, found {len(instruments)}")
    return [
        Market(
            instrument_id=instrument.pk,
            symbol=instrument.symbol,
            mid=Decimal(BASE_MID.get(instrument.symbol, DEFAULT_MID)),
            pip=instrument.pip_size,
            digits=instrument.digits,
        )
        for instrument in instruments
    ]


@dataclass(frozen=True)
class BenchSignal:
    pk: int
    market: Market
    side: str
    sl: Decimal
    tp: Decimal
    near_few: bool  # its level below the market is NEAR_FEW away (crossed by FEW_BREACH_MOVE)


def levels_for(market: Market, side: str, *, near: Decimal) -> tuple[Decimal, Decimal]:
    """(sl, tp): the level below the market ``near`` away, the one above FAR."""
    below, above = market.moved(-near), market.moved(FAR)
    return (below, above) if side == "buy" else (above, below)


def create_signal(market: Market, side: str, *, near_few: bool) -> BenchSignal:
    """Through the production services, so ``owner_only`` is Fernet-encrypted as in production.

    Published before any client exists: ``signal_publish`` fans an approval out to
    every active client, and the bench makes its own (one per position) later.
    """
    from signals_app.events import Actor
    from signals_app.services import signal_create, signal_publish

    by = Actor.system("bench")
    sl, tp = levels_for(market, side, near=NEAR_FEW if near_few else NEAR)
    signal = signal_create(
        instrument=market.symbol,
        side=side,
        entry_price=market.mid,
        ttl_minutes=240,
        payload={},
        owner_only={"sl": str(sl), "tp": str(tp)},
        by=by,
    )
    signal_publish(signal=signal, by=by)
    return BenchSignal(pk=signal.pk, market=market, side=side, sl=sl, tp=tp, near_few=near_few)


def create_signals(
    markets: list[Market], count: int, *, hot: str | None = None, hot_count: int = 0
) -> list[BenchSignal]:
    """``count`` signals: ``hot_count`` of them on the ``hot`` instrument, the rest round the
    other instruments (or all of them without a hot one). Buys and sells alternate on every
    instrument; one signal in NEAR_FEW_EVERY has its level below NEAR_FEW away."""
    hot_market = next((market for market in markets if market.symbol == hot), None) if hot else None
    others = [market for market in markets if market is not hot_market]
    seen: dict[str, int] = {}
    signals = []
    for index in range(count):
        market = hot_market if index < hot_count and hot_market else others[index % len(others)]
        nth = seen[market.symbol] = seen.get(market.symbol, -1) + 1
        side = "buy" if nth % 2 == 0 else "sell"
        signals.append(create_signal(market, side, near_few=index % NEAR_FEW_EVERY == 0))
    return signals


# --- the book: clients, devices, approvals, positions -------------------------------

BOOK_TABLES = [
    "positions_closecommand",
    "positions_alert",
    "positions_openposition",
    "signals_app_approval",
    "ea_gateway_device",
    "signals_app_client",
]


def clear_book(*, signals_too: bool = False) -> None:
    tables = [*BOOK_TABLES, "signals_app_auditevent"]
    if signals_too:
        tables.append("signals_app_signal")
    # CASCADE: whatever else references clients, devices or signals (alerts, heartbeats,
    # plans, the seed baseline's tables) goes too.
    execute(f"TRUNCATE {', '.join(tables)} CASCADE")
    plans_changed()  # sweep workers' books must forget them


def build_book(signals: list[BenchSignal], clients_per_signal: int, *, tag: str, chunk: int = 10_000) -> int:
    """``clients_per_signal`` clients (one EA device each), and one approval and one
    open position per signal and client: ``len(signals) * clients_per_signal`` positions.

    The same clients hold a position on every signal, as subscribers do. Rows are
    written with ``bulk_create`` in batches (the shapes of ``tests.factories.open_book``),
    bypassing the fill service: setup, not what is measured.
    """
    from datetime import timedelta

    from django.utils import timezone

    from ea_gateway.models import Device
    from positions.models import OpenPosition
    from signals_app.choices import ApprovalStatus
    from signals_app.models import Approval, Client

    clients = Client.objects.bulk_create(
        [Client(name=f"bench-{tag}-{index}", auto_close_enabled=True) for index in range(clients_per_signal)]
    )
    devices = Device.objects.bulk_create(
        [
            Device(
                name=f"EA {client.name}",
                role="ea",
                client=client,
                key_id=f"vsk_{tag}_{index}",
                secret=token_hex(16),
            )
            for index, client in enumerate(clients)
        ]
    )
    volume = Decimal("0.10")
    expires = timezone.now() + timedelta(hours=4)
    # About ``chunk`` rows of model instances alive at a time, not the whole book:
    # the set-up should not inflate the process the benchmark then measures.
    signals_per_chunk = max(1, chunk // clients_per_signal)
    created = 0
    for start in range(0, len(signals), signals_per_chunk):
        batch = signals[start : start + signals_per_chunk]
        approvals = Approval.objects.bulk_create(
            [
                Approval(
                    signal_id=signal.pk,
                    client=client,
                    volume=volume,
                    status=ApprovalStatus.EXECUTED,
                    expires_at=expires,
                )
                for signal in batch
                for client in clients
            ],
            batch_size=5000,
        )
        positions = []
        for offset, approval in enumerate(approvals):
            signal = batch[offset // clients_per_signal]
            index = offset % clients_per_signal
            positions.append(
                OpenPosition(
                    signal_id=signal.pk,
                    approval=approval,
                    client=clients[index],
                    device=devices[index],
                    instrument_id=signal.market.instrument_id,
                    side=signal.side,
                    requested_entry_price=signal.market.mid,
                    entry_price=signal.market.mid,
                    volume=volume,
                    remaining_volume=volume,
                    broker_ticket=f"{signal.pk}-{index}",
                )
            )
        OpenPosition.objects.bulk_create(positions, batch_size=5000)
        created += len(positions)
    vacuum_analyze(*BOOK_TABLES, "signals_app_signal", "signals_app_instrument")
    return created


# --- quotes -------------------------------------------------------------------------

_last_ts = 0.0


def next_ts() -> float:
    """Now, but strictly after every quote stored so far: the store keeps only newer quotes."""
    global _last_ts
    _last_ts = max(time.time(), _last_ts + 1e-6)
    return _last_ts


def store_quotes(prices: list[tuple[Market, Decimal]]) -> None:
    """One quote per (market, mid), in order, freshly stamped, in one round trip."""
    from positions.quotes import Quote, quotes_store

    quotes = []
    for market, mid in prices:
        bid, ask = market.bid_ask(mid)
        quotes.append(Quote(market.symbol, bid, ask, next_ts()))
    received_at = next_ts()
    stored = quotes_store(quotes, received_at=received_at)
    if not all(stored):
        raise RuntimeError("a bench quote was not stored (an older one is newer?)")


def store_quote(market: Market, mid: Decimal) -> None:
    store_quotes([(market, mid)])


def clear_quote_paths() -> None:
    """Empty every instrument's quote path (``positions.quote_path``): a sweep then walks
    only the quotes stored after this."""
    from core.redis import get_redis
    from positions.quotes import PATH_KEY

    redis = get_redis()
    for key in redis.scan_iter(PATH_KEY.format(symbol="*")):
        redis.delete(key)


def store_market(markets: list[Market], move: Decimal | None = None) -> None:
    """Every instrument at its mid, freshly stamped; then, with ``move``, every instrument
    moved by that fraction. The quote paths hold these quotes only.

    The moved quote follows the unmoved one, so the spike guard compares the move with
    the quote just before it (under SPIKE_MAX_JUMP_FRACTION).
    """
    clear_quote_paths()
    prices = [(market, market.mid) for market in markets]
    if move is not None:
        prices += [(market, market.moved(move)) for market in markets]
    store_quotes(prices)


# --- resetting a breach ---------------------------------------------------------------

PENDING_KEY = "veilstop:breach-pending"
# The audit actions (signals_app.choices.AuditAction) a sweep writes, undone by a reset.
RESET_AUDIT_ACTIONS = (
    "POSITION_CLOSE_REQUESTED",
    "SIGNAL_PLAN_EXITED",
    "SIGNAL_PARTIAL_TP_HIT",
    "SIGNAL_STOP_MOVED",
    "APPROVAL_WITHDRAWN",
)
SCAN_QUEUED_PATTERN = "veilstop:scan-queued:*"


def reset_breaches() -> None:
    """Undo what a breach run wrote: positions open again, no close commands, exit plans
    as at publication (not ended, stop not moved), no close or plan audit rows, no
    alerts, no pending breach marks or unread quote paths in Redis."""
    from core.redis import get_redis
    from signals_app.choices import AuditAction

    execute("DELETE FROM positions_closecommand")
    execute("DELETE FROM positions_alert")
    execute("DELETE FROM positions_signalplan")
    execute(
        "DELETE FROM signals_app_auditevent WHERE action = ANY(%s)",
        [[AuditAction[name].value for name in RESET_AUDIT_ACTIONS if name in AuditAction.__members__]],
    )
    execute("UPDATE positions_openposition SET status = 'open' WHERE status <> 'open'")
    plans_changed()
    clear_quote_paths()
    redis = get_redis()
    redis.delete(PENDING_KEY)
    for key in redis.scan_iter(SCAN_QUEUED_PATTERN):
        redis.delete(key)
    vacuum_analyze(
        "positions_openposition", "positions_closecommand", "positions_signalplan", "signals_app_auditevent"
    )


def plans_changed() -> None:
    """Tell every sweeping process that what its sweeps watch changed behind the services'
    back (a reset deleted the plans' states and reopened positions): sweep workers keep
    plans in memory and re-read an instrument when its ``plans_version`` moves. Through the
    product's own call for it, ``signals_app.services.instrument_plans_changed``, for every
    instrument (a product without it keeps nothing to re-read)."""
    from django.db import transaction

    from signals_app import services
    from signals_app.models import Instrument

    changed = getattr(services, "instrument_plans_changed", None)
    if changed is None:
        return
    with transaction.atomic():
        for instrument_id in Instrument.objects.order_by("pk").values_list("pk", flat=True):
            changed(instrument_id)


# --- measuring in this process ----------------------------------------------------------


@dataclass
class Measurement:
    seconds: list[float]
    peak_bytes: int | None = None

    @property
    def median_ms(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def peak_mib(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / 2**20


def measure(
    *,
    prepare: Callable[[], None],
    run: Callable[[], Any],
    check: Callable[[Any], None],
    repeats: int,
    warmup: int = 0,
    memory: bool = True,
) -> Measurement:
    """``repeats`` timed runs, each after ``prepare`` (outside the clock), then one
    more under tracemalloc for the peak of Python memory allocated during the run."""
    for _ in range(warmup):
        prepare()
        check(run())
    seconds = []
    for _ in range(repeats):
        prepare()
        gc.collect()  # a collection owed by the set-up must not land in the timed run
        started = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - started)
        check(result)
    peak = None
    if memory:
        prepare()
        gc.collect()
        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            result = run()
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        check(result)
    return Measurement(seconds, peak)


@dataclass(frozen=True)
class Contender:
    """One implementation in an interleaved comparison: ``prepare`` (not timed), ``run``
    (timed), ``check`` (its result must be what the shape says, or nothing was measured)."""

    name: str
    prepare: Callable[[], None]
    run: Callable[[], Any]
    check: Callable[[Any], None]
    runs: int
    warmup: int = 1  # untimed runs first (a cache to fill, code paths to warm)


def interleaved(contenders: list[Contender], *, progress: bool = True) -> dict[str, Measurement]:
    """Each contender ``runs`` times, run by run in turn (the order reversed every other
    round, so drift and cache effects fall on both alike), after its ``warmup`` untimed
    runs. A contender with fewer runs drops out of later rounds."""
    for round_index in range(max(contender.warmup for contender in contenders)):
        for contender in contenders:
            if round_index >= contender.warmup:
                continue
            contender.prepare()
            contender.check(contender.run())
    results = {contender.name: Measurement([]) for contender in contenders}
    for round_index in range(max(contender.runs for contender in contenders)):
        order = contenders if round_index % 2 == 0 else list(reversed(contenders))
        for contender in order:
            if round_index >= contender.runs:
                continue
            contender.prepare()
            gc.collect()  # a collection owed by the set-up must not land in the timed run
            started = time.perf_counter()
            result = contender.run()
            results[contender.name].seconds.append(time.perf_counter() - started)
            contender.check(result)
        if progress:
            print(".", end="", flush=True)
    return results


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- measuring in a process of its own ---------------------------------------------------


@dataclass
class SweepProcess:
    """A fresh Python process that runs sweeps on command (``bench/sweep_process.py``):
    its first sweep is a cold one (no per-process cache), its memory is the sweep's alone.
    Commands and answers are JSON lines on its stdin and stdout."""

    process: subprocess.Popen
    ready: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def start(cls) -> SweepProcess:
        process = start_child(
            [sys.executable, "-m", "bench.sweep_process"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        worker = cls(process)
        worker.ready = worker.answer()
        return worker

    def send(self, **command: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def answer(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"the sweeping process exited (code {self.process.wait()}); see its stderr above"
            )
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"the sweeping process failed: {answer['error']}")
        return answer

    def call(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self.answer()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send(op="exit")
                self.process.wait(30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(15)
        if self.process in _children:
            _children.remove(self.process)


# --- a node of the product's own processes (gunicorn, Celery) for the soak and long-poll benches


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_environment(*, redis_url: str, port: int, web_concurrency: int, **extra: str) -> dict[str, str]:
    """The environment of a bench node's processes: this process's database (the bench's
    own), ``redis_url``, gunicorn on ``port``, quiet logs, no shared metrics directory."""
    from django.db import connection

    from config.environment import database_url

    environment = dict(os.environ)
    environment.update(
        DATABASE_URL=database_url(connection.settings_dict),
        REDIS_URL=redis_url,
        DJANGO_ENV="test",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
        WEB_PORT=str(port),
        WEB_CONCURRENCY=str(web_concurrency),
        **extra,
    )
    environment.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return environment
