"""A sweeping process of the bench's own: fresh, so its first sweep is cold (no
per-process cache yet) and its memory is what sweeping costs; several of them
sweep concurrently for the scale-out measurement.

Started by ``bench.harness.SweepProcess`` with the bench database's URL and Redis
db in its environment. Reads commands from stdin and answers on stdout, one JSON
object per line (anything else the process prints goes to stderr):

* ``{"op": "sweep", "symbols": [...] | null, "tracemalloc": bool, "profile": bool}``: one
  sweep through ``positions.scanner.sweep``, timed; the answer holds its report, its
  seconds, the process's resident memory before it and its peak during it (Linux
  ``VmHWM``, reset before the sweep through ``/proc/self/clear_refs``), with
  ``tracemalloc`` the peak of Python allocations during the sweep, with ``profile`` its
  cProfile by cumulative time (both slow it: time it apart);
* ``{"op": "loop", "mode": "all" | "queue", "start_at": t, "stop_at": t}``: sweeps
  back to back between two wall-clock times. ``all``: ``sweep()`` over every
  instrument, as beat does; ``queue``: ``sweep(symbols={symbol})`` for each symbol
  popped from the bench's queue, as the quote-triggered task does (the bench's feeder
  pushes them). The answer counts sweeps and the instruments each one judged, and
  lists the quotes (instrument, sequence number, arrival) each sweep read under its
  instruments' locks and when it read and trimmed them, so the bench can tell whether
  a quote was judged twice, and why;
* ``{"op": "exit"}``.
"""

from __future__ import annotations

import cProfile
import gc
import io
import json
import os
import pstats
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

QUEUE_KEY = "bench:sweep-queue"
QUEUED_KEY = "bench:sweep-queued:{symbol}"


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _report(report: Any) -> dict[str, Any]:
    return {
        "signals": report.signals,
        "skipped_locked_instruments": report.skipped_locked_instruments,
        "outcomes": dict(report.outcomes),
        "breached_signals": report.breached_signals,
        "commands_created": report.commands_created,
    }


class QuoteReads:
    """Which quotes each sweep read, and when it trimmed them: wrappers around
    ``positions.quote_path.paths_read`` and ``paths_trim`` wherever the scanner's modules
    hold them (they observe, they change nothing). If the scanner no longer reads paths
    through them, ``available`` is False and nothing is checked."""

    def __init__(self) -> None:
        self.reads: list[tuple[str, int, float]] = []  # (symbol, seq, received_at)
        self.symbols: list[str] = []
        self.read_at: float | None = None
        self.trim_at: float | None = None
        self.available = False
        try:
            from positions import quote_path
        except ImportError:
            return
        read, trim = getattr(quote_path, "paths_read", None), getattr(quote_path, "paths_trim", None)
        if read is None or trim is None:
            return

        def paths_read(symbols, *args, **kwargs):
            self.read_at = time.time()  # before the read: a lower bound of when Redis served it
            paths = read(symbols, *args, **kwargs)
            self.symbols.extend(paths)
            for symbol, entries in paths.items():
                self.reads.extend((symbol, entry.quote.seq, entry.quote.received_at) for entry in entries)
            return paths

        def paths_trim(*args, **kwargs):
            try:
                return trim(*args, **kwargs)
            finally:
                self.trim_at = time.time()  # after the trim: an upper bound of when it took effect

        for name, module in list(sys.modules.items()):
            if not name.startswith("positions"):
                continue
            if getattr(module, "paths_read", None) is read:
                module.paths_read = paths_read
                self.available = True
            if getattr(module, "paths_trim", None) is trim:
                module.paths_trim = paths_trim

    def take(self) -> dict[str, Any]:
        """What the sweep since the last call read, and when it read and trimmed."""
        taken = {
            "reads": self.reads,
            "symbols": self.symbols,
            "read_at": self.read_at,
            "trim_at": self.trim_at,
        }
        self.reads, self.symbols, self.read_at, self.trim_at = [], [], None, None
        return taken


def sweep_once(command: dict[str, Any]) -> dict[str, Any]:
    from positions.scanner import sweep

    symbols = set(command["symbols"]) if command.get("symbols") else None
    gc.collect()
    rss_before = _status_kib("VmRSS")
    hwm_reset = _reset_peak_rss()
    traced = bool(command.get("tracemalloc"))
    profiler = cProfile.Profile() if command.get("profile") else None
    if traced:
        tracemalloc.start()
        tracemalloc.reset_peak()
    started = time.perf_counter()
    try:
        if profiler:
            profiler.enable()
        report = sweep(symbols=symbols)
        if profiler:
            profiler.disable()
        seconds = time.perf_counter() - started
        traced_peak = tracemalloc.get_traced_memory()[1] if traced else None
    finally:
        if traced:
            tracemalloc.stop()
    profile = None
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("cumulative").print_stats(25)
        profile = out.getvalue()
    return {
        "profile": profile,
        "seconds": seconds,
        "report": _report(report),
        "rss_before_kib": rss_before,
        "rss_peak_kib": _status_kib("VmHWM") if hwm_reset else None,
        "tracemalloc_peak_bytes": traced_peak,
    }


def loop(command: dict[str, Any], reads: QuoteReads) -> dict[str, Any]:
    from core.redis import get_redis
    from positions.scanner import sweep

    redis = get_redis()
    mode = command["mode"]
    reads.take()
    time.sleep(max(0.0, command["start_at"] - time.time()))
    sweeps: list[dict[str, Any]] = []
    while time.time() < command["stop_at"]:
        if mode == "queue":
            popped = redis.blpop([QUEUE_KEY], timeout=0.05)
            if popped is None:
                continue
            symbol = popped[1].decode()
            # Cleared first, as positions.tasks.sweep_instrument does: a quote arriving
            # while this sweep runs queues the next one.
            redis.delete(QUEUED_KEY.format(symbol=symbol))
            symbols: set[str] | None = {symbol}
        else:
            symbols = None
        started = time.time()
        report = sweep(symbols=symbols)
        ended = time.time()
        taken = reads.take()
        sweeps.append(
            {
                "started": started,
                "seconds": ended - started,
                "signals": report.signals,
                "skipped": report.skipped_locked_instruments,
                "commands": report.commands_created,
                "instruments_judged": len(taken["symbols"]) if reads.available else None,
                **taken,
            }
        )
    return {"sweeps": sweeps, "reads_observed": reads.available}


def main() -> int:
    # Answers go to the original stdout; anything else printed (logging, warnings) to stderr.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    from bench import harness

    harness.setup_django()
    from django.db import connection

    from core.redis import get_redis

    connection.ensure_connection()
    get_redis().ping()
    import positions.scanner  # noqa: F401 - imported before the sweep is timed, as in a worker

    reads = QuoteReads()
    answers.write(json.dumps({"ready": True, "pid": os.getpid(), "rss_kib": _status_kib("VmRSS")}) + "\n")
    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["op"] == "exit":
                break
            if command["op"] == "sweep":
                reads.take()
                answer = sweep_once(command)
                reads.take()
            elif command["op"] == "loop":
                answer = loop(command, reads)
            else:
                answer = {"error": f"unknown op {command['op']!r}"}
        except Exception as error:  # report it to the bench, which stops
            import traceback

            traceback.print_exc()
            answer = {"error": f"{type(error).__name__}: {error}"}
        answers.write(json.dumps(answer) + "\n")
    connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
