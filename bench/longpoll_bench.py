"""Crossing quote → close command in the hands of a waiting EA, with 1,000 EAs long-polling.

One node as ``make run`` serves it: gunicorn with ``config/gunicorn.py`` (gevent
workers), a real Celery worker running the sweeps, PostgreSQL and Redis. A
thousand EA devices each hold their long-polls open on it (``GET
close-commands?wait=25`` and ``GET poll?wait=25``, signed as a real EA signs,
from one asyncio process). Each round, the owner's feed posts a quote through
``POST /api/v1/feed/quotes`` that crosses one signal's stop-loss; that signal
has positions held by ``--per-round`` of the EAs. The clock runs from just
before the feed's request is written to the moment each of those EAs has read
its answer holding the command: quote ingest, the sweep queued on Celery, the
claim, the wake after its commit, the delivery's lease and the answer.

The run has a database of its own (``longpoll_<pid>_<time>``, created migrated
and dropped at the end, also on Ctrl-C or SIGTERM) and a Redis db that must
hold no keys (``REDIS_TEST_DB``, 14 unless set; flushed at the end).

    make bench-longpoll BENCH_ARGS="--eas 1000 --rounds 60 --per-round 10"
    DJANGO_ENV=test .venv/bin/python -m config.embedded run -- .venv/bin/python bench/longpoll_bench.py
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from bench import harness  # noqa: E402 - imports no Django at module level
from bench.harness import free_port  # noqa: E402
from ea_protocol import signing  # noqa: E402 - the standard library only: safe before Django

TARGET_P50_MS = 100.0
TARGET_P99_MS = 300.0
BENCH_REDIS_DB = "14"
SYMBOL = "EURUSD"
MID = Decimal("1.08500")
PIP = Decimal("0.0001")
STEP_PIPS = 2  # each round's signal has its stop this much below the previous one's
WAIT_SECONDS = 25
ROUND_TIMEOUT_SECONDS = 10.0
START_TIMEOUT_SECONDS = 60.0
CLOSES = "/api/v1/client/close-commands"
POLL = "/api/v1/client/poll"
FEED = "/api/v1/feed/quotes"


# --- set-up: Django, a database of this run, the book ----------------------------------


def setup_django() -> None:
    if os.environ.get("DJANGO_ENV") != "test":
        raise SystemExit("run the benchmark with DJANGO_ENV=test (make bench-longpoll does)")
    os.environ.setdefault("REDIS_TEST_DB", BENCH_REDIS_DB)
    os.environ["DEBUG"] = "false"
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    import django

    django.setup()


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def bench_database() -> Iterator[str]:
    """A migrated database of this run alone and an empty Redis db, both removed afterwards."""
    from django.db import connection

    from core.redis import get_redis

    redis = get_redis()
    db = redis.connection_pool.connection_kwargs.get("db", 0)
    if str(db) != os.environ["REDIS_TEST_DB"] or int(db) == 0:
        raise SystemExit(f"refusing Redis db {db}: not the bench's (REDIS_TEST_DB)")
    if keys := redis.dbsize():
        raise SystemExit(f"Redis db {db} holds {keys} keys (someone else's?): pick another REDIS_TEST_DB")
    name = f"longpoll_{os.getpid()}_{int(time.time())}"
    print(f"bench database: {name} (Redis db {db})", flush=True)
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    signal.signal(signal.SIGTERM, _raise_interrupt)
    old_name = connection.settings_dict["NAME"]
    created = False
    try:
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=False, keepdb=False)
        created = True
        yield name
    finally:
        redis.flushdb()
        if created:
            connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)


@dataclass(frozen=True)
class Credentials:
    key: str
    secret: str


@dataclass
class Book:
    eas: list[Credentials]
    feed: Credentials
    probe: Credentials  # an EA of its own that never waits: its requests queue as the EAs' do
    stops: list[Decimal]  # round r crosses stops[r]
    holders: list[list[int]]  # round r: indexes of the EAs with a position on its signal


def build_book(*, eas: int, rounds: int, per_round: int) -> Book:
    """``eas`` clients with one EA device each, a feed device, and one buy signal per
    round with its stop STEP_PIPS below the last one's and positions of ``per_round``
    EAs (round-robin, so every round wakes others). Rows are bulk-written (set-up, not
    what is measured); the signals go through the services (encrypted levels)."""
    from datetime import timedelta

    from django.utils import timezone

    from ea_gateway.models import Device
    from positions.models import OpenPosition
    from signals_app.choices import ApprovalStatus
    from signals_app.events import Actor
    from signals_app.models import Approval, Client, Instrument
    from signals_app.services import signal_create, signal_publish

    if per_round > eas:
        raise SystemExit("--per-round cannot exceed --eas")
    instrument = Instrument.objects.get(symbol=SYMBOL)
    by = Actor.system("bench")
    # Signals first: published before any client exists, so no approvals fan out.
    stops = [MID - PIP * STEP_PIPS * (index + 1) for index in range(rounds)]
    signals = []
    for stop in stops:
        signal_ = signal_create(
            instrument=SYMBOL,
            side="buy",
            entry_price=MID,
            ttl_minutes=240,
            payload={},
            owner_only={"sl": str(stop), "tp": str(MID * Decimal("1.03"))},
            by=by,
        )
        signals.append(signal_publish(signal=signal_, by=by).signal)
    secrets_by_index = [secrets.token_hex(16) for _ in range(eas)]
    clients = Client.objects.bulk_create(
        [Client(name=f"longpoll-{index}", auto_close_enabled=True) for index in range(eas)]
    )
    devices = Device.objects.bulk_create(
        [
            Device(name=f"EA {index}", role="ea", client=client, key_id=f"vsk_lp_{index}", secret=secret)
            for index, (client, secret) in enumerate(zip(clients, secrets_by_index, strict=True))
        ]
    )
    feed_secret = secrets.token_hex(16)
    Device.objects.create(name="bench feed", role="feed", key_id="vsk_lp_feed", secret=feed_secret)
    probe_secret = secrets.token_hex(16)
    Device.objects.create(
        name="bench probe",
        role="ea",
        client=Client.objects.create(name="longpoll-probe"),
        key_id="vsk_lp_probe",
        secret=probe_secret,
    )
    holders = [[(r * per_round + k) % eas for k in range(per_round)] for r in range(rounds)]
    expires = timezone.now() + timedelta(hours=4)
    volume = Decimal("0.10")
    for signal_, indexes in zip(signals, holders, strict=True):
        approvals = Approval.objects.bulk_create(
            [
                Approval(
                    signal=signal_,
                    client=clients[i],
                    volume=volume,
                    status=ApprovalStatus.EXECUTED,
                    expires_at=expires,
                )
                for i in indexes
            ]
        )
        OpenPosition.objects.bulk_create(
            [
                OpenPosition(
                    signal=signal_,
                    approval=approval,
                    client=clients[i],
                    device=devices[i],
                    instrument=instrument,
                    side="buy",
                    requested_entry_price=MID,
                    entry_price=MID,
                    volume=volume,
                    remaining_volume=volume,
                    broker_ticket=f"{signal_.pk}-{i}",
                )
                for approval, i in zip(approvals, indexes, strict=True)
            ]
        )
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return Book(
        eas=[Credentials(f"vsk_lp_{index}", secret) for index, secret in enumerate(secrets_by_index)],
        feed=Credentials("vsk_lp_feed", feed_secret),
        probe=Credentials("vsk_lp_probe", probe_secret),
        stops=stops,
        holders=holders,
    )


# --- the node: gunicorn as configured, a Celery worker -----------------------------------


@dataclass
class Node:
    workers: int
    trace: bool = False
    port: int = field(default_factory=free_port)
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="veilstop-longpoll-")))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def environment(self) -> dict[str, str]:
        from django.conf import settings

        return harness.node_environment(
            redis_url=settings.REDIS_URL, port=self.port, web_concurrency=self.workers
        )

    def start(self) -> None:
        config = "python:bench.longpoll_trace" if self.trace else "python:config.gunicorn"
        self._spawn("web", ["-m", "gunicorn", "config.wsgi", "--config", config])
        hostname = f"longpoll-{os.getpid()}@{socket.gethostname()}"
        celery = ["-m", "bench.longpoll_trace"] if self.trace else ["-m", "celery", "-A", "config"]
        self._spawn(
            "worker",
            [
                *celery, "worker", "--pool=solo", "-l", "WARNING",
                f"--hostname={hostname}", "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
        )  # fmt: skip
        from config.celery import app

        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited at start:\n{self.log_tail(name)}")
            if self._web_answers() and app.control.ping(destination=[hostname], timeout=0.5):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the node did not start within {START_TIMEOUT_SECONDS:.0f} s")

    def _spawn(self, name: str, arguments: list[str]) -> None:
        with open(self.log_dir / f"{name}.log", "w") as log:
            self.processes[name] = subprocess.Popen(  # noqa: S603 - our interpreter, fixed argv
                [sys.executable, *arguments],
                cwd=REPO_ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def _web_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                probe.sendall(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                return probe.recv(12).startswith(b"HTTP/1.")
        except OSError:
            return False

    def web_pids(self) -> list[int]:
        master = self.processes["web"].pid
        children = Path(f"/proc/{master}/task/{master}/children")
        return (
            [master, *(int(pid) for pid in children.read_text().split())] if children.exists() else [master]
        )

    def log_tail(self, name: str) -> str:
        try:
            return (self.log_dir / f"{name}.log").read_text()[-3000:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def process_figures(pids: list[int]) -> tuple[float, int]:
    """(resident MiB, threads) summed over the processes."""
    rss_kib = threads = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss_kib += int(line.split()[1])
            elif line.startswith("Threads:"):
                threads += int(line.split()[1])
    return rss_kib / 1024, threads


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def database_connections(name: str) -> int:
    from django.db import connection

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name])
            return cursor.fetchone()[0] - 1  # not this one
    finally:
        connection.close()  # this thread's own: the database is dropped at the end


# --- EAs and the feed: signed HTTP over asyncio ---------------------------------------------


async def signed_request(
    port: int,
    credentials: Credentials,
    method: str,
    path: str,
    query: str = "",
    body: bytes = b"",
    sent: Callable[[], None] = lambda: None,
) -> tuple[int, bytes]:
    """One signed request on its own connection (as the reference client makes them)."""
    timestamp = str(int(time.time()))
    nonce = secrets.token_urlsafe(24)
    canonical = signing.canonical_string(
        method=method, path=path, query_string=query, timestamp=timestamp, nonce=nonce, body=body
    )
    target = f"{path}?{query}" if query else path
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"{signing.HEADER_KEY}: {credentials.key}\r\n{signing.HEADER_TIMESTAMP}: {timestamp}\r\n"
        f"{signing.HEADER_NONCE}: {nonce}\r\n"
        f"{signing.HEADER_SIGNATURE}: {signing.sign(credentials.secret, canonical)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        sent()
        raw = await reader.read()  # Connection: close: the answer ends with the connection
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload


@dataclass
class Fleet:
    """The waiting EAs: each keeps a close-commands and (optionally) a poll long-poll open."""

    port: int
    book: Book
    with_poll: bool
    received: dict[int, float] = field(default_factory=dict)  # EA index -> when its command came
    errors: list[str] = field(default_factory=list)
    in_flight: int = 0
    first_sent: set[tuple[int, str]] = field(default_factory=set)  # (EA, path) whose first request is out
    answered: int = 0

    async def _keep_waiting(self, index: int, path: str) -> None:
        query = f"wait={WAIT_SECONDS}"
        while True:
            self.in_flight += 1
            try:
                status, payload = await signed_request(
                    self.port,
                    self.book.eas[index],
                    "GET",
                    path,
                    query,
                    sent=lambda: self.first_sent.add((index, path)),
                )
            except OSError as error:
                self.errors.append(f"EA {index} {path}: {error}")
                await asyncio.sleep(0.5)
                continue
            finally:
                self.in_flight -= 1
            self.answered += 1
            if status != 200:
                self.errors.append(f"EA {index} {path}: HTTP {status} {payload[:200]!r}")
                await asyncio.sleep(0.5)
            elif path == CLOSES and json.loads(payload)["commands"]:
                self.received.setdefault(index, time.perf_counter())

    def start(self) -> list[asyncio.Task]:
        paths = [CLOSES, POLL] if self.with_poll else [CLOSES]
        return [
            asyncio.create_task(self._keep_waiting(index, path))
            for index in range(len(self.book.eas))
            for path in paths
        ]


async def run_rounds(
    node: Node, book: Book, *, warmup: int, with_poll: bool, database: str, round_timeout: float
) -> Report:
    fleet = Fleet(node.port, book, with_poll)
    tasks = fleet.start()
    expected_in_flight = len(tasks)
    report = Report(eas=len(book.eas), per_round=len(book.holders[0]), with_poll=with_poll)
    try:
        # Every EA's first long-poll written (a loaded machine takes a while), then the node
        # through them.
        await _until(lambda: len(fleet.first_sent) == expected_in_flight, 120, "the EAs did not all connect")
        await _until_served_at_once(node.port, book.probe)
        # The market between every level first: the crossing quotes then move 2 pips each.
        baseline = {"instrument": SYMBOL, "bid": str(MID), "ask": str(MID + PIP * 2), "ts": time.time()}
        body = json.dumps({"quotes": [baseline]}, separators=(",", ":")).encode()
        await signed_request(node.port, book.feed, "POST", FEED, body=body)
        await asyncio.sleep(2.0)  # every long-poll has looked once and is waiting
        report.rss_mib, report.threads = process_figures(node.web_pids())
        report.db_connections_waiting = await asyncio.to_thread(database_connections, database)
        cpu_before, answered_before = cpu_seconds(node.web_pids()), fleet.answered
        clock_before = time.monotonic()
        for round_index, stop in enumerate(book.stops):
            holders = book.holders[round_index]
            fleet.received.clear()
            bid = stop - PIP
            quote = {"instrument": SYMBOL, "bid": str(bid), "ask": str(bid + PIP * 2), "ts": time.time()}
            body = json.dumps({"quotes": [quote]}, separators=(",", ":")).encode()
            started, started_wall = time.perf_counter(), time.time()
            status, payload = await signed_request(node.port, book.feed, "POST", FEED, body=body)
            feed_answered = time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"feed refused the quote: HTTP {status} {payload[:300]!r}")
            await _until(
                lambda holders=holders: all(index in fleet.received for index in holders),
                round_timeout,
                f"round {round_index}: not every holder got its command\n{node.log_tail('worker')}",
            )
            strays = set(fleet.received) - set(holders)
            if strays:
                raise RuntimeError(f"round {round_index}: EAs {sorted(strays)[:10]} got commands not theirs")
            if round_index >= warmup:
                latencies = [fleet.received[index] - started for index in holders]
                report.samples.extend(latencies)
                report.rounds.append((round_index, feed_answered, max(latencies)))
                report.marks.append((round_index, started_wall, sorted(latencies)))
            await asyncio.sleep(0.3)
        elapsed = time.monotonic() - clock_before
        report.web_cpu_share = (cpu_seconds(node.web_pids()) - cpu_before) / elapsed
        report.ea_requests_per_second = (fleet.answered - answered_before) / elapsed
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    report.errors = fleet.errors
    return report


async def _until_served_at_once(port: int, credentials: Credentials) -> None:
    """Until the node has taken in the EAs' first long-polls (each looks once before it
    waits): a request queued behind them is slow, so wait for three quick answers in a row."""
    quick = 0
    deadline = time.monotonic() + 2 * START_TIMEOUT_SECONDS
    while quick < 3:
        if time.monotonic() > deadline:
            raise RuntimeError("the node did not settle after the EAs connected")
        started = time.perf_counter()
        await signed_request(port, credentials, "GET", CLOSES)
        quick = quick + 1 if time.perf_counter() - started < 0.05 else 0
        await asyncio.sleep(0.2)


async def _until(condition, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        await asyncio.sleep(0.002)


# --- the report -----------------------------------------------------------------------------


@dataclass
class Report:
    eas: int
    per_round: int
    with_poll: bool
    samples: list[float] = field(default_factory=list)
    rounds: list[tuple[int, float, float]] = field(default_factory=list)  # (round, feed answered, last EA)
    errors: list[str] = field(default_factory=list)
    rss_mib: float = 0.0
    threads: int = 0
    db_connections_waiting: int = 0
    web_cpu_share: float = 0.0  # CPU seconds the web processes used per second of the rounds
    ea_requests_per_second: float = 0.0
    marks: list[tuple[int, float, list[float]]] = field(default_factory=list)  # (round, sent, latencies)

    def ms(self, fraction: float) -> float:
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)] * 1000

    def print(self, workers: int) -> bool:
        p50, p99 = self.ms(0.5), self.ms(0.99)
        waiting = self.eas * (2 if self.with_poll else 1)
        print("\n" + "=" * 100)
        print(
            f"Crossing quote (feed API) -> close command read by the waiting EA: {self.eas} EAs holding "
            f"{waiting} long-polls on gunicorn ({workers} gevent workers), a Celery worker sweeping; "
            f"{self.per_round} EA(s) closed per round, {len(self.samples)} samples"
        )
        print(
            f"  p50 {p50:.1f} ms   p90 {self.ms(0.9):.1f} ms   p99 {p99:.1f} ms   "
            f"max {self.ms(1.0):.1f} ms   min {self.ms(0.0):.1f} ms   "
            f"mean {statistics.mean(self.samples) * 1000:.1f} ms"
        )
        print(
            f"  while waiting: web processes {self.rss_mib:.0f} MiB resident, {self.threads} threads; "
            f"{self.db_connections_waiting} PostgreSQL connections open to the bench database"
        )
        print(
            f"  during the rounds: {self.ea_requests_per_second:.0f} EA long-poll answers/s, web processes "
            f"busy {self.web_cpu_share:.2f} CPU; machine load average {os.getloadavg()[0]:.1f} "
            f"on {os.cpu_count()} CPUs"
        )
        slowest = sorted(self.rounds, key=lambda item: -item[2])[:3]
        print(
            "  slowest rounds (feed request answered / last EA served): "
            + ", ".join(f"#{index} {feed * 1000:.0f}/{last * 1000:.0f} ms" for index, feed, last in slowest)
        )
        if self.errors:
            print(f"  {len(self.errors)} EA request errors, first: {self.errors[:3]}")
        met = p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS
        print(
            f"  target: p50 <= {TARGET_P50_MS:.0f} ms and p99 <= {TARGET_P99_MS:.0f} ms   "
            f"{'met' if met else 'MISSED'}"
        )
        return met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/longpoll_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--eas", type=int, default=1000, help="EA devices waiting (default 1000)")
    parser.add_argument(
        "--rounds", type=int, default=60, help="crossing quotes, after the warm-up (default 60)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="rounds not counted (default 3)")
    parser.add_argument("--per-round", type=int, default=10, help="EAs closed by each quote (default 10)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2, as make run)")
    parser.add_argument("--no-poll", action="store_true", help="EAs wait on close commands only")
    parser.add_argument(
        "--round-timeout",
        type=float,
        default=ROUND_TIMEOUT_SECONDS,
        help=f"seconds a round may take before the run fails (default {ROUND_TIMEOUT_SECONDS:.0f})",
    )
    parser.add_argument(
        "--trace", action="store_true", help="per-stage timestamps of each round (bench/longpoll_trace.py)"
    )
    arguments = parser.parse_args(argv)
    setup_django()
    with bench_database() as database:
        print(
            f"building the book: {arguments.eas} EAs, {arguments.warmup + arguments.rounds} signals",
            flush=True,
        )
        book = build_book(
            eas=arguments.eas, rounds=arguments.warmup + arguments.rounds, per_round=arguments.per_round
        )
        node = Node(workers=arguments.workers, trace=arguments.trace)
        try:
            node.start()
            print(f"node up on 127.0.0.1:{node.port} (logs in {node.log_dir}); EAs connecting", flush=True)
            report = asyncio.run(
                run_rounds(
                    node,
                    book,
                    warmup=arguments.warmup,
                    with_poll=not arguments.no_poll,
                    database=database,
                    round_timeout=arguments.round_timeout,
                )
            )
        except RuntimeError:
            if arguments.trace:
                from bench.longpoll_trace import stages_dump

                stages_dump()
            raise
        finally:
            node.stop()
        if arguments.trace:
            from bench.longpoll_trace import stages_print

            stages_print(report.marks)
    return 0 if report.print(arguments.workers) else 1


if __name__ == "__main__":
    sys.exit(main())
