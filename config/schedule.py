"""Every periodic task, declared once.

``manage.py setup_periodic_tasks`` writes these into django-celery-beat's tables
(and disables any ``veilstop:`` task no longer declared here); `make run` runs
it on every start, so changing an interval setting takes effect on restart.
Each task expires after about one interval: a backlog left by an outage is
dropped, not replayed, because the next run does the same work anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

PREFIX = "veilstop:"
# The outbox's periodic delivery; a delivery run queues its own next run for a message due sooner.
OUTBOX_DELIVERY_EVERY_SECONDS = 10


@dataclass(frozen=True)
class PeriodicTaskSpec:
    name: str
    task: str
    every_seconds: int
    why: str

    @property
    def expire_seconds(self) -> int:
        return self.every_seconds


def periodic_tasks() -> list[PeriodicTaskSpec]:
    return [
        PeriodicTaskSpec(
            name=f"{PREFIX}beat-heartbeat",
            task="monitoring.beat_heartbeat",
            every_seconds=settings.BEAT_HEARTBEAT_INTERVAL_SECONDS,
            why=(
                "Proves beat schedules and a worker runs; /healthz and the monitor "
                "dashboard read its age, so it must run well inside HEALTH_BEAT_MAX_AGE_SECONDS."
            ),
        ),
        PeriodicTaskSpec(
            name=f"{PREFIX}position-monitor",
            task="positions.sweep",
            every_seconds=settings.POSITION_MONITOR_INTERVAL_SECONDS,
            why=(
                "The breach scanner's floor: fresh quotes trigger a sweep of their instrument at "
                "once, this catches everything else (a lost trigger, a recheck delay maturing)."
            ),
        ),
        PeriodicTaskSpec(
            name=f"{PREFIX}close-commands-timeout",
            task="positions.close_commands_timeout",
            every_seconds=5,
            why=(
                "Re-queues close commands whose lease ran out; every few seconds because a stuck "
                "close is money at risk, and the query only touches expired leases."
            ),
        ),
        PeriodicTaskSpec(
            name=f"{PREFIX}refresh-gauges",
            task="positions.refresh_gauges",
            every_seconds=15,
            why="Open-position and pending-close gauges; a count over open positions, so not every sweep.",
        ),
        PeriodicTaskSpec(
            name=f"{PREFIX}expire-approvals",
            task="signals_app.expire_approvals",
            every_seconds=30,
            why=(
                "Takes approvals past their TTL off the EAs' poll; the poll filters on "
                "expires_at as well, so this only needs to keep statuses honest, not be instant."
            ),
        ),
        PeriodicTaskSpec(
            name=f"{PREFIX}outbox-deliver",
            task="monitoring.outbox_deliver",
            every_seconds=OUTBOX_DELIVERY_EVERY_SECONDS,
            why=(
                "Sends what the after-commit enqueue did not (a lost enqueue, a retry's backoff, a "
                "grouped owner alert's window); the query only touches due queued rows."
            ),
        ),
        PeriodicTaskSpec(
            name=f"{PREFIX}guards-check",
            task="positions.guards_check",
            every_seconds=settings.GUARD_CHECK_INTERVAL_SECONDS,
            why=(
                "Alerts on accounts whose equity went stale (heartbeats stopped: only a clock can "
                "see that) and closes what opened on a tripped client after its trip; seconds, "
                "because a late close is money at risk."
            ),
        ),
        PeriodicTaskSpec(
            name=f"{PREFIX}candles-prune",
            task="positions.candles_prune",
            every_seconds=3600,
            why=(
                "Drops minute bars past CANDLE_RETENTION_DAYS; retention is counted in days, so "
                "hourly keeps the table within an hour of it and each run deletes about an hour of bars."
            ),
        ),
    ]
