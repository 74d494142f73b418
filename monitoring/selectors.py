from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db.models import Count, Q
from django.utils import timezone
from redis.exceptions import RedisError

from monitoring.choices import HeartbeatName
from monitoring.models import Heartbeat
from positions.choices import STOP_REASONS, TARGET_REASONS, CloseCommandStatus, CloseReason, PositionStatus
from positions.models import Alert, CloseCommand, OpenPosition
from positions.quotes import Quote, quotes_latest
from positions.sweep_history import SweepSummary, sweep_durations, sweep_last

logger = logging.getLogger(__name__)

# The figures read from Redis (the scanner's sweep history, the feed's latest quotes).
# While Redis is unreachable they are None and listed in ``unavailable``; the rest,
# from PostgreSQL, are still shown: the owner most needs the status when a store is down.
REDIS_FIGURES = (
    "monitor_running",
    "last_check",
    "avg_check_duration_ms",
    "p95_check_duration_ms",
    "stale_quotes",
)


def heartbeat_age(*, name: str) -> timedelta | None:
    """How long ago the named heartbeat ran, or None if it never did."""
    last_seen_at = Heartbeat.objects.filter(name=name).values_list("last_seen_at", flat=True).first()
    if last_seen_at is None:
        return None
    return timezone.now() - last_seen_at


@dataclass(frozen=True)
class _RedisReads:
    last_sweep: SweepSummary | None
    durations: list[float]  # seconds, sorted
    quotes: dict[str, Quote]


def _redis_reads(symbols: list[str]) -> _RedisReads | None:
    """What the status needs from Redis, or None while Redis cannot be read."""
    try:
        return _RedisReads(
            last_sweep=sweep_last(),
            durations=sorted(sweep_durations(limit=200)),
            quotes=quotes_latest(symbols),
        )
    except RedisError as error:
        logger.warning("monitor status without Redis: %s: %s", type(error).__name__, error)
        return None


def monitor_status(*, now: datetime | None = None) -> dict:
    """Everything the dashboard and GET /api/v1/admin/positions/monitor/status show, from
    real data; the figures kept in Redis are None, and named in ``unavailable``, while
    Redis is down."""
    now = now or timezone.now()
    beat_age = heartbeat_age(name=HeartbeatName.BEAT)

    hour_ago, day_ago = now - timedelta(hours=1), now - timedelta(days=1)
    # A breach is a signal crossing a level, however many positions it closes.
    breaches = dict(
        CloseCommand.objects.filter(created_at__gte=hour_ago, reason__in=[*STOP_REASONS, *TARGET_REASONS])
        .values_list("reason")
        .annotate(count=Count("position__signal_id", distinct=True))
    )
    finished = CloseCommand.objects.filter(
        completed_at__gte=day_ago,
        status__in=[CloseCommandStatus.EXECUTED, CloseCommandStatus.FAILED, CloseCommandStatus.EXPIRED],
    )
    outcome = finished.aggregate(
        total=Count("pk"), executed=Count("pk", filter=Q(status=CloseCommandStatus.EXECUTED))
    )
    latencies = sorted(
        (command.completed_at.timestamp() - float(command.trigger_quote["received_at"]))
        for command in finished.filter(
            status=CloseCommandStatus.EXECUTED, trigger_quote__has_key="received_at"
        )
        .only("completed_at", "trigger_quote")
        .order_by("-completed_at")[:500]
    )
    offline_before = now - timedelta(seconds=settings.DEVICE_OFFLINE_SECONDS)
    offline_devices = (
        OpenPosition.objects.filter(status__in=[PositionStatus.OPEN, PositionStatus.CLOSING])
        .filter(Q(device__last_seen_at__lt=offline_before) | Q(device__last_seen_at__isnull=True))
        .values("device_id")
        .distinct()
        .count()
    )
    open_by_instrument = dict(
        OpenPosition.objects.filter(status=PositionStatus.OPEN)
        .values_list("instrument__symbol")
        .annotate(count=Count("pk"))
        .order_by("instrument__symbol")
    )
    redis = _redis_reads(sorted(open_by_instrument))
    status = {
        "monitor_enabled": settings.POSITION_MONITOR_ENABLED,
        "dry_run": settings.POSITION_MONITOR_DRY_RUN,
        "beat_heartbeat_age_seconds": round(beat_age.total_seconds(), 1) if beat_age else None,
        "open_positions_count": sum(open_by_instrument.values()),
        "open_positions_by_instrument": open_by_instrument,
        # Still live at the broker, but not watched by the scanner: closing, or needing the desk.
        "closing_positions_count": OpenPosition.objects.filter(status=PositionStatus.CLOSING).count(),
        "close_failed_positions_count": OpenPosition.objects.filter(
            status=PositionStatus.CLOSE_FAILED
        ).count(),
        "pending_closes_count": CloseCommand.objects.filter(status=CloseCommandStatus.PENDING).count(),
        "delivered_closes_count": CloseCommand.objects.filter(status=CloseCommandStatus.DELIVERED).count(),
        "breaches_last_hour": {
            "sl": breaches.get(CloseReason.STOP_LOSS, 0),
            "tp": breaches.get(CloseReason.TAKE_PROFIT, 0),
            "trailing": breaches.get(CloseReason.TRAILING, 0),
            "breakeven": breaches.get(CloseReason.BREAKEVEN, 0),
            "partial_tp": breaches.get(CloseReason.PARTIAL_TP, 0),
        },
        "close_success_rate_24h": round(outcome["executed"] / outcome["total"], 4)
        if outcome["total"]
        else None,
        "breach_to_close_latency_ms_median": round(1000 * _percentile(latencies, 0.5), 1)
        if latencies
        else None,
        "devices_offline_with_open_positions": offline_devices,
        "open_alerts": Alert.objects.filter(acknowledged_at__isnull=True).count(),
    }
    if redis is None:
        return {**status, **dict.fromkeys(REDIS_FIGURES), "unavailable": list(REDIS_FIGURES)}
    return {
        **status,
        **_redis_figures(redis, open_by_instrument, beat_age=beat_age, now=now),
        "unavailable": [],
    }


def _redis_figures(
    redis: _RedisReads, open_by_instrument: dict[str, int], *, beat_age: timedelta | None, now: datetime
) -> dict:
    last_sweep, durations = redis.last_sweep, redis.durations
    last_sweep_age = now.timestamp() - last_sweep.at if last_sweep else None
    return {
        "monitor_running": bool(
            settings.POSITION_MONITOR_ENABLED
            and last_sweep_age is not None
            and last_sweep_age <= 3 * settings.POSITION_MONITOR_INTERVAL_SECONDS
            and beat_age is not None
            and beat_age.total_seconds() <= settings.HEALTH_BEAT_MAX_AGE_SECONDS
        ),
        "last_check": datetime.fromtimestamp(last_sweep.at, tz=UTC).isoformat() if last_sweep else None,
        "avg_check_duration_ms": round(1000 * sum(durations) / len(durations), 2) if durations else None,
        "p95_check_duration_ms": round(1000 * _percentile(durations, 0.95), 2) if durations else None,
        "stale_quotes": sorted(
            symbol
            for symbol in open_by_instrument
            if symbol not in redis.quotes
            or now.timestamp() - redis.quotes[symbol].ts > settings.QUOTE_MAX_AGE_SECONDS
        ),
    }


def _percentile(ordered: list[float], fraction: float) -> float:
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]
