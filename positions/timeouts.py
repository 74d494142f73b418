"""Stale close commands: a delivered command whose lease ran out without an
acknowledgement goes back to pending (same id, with backoff) until
CLOSE_MAX_ATTEMPTS deliveries, then expires (position ``close_failed``, owner
alerted). Pending commands waiting on a device that has gone quiet alert the
owner too. Run from beat (``positions.close_commands_timeout``). A re-queued
command wakes its device's waiting EA after the commit (``core.wake``).

Lock order (``positions.locks``): positions, then their commands; both skip rows
another transaction holds (the next run takes them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from core.wake import wake_devices
from positions import metrics
from positions.alerts import alert_raise
from positions.choices import AlertKind, CloseCommandStatus, PositionStatus
from positions.locks import close_commands_lock, positions_lock
from positions.models import CloseCommand, OpenPosition
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit


@dataclass(frozen=True)
class TimeoutReport:
    redelivered: int
    expired: int
    offline_alerts: int


def _backoff_seconds(attempts: int) -> int:
    """1, 2, 4, ... seconds after each failed delivery, at most a minute."""
    return min(2 ** max(attempts - 1, 0), 60)


def close_commands_timeout(*, now: datetime | None = None, batch_size: int = 500) -> TimeoutReport:
    """Delivered commands whose lease ran out go back to pending (same id, with
    backoff) or, after CLOSE_MAX_ATTEMPTS deliveries, expire: the position is
    ``close_failed`` and the owner alerted. Pending commands of a device that has
    gone quiet alert the owner too."""
    now = now or timezone.now()
    by = Actor.system("close-timeout-sweep")
    candidates = list(
        CloseCommand.objects.filter(status=CloseCommandStatus.DELIVERED, lease_expires_at__lte=now)
        .order_by("lease_expires_at")
        .values_list("pk", "position_id")[:batch_size]
    )
    redelivered = expired = 0
    requeued_for: set[int] = set()
    with transaction.atomic():
        # Lock order: positions, then their commands (as close_command_ack does).
        positions = {
            position.pk
            for position in positions_lock([position_id for _, position_id in candidates], skip_locked=True)
        }
        commands = close_commands_lock(
            [pk for pk, position_id in candidates if position_id in positions],
            skip_locked=True,
            status=CloseCommandStatus.DELIVERED,
            lease_expires_at__lte=now,
        )
        for command in commands:
            if command.attempts >= settings.CLOSE_MAX_ATTEMPTS:
                close_command_expire(
                    command,
                    now=now,
                    by=by,
                    why="no acknowledgement",
                    alert=(
                        f"Position #{command.position_id}: close command #{command.pk} was delivered "
                        f"{command.attempts} times without an acknowledgement; the position is close_failed."
                    ),
                )
                expired += 1
            else:
                next_attempt_at = now + timedelta(seconds=_backoff_seconds(command.attempts))
                CloseCommand.objects.filter(pk=command.pk).update(
                    status=CloseCommandStatus.PENDING, lease_expires_at=None, next_attempt_at=next_attempt_at
                )
                audit(
                    by=by,
                    action=AuditAction.CLOSE_COMMAND_REQUEUED,
                    subject=command,
                    data={"attempts": command.attempts, "next_attempt_at": next_attempt_at.isoformat()},
                )
                metrics.CLOSE_RETRIES.labels(reason="ack_timeout").inc()
                redelivered += 1
                requeued_for.add(command.device_id)
        # After the commit: the devices' waiting EAs look again (each command is
        # handed out once its backoff has passed).
        wake_devices(requeued_for)
    return TimeoutReport(
        redelivered=redelivered, expired=expired, offline_alerts=_alert_offline_devices(now=now)
    )


def close_command_expire(command: CloseCommand, *, now: datetime, by: Actor, why: str, alert: str) -> None:
    """A delivered command given up: expired, its closing position close_failed (both
    audited with ``why``), counted, and the owner alerted with ``alert``."""
    CloseCommand.objects.filter(pk=command.pk).update(
        status=CloseCommandStatus.EXPIRED, completed_at=now, lease_expires_at=None
    )
    data = {"command_id": command.pk, "attempts": command.attempts, "why": why}
    if OpenPosition.objects.filter(pk=command.position_id, status=PositionStatus.CLOSING).update(
        status=PositionStatus.CLOSE_FAILED, updated_at=now
    ):
        position = OpenPosition(pk=command.position_id)
        audit(by=by, action=AuditAction.POSITION_CLOSE_FAILED, subject=position, data=data)
    audit(
        by=by,
        action=AuditAction.CLOSE_COMMAND_EXPIRED,
        subject=command,
        data={"position_id": command.position_id, "attempts": command.attempts, "why": why},
    )
    metrics.CLOSES.labels(method=metrics.close_method(command.reason), result="expired").inc()
    alert_raise(
        kind=AlertKind.CLOSE_FAILED,
        dedupe_key=f"close_failed:{command.position_id}",
        message=alert,
        position_id=command.position_id,
        device_id=command.device_id,
    )


def _alert_offline_devices(*, now: datetime) -> int:
    quiet_since = now - timedelta(seconds=settings.DEVICE_OFFLINE_SECONDS)
    rows = (
        CloseCommand.objects.filter(status=CloseCommandStatus.PENDING)
        .filter(Q(device__last_seen_at__lt=quiet_since) | Q(device__last_seen_at__isnull=True))
        .values("device_id", "device__name")
        .annotate(waiting=Count("pk"))
        .order_by("device_id")
    )
    raised = 0
    for row in rows:
        raised += alert_raise(
            kind=AlertKind.DEVICE_OFFLINE,
            dedupe_key=f"offline:{row['device_id']}",
            message=f"Device {row['device__name']} is offline; {row['waiting']} close command(s) wait.",
            device_id=row["device_id"],
        )
    return raised
