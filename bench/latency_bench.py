"""Quote arrival → close command visible to the EA's poll, with a real Celery worker.

A small book (1 signal x 50 positions on one instrument). Each iteration resets
it, stores a quote between the levels, then hands a breaching quote to
``positions.quotes.quotes_ingest`` (exactly what POST /api/v1/feed/quotes
does: store it, queue ``positions.sweep_instrument`` through Celery behind the
``veilstop:scan-queued:{symbol}`` debounce key) and polls PostgreSQL every ~2 ms
for what the EA's next poll would be handed: a pending close command for its
device. The clock runs from the ingest call to that row being visible.

Run by ``make bench`` after the scanner benchmark (``BENCH_ARGS="--only latency"``
for this one alone), or on its own:

    DJANGO_ENV=test .venv/bin/python -m config.embedded run -- .venv/bin/python bench/latency_bench.py
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness  # imports no Django: safe before setup

TARGET_MEDIAN_MS = 250.0
BOOK_POSITIONS = 50
WARMUP_ITERATIONS = 3  # the worker's first tasks open connections and import lazily
POLL_INTERVAL_SECONDS = 0.002
ITERATION_TIMEOUT_SECONDS = 10.0
WORKER_START_TIMEOUT_SECONDS = 60.0

# What GET /api/v1/client/close-commands would lease to the device (close_commands_deliver).
_EA_POLL = """
SELECT 1 FROM positions_closecommand
 WHERE device_id = %s AND status = 'pending' AND next_attempt_at <= now()
 LIMIT 1
"""


@dataclass
class LatencyResult:
    seconds: list[float]
    ingest_seconds: list[float]
    positions: int
    commands_per_iteration: int

    def ms(self, fraction: float) -> float:
        return harness.percentile(self.seconds, fraction) * 1000


class Worker:
    """``celery -A config worker --pool=solo`` on the bench database and Redis db.

    No beat is started, and the bench's broker (its own Redis db) and database
    (created by this run) are unknown to any other beat: nothing but our own
    ingest calls queues sweeps. A solo pool runs each task in the process that
    received it, as a worker with concurrency 1 would, without the fork.
    """

    def __init__(self) -> None:
        self.hostname = f"bench-{os.getpid()}@{socket.gethostname()}"
        self.log_dir = Path(tempfile.mkdtemp(prefix="veilstop-bench-"))
        self.log_path = self.log_dir / "worker.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        from config.celery import app

        others = app.control.ping(timeout=1.0)
        if others:
            # Another worker on our broker would take some of the sweeps: refuse.
            raise RuntimeError(f"workers already consume the bench's broker: {others}")
        command = [
            sys.executable, "-m", "celery", "-A", "config", "worker", "--pool=solo", "-l", "WARNING",
            f"--hostname={self.hostname}", "--without-gossip", "--without-mingle", "--without-heartbeat",
        ]  # fmt: skip
        with open(self.log_path, "w") as log:  # the child keeps its own descriptor
            # Same process group as the bench: a Ctrl-C stops the worker too; the bench
            # stops it before dropping its database whatever happens.
            self.process = harness.start_child(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + WORKER_START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the Celery worker exited at start:\n{self.log_tail()}")
            if app.control.ping(destination=[self.hostname], timeout=0.5):
                return
        raise RuntimeError(f"the Celery worker did not answer within {WORKER_START_TIMEOUT_SECONDS:.0f} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # warm shutdown: finishes the task in hand
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text()[-3000:]
        except OSError:
            return "(no worker log)"


def run_latency(markets: list[harness.Market], *, iterations: int) -> LatencyResult:
    from django.db import connection

    from positions.models import OpenPosition
    from positions.quotes import Quote, quotes_ingest

    market = next(market for market in markets if market.symbol == "EURUSD")
    signal = harness.create_signal(market, "buy", near_few=True)
    positions = harness.build_book([signal], BOOK_POSITIONS, tag="latency")
    device_id = OpenPosition.objects.filter(signal_id=signal.pk).values_list("device_id", flat=True).first()
    # Past its stop (NEAR_FEW below), under the spike guard from the quote before.
    breach_bid, breach_ask = market.bid_ask(market.moved(harness.FEW_BREACH_MOVE))

    print(
        f"\nLatency: starting a Celery worker (solo pool); {positions} positions on {market.symbol}",
        flush=True,
    )
    worker = Worker()
    seconds: list[float] = []
    ingest_seconds: list[float] = []
    try:
        worker.start()
        for iteration in range(WARMUP_ITERATIONS + iterations):
            harness.reset_breaches()
            # A quote between the levels first: the breaching one then moves 1%
            # from it, well inside the spike guard.
            harness.store_quote(market, market.mid)
            breaching = Quote(market.symbol, breach_bid, breach_ask, harness.next_ts())
            started = time.perf_counter()
            quotes_ingest(quotes=[breaching])
            ingested = time.perf_counter()
            with connection.cursor() as cursor:
                while True:
                    cursor.execute(_EA_POLL, [device_id])
                    if cursor.fetchone():
                        break
                    if time.perf_counter() - started > ITERATION_TIMEOUT_SECONDS:
                        raise RuntimeError(
                            f"no close command after {ITERATION_TIMEOUT_SECONDS:.0f} s; worker log:\n"
                            f"{worker.log_tail()}"
                        )
                    time.sleep(POLL_INTERVAL_SECONDS)
            visible = time.perf_counter()
            if iteration >= WARMUP_ITERATIONS:
                seconds.append(visible - started)
                ingest_seconds.append(ingested - started)
            _wait_until_all_closed(positions)
            time.sleep(0.05)  # let the worker finish the task's after-commit work before the reset
    finally:
        worker.stop()
    harness.reset_breaches()
    return LatencyResult(seconds, ingest_seconds, positions, positions)


def _wait_until_all_closed(expected: int) -> None:
    # The sweep closes every position of the signal in one statement; check it did,
    # so a latency is never recorded for a sweep that did something else.
    from positions.models import CloseCommand

    count = CloseCommand.objects.filter(status="pending").count()
    if count != expected:
        raise RuntimeError(f"the sweep created {count} close commands, expected {expected}")


def print_result(result: LatencyResult) -> None:
    print("\n" + "=" * 100)
    print(
        f"Quote arrival -> close command visible to the EA's poll (real Celery worker, solo pool; "
        f"{result.positions} positions, 1 signal; {len(result.seconds)} runs after "
        f"{WARMUP_ITERATIONS} warm-up)"
    )
    median = statistics.median(result.seconds) * 1000
    print(
        f"  median {median:.1f} ms   p90 {result.ms(0.9):.1f} ms   max {result.ms(1.0):.1f} ms   "
        f"min {result.ms(0.0):.1f} ms   (quotes_ingest call itself: median "
        f"{statistics.median(result.ingest_seconds) * 1000:.1f} ms)"
    )
    verdict = (
        "met"
        if median <= TARGET_MEDIAN_MS
        else f"MISSED by {median - TARGET_MEDIAN_MS:.1f} ms ({median / TARGET_MEDIAN_MS:.2f}x the target)"
    )
    print(f"  target: median <= {TARGET_MEDIAN_MS:.0f} ms   {verdict}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/latency_bench.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=30)
    arguments = parser.parse_args(argv)
    harness.setup_django()
    with harness.bench_database():
        markets = harness.ensure_instruments()
        print_result(run_latency(markets, iterations=arguments.iterations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
