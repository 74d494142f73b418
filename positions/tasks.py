"""Thin tasks: each takes ids or names, calls one service, and is safe to run twice."""

from __future__ import annotations

from celery import shared_task

from core.redis import get_redis
from positions import metrics
from positions.scanner import live_position_counts, sweep
from positions.services import close_commands_timeout

SCAN_QUEUED_KEY = "veilstop:scan-queued:{symbol}"
TASK_OPTIONS = {"acks_late": True, "reject_on_worker_lost": True, "soft_time_limit": 20, "time_limit": 30}


@shared_task(name="positions.sweep", **TASK_OPTIONS)
def sweep_all() -> dict:
    report = sweep()
    return {"signals": report.signals, "commands": report.commands_created}


@shared_task(name="positions.sweep_instrument", **TASK_OPTIONS)
def sweep_instrument(symbol: str) -> dict:
    # Cleared first: a quote arriving while this sweep runs queues the next one.
    get_redis().delete(SCAN_QUEUED_KEY.format(symbol=symbol))
    report = sweep(symbols={symbol})
    return {"signals": report.signals, "commands": report.commands_created}


def sweep_instrument_soon(symbol: str) -> None:
    """Queue a sweep of one instrument unless one is already queued (debounce)."""
    if get_redis().set(SCAN_QUEUED_KEY.format(symbol=symbol), 1, nx=True, ex=5):
        sweep_instrument.delay_on_commit(symbol)


@shared_task(name="positions.close_commands_timeout", **TASK_OPTIONS)
def close_commands_timeout_task() -> dict:
    report = close_commands_timeout()
    return {"redelivered": report.redelivered, "expired": report.expired}


@shared_task(name="positions.refresh_gauges", **TASK_OPTIONS)
def refresh_gauges() -> None:
    per_instrument, pending = live_position_counts()
    metrics.OPEN_POSITIONS.clear()
    for symbol, count in per_instrument.items():
        metrics.OPEN_POSITIONS.labels(instrument=symbol).set(count)
    metrics.PENDING_CLOSES.set(pending)
