"""What an EA request costs under gunicorn, next to a bare DRF endpoint.

1. Claims a Redis db that holds no keys (``REDIS_TEST_DB`` if set, else the first
   empty one of 13, 14, 15, 11, 10; an atomic check-and-claim, so two runs never
   share one) and creates a fresh PostgreSQL database ``bench_ea_<pid>_<time>``
   (migrated like the test database). Both are emptied and dropped at the end.
2. Builds the steady state of a live fleet: ``--devices`` EA devices (200), each of
   a client holding one open position (its heartbeat names that ticket, so nothing
   is reconciled), no approval waiting and no close command due. The EAs send far
   more than a real EA's request a second, so the bench's server runs with
   ``EA_THROTTLE_RATE`` raised (``--ea-throttle``): every request still goes through
   the throttle's bookkeeping, none is refused.
3. Starts the app as ``make run`` does (``gunicorn config.wsgi --config
   python:config.gunicorn``: the worker count and class are read from
   ``config/gunicorn.py`` at run time, and printed), with
   ``DJANGO_SETTINGS_MODULE=bench.settings``: the product's settings, DEBUG off,
   plus one bare DRF endpoint (``bench/urls.py``: constant JSON, AllowAny, no
   authentication or throttle) that the product's URLs never mount.
4. For each endpoint (bare, poll, close-commands, heartbeat): a warm-up long enough
   for every worker to have seen every device a few times (a live fleet's steady
   state: each EA polls every second or so, so its device is in every worker's
   cache), then
   ``wrk`` at full speed for the maximum throughput, then ``wrk`` paced at
   ``--rate`` requests a second for the latency (``bench/ea_wrk.lua``: send slots
   on the wall clock handed to whichever connection is free, so a slow answer does
   not slow the schedule while a connection is free; wrk2 and vegeta are not in
   Debian). Every EA request is signed up front with ``ea_protocol.signing`` and
   a nonce of its own, spread over the devices, and sent once: a run that would
   need more than were signed, or that got any answer but 2xx, fails.
5. Prints endpoint, max req/s, ratio to bare, p50/p99 at the paced rate, and the
   workers' CPU time per request at full speed (from /proc: on a busy machine the
   steadiest of the figures).

    make bench-ea                                   # or:
    DJANGO_ENV=test .venv/bin/python -m config.embedded run -- .venv/bin/python bench/ea_bench.py
    make bench-ea BENCH_ARGS="--duration 5 --only poll"

``--profile DIR`` also records each gunicorn worker with py-spy (``pip install
py-spy``; collapsed stacks, for speedscope or flamegraph.pl) during the
full-speed runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # imports no Django: safe before setup

WRK_SCRIPT = Path(__file__).with_name("ea_wrk.lua")
REDIS_CANDIDATES = (13, 14, 15, 11, 10)
CLAIM_KEY = "veilstop:bench-ea:claim"
# Atomic: a db is ours only if nothing was in it, so a concurrent run or test suite never shares it.
CLAIM_IF_EMPTY = "if redis.call('DBSIZE') == 0 then redis.call('SET', KEYS[1], ARGV[1]) return 1 end return 0"
BARE = "bare"
ENDPOINTS = {
    BARE: ("GET", "/bench/bare"),
    "poll": ("GET", "/api/v1/client/poll"),
    "close-commands": ("GET", "/api/v1/client/close-commands"),
    "heartbeat": ("POST", "/api/v1/client/heartbeat"),
}


def request_body(endpoint: str, ticket: str) -> bytes:
    """The signed body of one bench request: a heartbeat reports its device's ticket."""
    if endpoint != "heartbeat":
        return b""
    account = {"balance": "10000.00", "equity": "10000.00", "open_tickets": [ticket]}
    return json.dumps(account, separators=(",", ":")).encode()


WARMUP_SECONDS = 3
WARMUP_PASSES = 3  # requests per device and worker before a measured run
WARMUP_MAX_SECONDS = 60
START_TIMEOUT_SECONDS = 60
POOL_HEADROOM = 1.5  # signed requests per second of a run, over what the bare endpoint reached


@dataclass(frozen=True)
class Credentials:
    key_id: str
    secret: str
    ticket: str


@dataclass(frozen=True)
class WrkRun:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.seconds


# --- the bench's own Redis db and database -------------------------------------------


def claim_redis_db() -> tuple[int, str]:
    import redis

    from config.environment import with_redis_db

    chosen = os.environ.get("REDIS_TEST_DB")
    candidates = [int(chosen)] if chosen else list(REDIS_CANDIDATES)
    token = secrets.token_hex(8)
    for db in candidates:
        if db == 0:
            continue  # make run's
        client = redis.Redis.from_url(with_redis_db(os.environ["REDIS_URL"], db))
        if client.eval(CLAIM_IF_EMPTY, 1, CLAIM_KEY, token):
            return db, token
    raise SystemExit(f"no empty Redis db among {candidates}: set REDIS_TEST_DB to a free one")


def release_redis_db(token: str) -> None:
    from core.redis import get_redis

    redis = get_redis()
    if redis.get(CLAIM_KEY) == token.encode():
        redis.flushdb()


def create_database() -> str:
    from django.conf import settings
    from django.db import connection

    name = f"bench_ea_{os.getpid()}_{int(time.time())}"
    settings.DATABASES["default"].setdefault("TEST", {})["NAME"] = name
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    return connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)


def drop_database(old_name: str) -> None:
    from django.db import connection

    connection.creation.destroy_test_db(old_name, verbosity=0, keepdb=False)


def build_fleet(devices: int) -> list[Credentials]:
    """``devices`` clients with one EA device each, and one filled position each on one
    published EURUSD signal: approvals executed, nothing waiting, nothing to close.
    Written in bulk (setup, not what is measured), the signal through the services so
    its levels are encrypted as in production."""
    from datetime import timedelta

    from django.utils import timezone

    from ea_gateway.models import Device
    from positions.models import OpenPosition
    from signals_app.choices import ApprovalStatus
    from signals_app.events import Actor
    from signals_app.models import Approval, Client
    from signals_app.services import signal_create, signal_publish

    by = Actor.system("ea bench")
    entry = Decimal("1.08500")
    signal = signal_create(
        instrument="EURUSD",
        side="buy",
        entry_price=entry,
        ttl_minutes=240,
        payload={},
        owner_only={"sl": "1.05000", "tp": "1.12000"},
        by=by,
    )
    signal_publish(signal=signal, by=by)  # before any client exists: fans out to none
    clients = Client.objects.bulk_create([Client(name=f"ea-bench-{index}") for index in range(devices)])
    secrets_by_key = {f"vsk_eabench_{index}": secrets.token_urlsafe(32) for index in range(devices)}
    fleet = Device.objects.bulk_create(
        [
            Device(name=f"EA {client.name}", role="ea", client=client, key_id=key_id, secret=secret)
            for client, (key_id, secret) in zip(clients, secrets_by_key.items(), strict=True)
        ]
    )
    volume = Decimal("0.10")
    approvals = Approval.objects.bulk_create(
        [
            Approval(
                signal=signal,
                client=client,
                volume=volume,
                status=ApprovalStatus.EXECUTED,
                expires_at=timezone.now() + timedelta(hours=4),
            )
            for client in clients
        ]
    )
    OpenPosition.objects.bulk_create(
        [
            OpenPosition(
                signal=signal,
                approval=approval,
                client=approval.client,
                device=device,
                instrument=signal.instrument,
                side="buy",
                requested_entry_price=entry,
                entry_price=entry,
                volume=volume,
                remaining_volume=volume,
                broker_ticket=f"T{device.pk}",
            )
            for approval, device in zip(approvals, fleet, strict=True)
        ]
    )
    harness.vacuum_analyze("ea_gateway_device", "signals_app_approval", "positions_openposition")
    return [Credentials(device.key_id, secrets_by_key[device.key_id], f"T{device.pk}") for device in fleet]


# --- gunicorn ------------------------------------------------------------------------


class Server:
    """``gunicorn config.wsgi --config python:config.gunicorn`` (the Procfile's web line)."""

    def __init__(self, port: int, log_dir: Path, ea_throttle: str) -> None:
        self.port = port
        self.ea_throttle = ea_throttle
        self.log_path = log_dir / "gunicorn.log"
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        from django.conf import settings

        environment = dict(os.environ)
        environment.update(
            {
                "DJANGO_SETTINGS_MODULE": "bench.settings",
                "DATABASE_URL": harness.database_url(),
                "REDIS_URL": settings.REDIS_URL,
                "WEB_PORT": str(self.port),
                "EA_THROTTLE_RATE": self.ea_throttle,
                "DEBUG": "false",
                "LOG_LEVEL": "WARNING",
            }
        )
        environment.pop("PROMETHEUS_MULTIPROC_DIR", None)  # never a running system's metrics
        gunicorn = str(Path(sys.executable).with_name("gunicorn"))
        command = [gunicorn, "config.wsgi", "--config", "python:config.gunicorn"]
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(  # noqa: S603 - fixed argv, our own venv
                command, cwd=harness.REPO_ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited at start:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + ENDPOINTS[BARE][1], timeout=2) as response:  # noqa: S310
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"gunicorn did not answer within {START_TIMEOUT_SECONDS} s:\n{self.log_tail()}")

    def worker_pids(self) -> list[int]:
        assert self.process is not None
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text()
        return [int(pid) for pid in children.split()]

    def workers_cpu_seconds(self) -> float:
        """CPU time (user + system) the workers have used so far."""
        ticks = 0
        for pid in self.worker_pids():
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return "(no gunicorn log)"


def gunicorn_config():
    """``config/gunicorn.py`` as the bench's gunicorn will read it."""
    import importlib

    return importlib.import_module("config.gunicorn")


def gunicorn_shape() -> str:
    config = gunicorn_config()
    threads = getattr(config, "threads", 1)
    return (
        f"{config.workers} workers, worker class {getattr(config, 'worker_class', 'sync')}"
        + (f", {threads} threads" if threads != 1 else "")
        + f", access log {'on' if getattr(config, 'accesslog', None) else 'off'}"
    )


# --- requests and wrk ---------------------------------------------------------------------


def write_requests(path: Path, endpoint: str, count: int, fleet: list[Credentials]) -> None:
    from ea_protocol import signing

    method, url_path = ENDPOINTS[endpoint]
    if endpoint == BARE:
        path.write_text(f"{method}\t{url_path}\t\n")
        return
    timestamp = str(int(time.time()))
    run = secrets.token_hex(6)
    lines = []
    for index in range(count):
        device = fleet[index % len(fleet)]
        body = request_body(endpoint, device.ticket)
        nonce = f"{run}-{index:012d}"
        canonical = signing.canonical_string(
            method=method, path=url_path, query_string="", timestamp=timestamp, nonce=nonce, body=body
        )
        headers = {
            signing.HEADER_KEY: device.key_id,
            signing.HEADER_TIMESTAMP: timestamp,
            signing.HEADER_NONCE: nonce,
            signing.HEADER_SIGNATURE: signing.sign(device.secret, canonical),
        }
        if body:
            headers["Content-Type"] = "application/json"
        fields = [method, url_path, *(part for item in headers.items() for part in item), body.decode()]
        lines.append("\t".join(fields))
    path.write_text("\n".join(lines) + "\n")


def wrk(
    server: Server,
    requests_file: Path,
    *,
    seconds: float,
    threads: int,
    connections: int,
    rate: float,
    cycle: bool,
) -> WrkRun:
    command = [
        shutil.which("wrk") or "/usr/bin/wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:.0f}s",
        "--timeout", "10s", "-s", str(WRK_SCRIPT), server.url,
        "--", str(requests_file), str(threads), str(rate), "1" if cycle else "0",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    line = next((line for line in result.stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if result.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    problems = [
        f"{data[name]} {name}" for name in ("non_2xx", "socket_errors", "timeouts", "wraps") if data[name]
    ]
    if problems:
        raise RuntimeError(
            f"{requests_file.name}: {', '.join(problems)} of {data['requests']} requests "
            f"(wraps: more requests than were signed; raise POOL_HEADROOM)\n{server.log_tail()}"
        )
    return WrkRun(data["requests"], data["duration_us"] / 1e6, data["p50_us"] / 1000, data["p99_us"] / 1000)


class Profiler:
    """py-spy on every gunicorn worker for the length of one run (``--profile``)."""

    def __init__(self, directory: Path | None, server: Server) -> None:
        self.directory = directory
        self.server = server
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str, seconds: float) -> None:
        if self.directory is None:
            return
        py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        for pid in self.server.worker_pids():
            output = self.directory / f"{name}-{pid}.txt"
            command = [py_spy, "record", "--pid", str(pid), "--duration", f"{seconds:.0f}", "--rate", "250",
                       "--format", "raw", "--output", str(output), "--nonblocking"]  # fmt: skip
            self.processes.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
            )
        time.sleep(0.5)  # attached before the load starts

    def wait(self) -> None:
        for process in self.processes:
            process.wait(60)
        self.processes.clear()


# --- the run --------------------------------------------------------------------------


def measure(args, server: Server, fleet: list[Credentials], work: Path, profiler: Profiler) -> dict:
    results: dict[str, tuple[WrkRun, WrkRun, float]] = {}
    pool_rate = 0.0
    workers = gunicorn_config().workers
    rate_estimate = 0.0
    endpoints = [BARE, *[name for name in ENDPOINTS if name != BARE and (not args.only or name in args.only)]]
    for endpoint in endpoints:
        cycle = endpoint == BARE
        requests_file = work / f"{endpoint}.tsv"

        def signed(count: float, endpoint=endpoint, requests_file=requests_file) -> Path:
            write_requests(requests_file, endpoint, math.ceil(count), fleet)
            return requests_file

        full = {"threads": args.threads, "connections": args.connections, "rate": 0, "cycle": cycle}
        warmup = WARMUP_SECONDS
        if not cycle:
            # The first EA endpoint: guess low (a tenth of the bare endpoint); then the last one's.
            needed = WARMUP_PASSES * len(fleet) * workers / rate_estimate
            warmup = min(WARMUP_MAX_SECONDS, max(warmup, needed))
        wrk(server, signed(pool_rate * warmup), seconds=warmup, **full)
        profiler.start(endpoint, args.duration)
        cpu_before = server.workers_cpu_seconds()
        best = wrk(server, signed(pool_rate * args.duration), seconds=args.duration, **full)
        cpu_ms = (server.workers_cpu_seconds() - cpu_before) * 1000 / best.requests
        profiler.wait()
        if endpoint == BARE:
            pool_rate = best.rate * POOL_HEADROOM
            rate_estimate = best.rate / 10
        else:
            rate_estimate = best.rate
        paced = wrk(
            server,
            signed(args.rate * (args.rate_duration + 2)),
            seconds=args.rate_duration,
            threads=1,
            connections=args.paced_connections,
            rate=args.rate,
            cycle=cycle,
        )
        if paced.rate < 0.95 * args.rate:
            print(f"  note: {endpoint} held only {paced.rate:.0f} of {args.rate} req/s paced", flush=True)
        results[endpoint] = (best, paced, cpu_ms)
        print(
            f"  {endpoint}: {best.rate:,.0f} req/s; at {args.rate} req/s p99 {paced.p99_ms:.1f} ms",
            flush=True,
        )
    return results


def print_table(results: dict, rate: int) -> None:
    bare = results[BARE][0].rate
    print("\n" + "=" * 94)
    print(
        f"{'endpoint':<16}{'max req/s':>12}{'ratio to bare':>16}{f'p50 @{rate}/s':>16}{f'p99 @{rate}/s':>16}"
        f"{'worker CPU/req':>18}"
    )
    for endpoint, (best, paced, cpu_ms) in results.items():
        print(
            f"{endpoint:<16}{best.rate:>12,.0f}{best.rate / bare:>16.2f}"
            f"{paced.p50_ms:>13.1f} ms{paced.p99_ms:>13.1f} ms{cpu_ms:>15.2f} ms"
        )
    print("=" * 94)
    print("worker CPU/req: CPU time of the gunicorn workers over the full-speed run, per request")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10, help="seconds of each full-speed run")
    parser.add_argument("--rate", type=int, default=300, help="requests a second of the paced runs")
    parser.add_argument("--rate-duration", type=float, default=20, help="seconds of each paced run")
    parser.add_argument("--devices", type=int, default=200, help="EA devices the requests are spread over")
    parser.add_argument(
        "--ea-throttle", default="1000000/min", help="EA_THROTTLE_RATE of the bench server (counted, not hit)"
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads, full speed")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections, full speed")
    parser.add_argument("--paced-connections", type=int, default=32, help="wrk connections, paced")
    parser.add_argument("--only", action="append", choices=[name for name in ENDPOINTS if name != BARE])
    parser.add_argument("--profile", type=Path, help="write py-spy profiles of the workers here")
    args = parser.parse_args()
    if os.environ.get("DJANGO_ENV") != "test":
        raise SystemExit("run the benchmarks with DJANGO_ENV=test (make bench-ea does)")
    if not (shutil.which("wrk") or Path("/usr/bin/wrk").exists()):
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    redis_db, token = claim_redis_db()
    os.environ["REDIS_TEST_DB"] = str(redis_db)
    harness.setup_django()
    work = Path(tempfile.mkdtemp(prefix="veilstop-ea-bench-"))
    old_name = None
    server = None
    try:
        old_name = create_database()
        fleet = build_fleet(args.devices)
        server = Server(free_port(), work, args.ea_throttle)
        print(
            f"EA bench: gunicorn {gunicorn_shape()}; {len(fleet)} devices, EA_THROTTLE_RATE "
            f"{args.ea_throttle}; Redis db {redis_db}",
            flush=True,
        )
        server.start()
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        results = measure(args, server, fleet, work, Profiler(args.profile, server))
        print_table(results, args.rate)
    finally:
        if server is not None:
            server.stop()
        if old_name is not None:
            drop_database(old_name)
        release_redis_db(token)
        shutil.rmtree(work, ignore_errors=True)


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    main()
