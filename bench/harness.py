"""What both benchmarks share: Django set-up, their own database and Redis db, the book.

The benchmarks run against the real servers the tests use (``make bench`` goes
through ``config.embedded``), but never against the data of ``make run`` or a
concurrent ``make test``:

* Redis: its own database number (``REDIS_TEST_DB``, 12 unless set), flushed
  before and after. Not 9, the one ``make test`` uses: that is also the Celery
  broker of the test suite's workers, which would run our sweep tasks against
  their database (and theirs against ours). A db that holds keys when the bench
  starts is someone else's (a test run with that ``REDIS_TEST_DB``, another
  bench): the bench refuses it rather than flush it;
* PostgreSQL: a fresh ``bench_veilstop_r<REDIS_TEST_DB>`` database, created with
  Django's test database machinery (migrations, seeded instruments) and dropped
  at the end. Named after the Redis db the run owns, so two benches on different
  dbs never share it, and never one of the test suite's ``test_*`` databases.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from secrets import token_hex
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BENCH_DATABASE = "bench_veilstop_r{redis_db}"
BENCH_REDIS_DB = "12"

SIGNALS = 500
INSTRUMENTS = 50
BREACHED_SIGNALS = 5  # 5 of 500 signals: 1% of the positions
EXTRA_INSTRUMENTS = [f"BENCH{index:02d}" for index in range(1, 37)]  # 14 seeded + 36 = 50

# Levels as fractions of the entry (= the market when the bench starts). Every
# signal's levels are 3% away; the 5 breach targets have their SL only 0.5% away,
# so a 1% move (under the 2% spike guard) crosses exactly those 5 SLs and
# nothing else on the same instruments, whichever side the other signals are.
WIDE = Decimal("0.03")
TIGHT_STOP = Decimal("0.005")
BREACH_MOVE = Decimal("0.01")
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
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    import django

    django.setup()


# --- database and Redis ---------------------------------------------------------


@contextlib.contextmanager
def bench_database() -> Iterator[None]:
    """A fresh, migrated bench database and an empty Redis db, removed afterwards."""
    from django.conf import settings
    from django.db import connection

    redis = _bench_redis()
    name = BENCH_DATABASE.format(redis_db=os.environ["REDIS_TEST_DB"])
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = name
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    try:
        with connection.cursor() as cursor:
            # The audit log refuses DELETE (migration 0003). Resetting a breach run
            # must delete the audit rows the sweep inserted, so in this throwaway
            # database the append-only trigger is off. It fires only on UPDATE and
            # DELETE, which neither the scanner nor the baseline does: no timing changes.
            cursor.execute("ALTER TABLE signals_app_auditevent DISABLE TRIGGER USER")
        redis.flushdb()
        yield
    finally:
        redis.flushdb()
        connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)


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
    """A DATABASE_URL for the bench database, for the Celery worker subprocess."""
    from django.db import connection

    from config.environment import database_url as url_for

    return url_for(connection.settings_dict)


def execute(sql: str, params: list[Any] | None = None) -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(sql, params)


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
    breach_target: bool

    def breaching_mid(self) -> Decimal:
        """A mid 1% against this signal: past its tight SL, short of every wide level."""
        return self.market.moved(-BREACH_MOVE if self.side == "buy" else BREACH_MOVE)


def levels_for(market: Market, side: str, *, tight: bool) -> dict[str, str]:
    stop = TIGHT_STOP if tight else WIDE
    if side == "buy":
        sl, tp = market.moved(-stop), market.moved(WIDE)
    else:
        sl, tp = market.moved(stop), market.moved(-WIDE)
    return {"sl": str(sl), "tp": str(tp)}


def create_signal(market: Market, side: str, *, breach_target: bool) -> BenchSignal:
    """Through the production services, so ``owner_only`` is Fernet-encrypted as in production.

    Published before any client exists: ``signal_publish`` fans an approval out to
    every active client, and the bench makes its own (one per position) later.
    """
    from signals_app.events import Actor
    from signals_app.services import signal_create, signal_publish

    by = Actor.system("bench")
    signal = signal_create(
        instrument=market.symbol,
        side=side,
        entry_price=market.mid,
        ttl_minutes=240,
        payload={},
        owner_only=levels_for(market, side, tight=breach_target),
        by=by,
    )
    signal_publish(signal=signal, by=by)
    return BenchSignal(pk=signal.pk, market=market, side=side, breach_target=breach_target)


def create_signals(markets: list[Market]) -> list[BenchSignal]:
    """500 signals, 10 per instrument, buys and sells mixed on every instrument.

    Signals 0..4 are the breach targets, one per instrument (instruments 0..4)
    and alternating buy/sell, so the 1% case exercises both sides of the book.
    """
    signals = []
    for index in range(SIGNALS):
        side = "buy" if (index + index // INSTRUMENTS) % 2 == 0 else "sell"
        signals.append(
            create_signal(markets[index % INSTRUMENTS], side, breach_target=index < BREACHED_SIGNALS)
        )
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
    # CASCADE: whatever else references clients or devices (alerts, heartbeats) goes too.
    execute(f"TRUNCATE {', '.join(tables)} CASCADE")


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


def store_quote(market: Market, mid: Decimal) -> None:
    from positions.quotes import Quote, quote_store

    bid, ask = market.bid_ask(mid)
    ts = next_ts()
    if not quote_store(Quote(market.symbol, bid, ask, ts), received_at=ts):
        raise RuntimeError(f"{market.symbol}: quote at {ts} was not stored (an older one is newer?)")


def clear_quote_paths() -> None:
    """Empty every instrument's quote path (``positions.quote_path``): a sweep then walks
    only the quotes stored after this, not those a baseline run stored and never read."""
    from core.redis import get_redis
    from positions.quotes import PATH_KEY

    redis = get_redis()
    for key in redis.scan_iter(PATH_KEY.format(symbol="*")):
        redis.delete(key)


def store_market(markets: list[Market], moved: dict[str, Decimal] | None = None) -> None:
    """Every instrument at its mid, freshly stamped; then the ``moved`` mids on top.
    The quote paths hold these quotes only.

    The moved quote follows the unmoved one, so the spike guard compares a 1% move
    with the quote just before it (well under SPIKE_MAX_JUMP_FRACTION).
    """
    clear_quote_paths()
    for market in markets:
        store_quote(market, market.mid)
    for market in markets:
        if moved and market.symbol in moved:
            store_quote(market, moved[market.symbol])


# --- resetting a breach ---------------------------------------------------------------

PENDING_KEY = "veilstop:breach-pending"
# The audit actions (signals_app.choices.AuditAction) a sweep writes, undone by a reset.
RESET_AUDIT_ACTIONS = (
    "POSITION_CLOSE_REQUESTED",
    "SIGNAL_PLAN_EXITED",
    "SIGNAL_PARTIAL_TP_HIT",
    "SIGNAL_STOP_MOVED",
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
        [[AuditAction[name].value for name in RESET_AUDIT_ACTIONS]],
    )
    execute("UPDATE positions_openposition SET status = 'open' WHERE status <> 'open'")
    clear_quote_paths()
    redis = get_redis()
    redis.delete(PENDING_KEY)
    for key in redis.scan_iter(SCAN_QUEUED_PATTERN):
        redis.delete(key)
    vacuum_analyze(
        "positions_openposition", "positions_closecommand", "positions_signalplan", "signals_app_auditevent"
    )


# --- measuring ------------------------------------------------------------------------


@dataclass
class Measurement:
    seconds: list[float]
    peak_bytes: int | None

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
    more under tracemalloc for the peak of Python memory allocated during the run.

    The memory run is separate because tracemalloc slows allocation-heavy code
    several-fold; its peak counts only what the run allocates (not libpq's own
    buffers, which tracemalloc cannot see).
    """
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


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]
