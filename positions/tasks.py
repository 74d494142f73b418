"""Thin tasks: each takes ids or names, calls one service, and is safe to run twice."""

from __future__ import annotations

from celery import shared_task

from core.redis import get_redis
from positions import metrics
from positions.candles import candles_prune
from positions.guards.trip import guards_check
from positions.quotes import SWEEP_INSTRUMENT_TASK, SWEEP_QUEUED_KEY
from positions.scanner import sweep
from positions.selectors import live_position_counts
from positions.timeouts import close_commands_timeout

TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True, "soft_time_limit": 20, "time_limit": 30}


@shared_task(name="positions.sweep", **TASK_OPTIONS)
def sweep_all() -> dict:
    report = sweep()
    return {"signals": report.signals, "commands": report.commands_created}


@shared_task(name=SWEEP_INSTRUMENT_TASK, **TASK_OPTIONS)
def sweep_instrument(symbol: str) -> dict:
    # Cleared first: a quote arriving while this sweep runs queues the next one.
    get_redis().delete(SWEEP_QUEUED_KEY.format(symbol=symbol))
    report = sweep(symbols={symbol})
    return {"signals": report.signals, "commands": report.commands_created}


@shared_task(name="positions.close_commands_timeout", **TASK_OPTIONS)
def close_commands_timeout_task() -> dict:
    report = close_commands_timeout()
    return {"redelivered": report.redelivered, "expired": report.expired}


@shared_task(name="positions.refresh_gauges", **TASK_OPTIONS)
def refresh_gauges() -> None:
    per_instrument, pending = live_position_counts()
    # Every instrument is set, to 0 when none is open: under multi-process metrics (gunicorn
    # and Celery workers share /metrics) a label set cannot be removed, only overwritten.
    for symbol, count in per_instrument.items():
        metrics.OPEN_POSITIONS.labels(instrument=symbol).set(count)
    metrics.PENDING_CLOSES.set(pending)


@shared_task(name="positions.candles_prune", **TASK_OPTIONS)
def candles_prune_task() -> dict:
    # Each batch commits on its own: a run stopped by its time limit keeps its progress.
    return {"deleted": candles_prune()}


@shared_task(name="positions.guards_check", **TASK_OPTIONS)
def guards_check_task() -> dict:
    report = guards_check()
    return {"stale_devices": report.stale_devices, "closes": report.closes}
