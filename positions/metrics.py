"""Prometheus metrics of the monitor and the close path (SPEC §4 monitoring).

Recorded where the work happens, the Celery worker included: with
PROMETHEUS_MULTIPROC_DIR set (make run sets it) every process writes to a
shared folder and /metrics reads them all.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CHECKS = Counter("position_monitor_checks_total", "Signals judged by the scanner, by outcome", ["status"])
BREACHES = Counter("position_breaches_total", "Confirmed hidden-level breaches", ["type"])
CLOSES = Counter("position_closes_total", "Close commands acknowledged", ["method", "result"])
CLOSE_RETRIES = Counter(
    "position_close_retries_total", "Close commands put back for another delivery", ["reason"]
)
OPEN_POSITIONS = Gauge(
    "open_positions_gauge", "Open positions", ["instrument"], multiprocess_mode="mostrecent"
)
PENDING_CLOSES = Gauge(
    "pending_closes_gauge", "Active (pending or delivered) close commands", multiprocess_mode="mostrecent"
)
SWEEP_DURATION = Histogram(
    "position_monitor_duration_seconds",
    "Time of one scanner sweep",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CLOSE_DURATION = Histogram(
    "position_close_duration_seconds",
    "From close command created to its acknowledgement",
    ["method"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
BREACH_TO_CLOSE = Histogram(
    "breach_to_close_latency_seconds",
    "From the breaching quote's arrival to the executed close",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
ALERTS = Counter("veilstop_alerts_total", "Owner alerts opened", ["kind"])


def close_method(reason: str) -> str:
    """The ``method`` label of the close metrics: the owner's hand or the monitor."""
    return "manual" if reason == "manual" else "auto"
