"""Writes for positions and close commands: the close path, short and guarded.

Lock order, everywhere: position row, then close-command row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F, Q
from django.utils import timezone
from rest_framework import status

from core.errors import DomainError
from positions import metrics
from positions.alerts import alert_raise
from positions.choices import (
    CLOSED_STATUS_FOR,
    AlertKind,
    CloseCommandStatus,
    CloseReason,
    PositionStatus,
)
from positions.models import CloseCommand, OpenPosition
from positions.quotes import Quote, quote_store
from positions.rules import realized_pnl
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit, audit_many
from signals_app.models import Approval, Instrument


def _conflict(message: str) -> DomainError:
    return DomainError("conflict", message, status_code=status.HTTP_409_CONFLICT)


def position_open(
    *,
    approval: Approval,
    device_id: int,
    broker_ticket: str,
    entry_price: Decimal,
    volume: Decimal,
    by: Actor,
) -> OpenPosition:
    """Record a fill. The caller holds the approval's row lock."""
    signal = approval.signal
    try:
        with transaction.atomic():
            position = OpenPosition.objects.create(
                signal=signal,
                approval=approval,
                client_id=approval.client_id,
                device_id=device_id,
                instrument_id=signal.instrument_id,
                side=signal.side,
                requested_entry_price=signal.entry_price,
                entry_price=entry_price,
                volume=volume,
                remaining_volume=volume,
                broker_ticket=broker_ticket,
            )
    except IntegrityError:
        raise _conflict("This broker ticket already belongs to another position.") from None
    audit(
        by=by,
        action=AuditAction.POSITION_OPENED,
        subject=position,
        data={
            "approval_id": approval.pk,
            "signal_id": signal.pk,
            "broker_ticket": broker_ticket,
            "entry_price": str(entry_price),
            "volume": str(volume),
        },
    )
    return position


def close_command_request(
    *,
    position: OpenPosition,
    reason: str,
    by: Actor,
    trigger_quote: dict[str, Any] | None = None,
    note: str = "",
) -> CloseCommand | None:
    """Queue a close of the whole remaining volume; None if the position is not open."""
    queued = closes_queue(
        position_ids=[position.pk], reason=reason, by=by, trigger_quote=trigger_quote, note=note
    )
    position.refresh_from_db(fields=["status"])
    return CloseCommand.objects.get(pk=queued[position.pk]) if position.pk in queued else None


# One statement for any number of positions: the guarded claim (open or close_failed
# → closing, and never a position that already has an active command), the commands
# and their audit records. The scanner's statement does the same per breached signal.
_QUEUE_CLOSES = """
WITH claimed AS (
    UPDATE positions_openposition p
       SET status = 'closing', updated_at = now()
     WHERE p.id = ANY(%(ids)s) AND p.status IN ('open', 'close_failed')
       AND NOT EXISTS (SELECT 1 FROM positions_closecommand a
                        WHERE a.position_id = p.id AND a.status IN ('pending', 'delivered'))
    RETURNING p.id, p.device_id, p.remaining_volume
),
commands AS (
    INSERT INTO positions_closecommand
        (position_id, device_id, volume, reason, status, attempts, next_attempt_at,
         trigger_quote, requested_by, note, created_at)
    SELECT id, device_id, remaining_volume, %(reason)s, 'pending', 0, now(), %(quote)s::jsonb,
           %(actor)s, %(note)s, now()
      FROM claimed
    RETURNING id, position_id
),
audited AS (
    INSERT INTO signals_app_auditevent
        (occurred_at, actor_kind, actor, action, subject_type, subject_id, data)
    SELECT now(), %(actor_kind)s, %(actor)s, %(action)s, 'openposition', position_id,
           jsonb_build_object('command_id', id, 'reason', %(reason)s, 'trigger_quote', %(quote)s::jsonb,
                              'note', %(note)s)
      FROM commands
    RETURNING 1
)
SELECT position_id, id FROM commands
"""


def closes_queue(
    *,
    position_ids: list[int],
    reason: str,
    by: Actor,
    trigger_quote: dict[str, Any] | None = None,
    note: str = "",
) -> dict[int, int]:
    """Queue a close of each position that is open (or whose last close failed);
    return {position id: close command id} for those queued.

    However many callers race, the guarded claim and the partial unique index on
    active commands leave one command per position.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            _QUEUE_CLOSES,
            {
                "ids": sorted(set(position_ids)),
                "reason": str(reason),
                "quote": json.dumps(trigger_quote) if trigger_quote is not None else None,
                "actor": by.name,
                "actor_kind": by.kind,
                "action": AuditAction.POSITION_CLOSE_REQUESTED.value,
                "note": note[:2000],
            },
        )
        return dict(cursor.fetchall())


def close_commands_deliver(*, device_id: int, limit: int, now: datetime | None = None) -> list[CloseCommand]:
    """Lease this device's due pending commands to it (at most ``limit``).

    ``SKIP LOCKED`` lets two polls of one device run at once without either
    waiting or both getting the same command.
    """
    now = now or timezone.now()
    lease_until = now + timedelta(seconds=settings.CLOSE_ACK_TIMEOUT_SECONDS)
    with transaction.atomic():
        commands = list(
            CloseCommand.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("position")
            .filter(device_id=device_id, status=CloseCommandStatus.PENDING, next_attempt_at__lte=now)
            .order_by("next_attempt_at", "pk")[:limit]
        )
        if not commands:
            return []
        CloseCommand.objects.filter(pk__in=[command.pk for command in commands]).update(
            status=CloseCommandStatus.DELIVERED,
            attempts=F("attempts") + 1,
            delivered_at=now,
            lease_expires_at=lease_until,
        )
        audit_many(
            by=Actor.system("ea-gateway"),
            action=AuditAction.CLOSE_COMMAND_DELIVERED,
            subjects=commands,
            data_for=lambda command: {"device_id": device_id, "attempt": command.attempts + 1},
        )
    return commands


@dataclass(frozen=True)
class CloseResult:
    executed: bool
    close_price: Decimal | None = None
    closed_volume: Decimal | None = None
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        if self.executed:
            return {
                "status": "executed",
                "close_price": str(self.close_price),
                "closed_volume": str(self.closed_volume),
            }
        return {"status": "failed", "error": self.error}

    def same_as(self, stored: dict[str, Any] | None) -> bool:
        if not stored or stored.get("status") != ("executed" if self.executed else "failed"):
            return False
        if not self.executed:
            return True  # a failure repeated is the same failure, whatever its wording
        return (
            Decimal(stored["close_price"]) == self.close_price
            and Decimal(stored["closed_volume"]) == self.closed_volume
        )


def close_command_ack(*, command_id: int, device_id: int, result: CloseResult, by: Actor) -> CloseCommand:
    """Apply the EA's report of a close. Idempotent; a conflicting report is a 409."""
    command, fresh = _close_command_ack(command_id=command_id, device_id=device_id, result=result, by=by)
    if fresh:
        _record_close_metrics(command)
    return command


def _close_method(command: CloseCommand) -> str:
    """The ``method`` label of the close metrics: the owner's hand or the monitor."""
    return "manual" if command.reason == CloseReason.MANUAL else "auto"


def _record_close_metrics(command: CloseCommand) -> None:
    method = _close_method(command)
    metrics.CLOSES.labels(method=method, result=command.status).inc()
    metrics.CLOSE_DURATION.labels(method=method).observe(
        (command.completed_at - command.created_at).total_seconds()
    )
    received_at = (command.trigger_quote or {}).get("received_at")
    if command.status == CloseCommandStatus.EXECUTED and received_at:
        metrics.BREACH_TO_CLOSE.observe(max(0.0, command.completed_at.timestamp() - float(received_at)))


def _close_command_ack(
    *, command_id: int, device_id: int, result: CloseResult, by: Actor
) -> tuple[CloseCommand, bool]:
    with transaction.atomic():
        command = (
            CloseCommand.objects.filter(pk=command_id, device_id=device_id).only("pk", "position_id").first()
        )
        if command is None:
            raise DomainError("not_found", "Not found.", status_code=status.HTTP_404_NOT_FOUND)
        position = (
            OpenPosition.objects.select_for_update().select_related("instrument").get(pk=command.position_id)
        )
        command = CloseCommand.objects.select_for_update().get(pk=command_id)

        if command.status in (CloseCommandStatus.EXECUTED, CloseCommandStatus.FAILED):
            if result.same_as(command.result):
                return command, False
            raise _conflict(f"This close command was already acknowledged as {command.status}.")
        if command.status == CloseCommandStatus.CANCELLED:
            raise _conflict("This close command was cancelled.")
        if result.executed and result.closed_volume > position.remaining_volume:
            raise DomainError(
                "invalid",
                "closed_volume is larger than the position's open volume.",
                fields={"closed_volume": [f"at most {position.remaining_volume}"]},
            )

        now = timezone.now()
        CloseCommand.objects.filter(pk=command.pk).update(
            status=CloseCommandStatus.EXECUTED if result.executed else CloseCommandStatus.FAILED,
            result=result.as_json(),
            completed_at=now,
            lease_expires_at=None,
        )
        audit(
            by=by,
            action=AuditAction.CLOSE_COMMAND_EXECUTED
            if result.executed
            else AuditAction.CLOSE_COMMAND_FAILED,
            subject=command,
            data={"position_id": position.pk, **result.as_json()},
        )
        if result.executed:
            _apply_close(position=position, command=command, result=result, now=now, by=by)
        elif position.status in (PositionStatus.CLOSING, PositionStatus.CLOSE_FAILED):
            _after_failed_close(position=position, command=command, error=result.error, now=now, by=by)
        command.refresh_from_db()
    return command, True


def _after_failed_close(*, position: OpenPosition, command: CloseCommand, error: str, now, by: Actor) -> None:
    """The broker refused the close; the trade is still open there.

    Below CLOSE_MAX_ATTEMPTS failed closes the position is watched again (a level
    still crossed makes a fresh command on the next sweep); at the limit it stops
    retrying by itself: ``close_failed`` and an owner alert.
    """
    failures = CloseCommand.objects.filter(position=position, status=CloseCommandStatus.FAILED).count()
    data = {"command_id": command.pk, "error": error[:500], "failed_closes": failures}
    if failures < settings.CLOSE_MAX_ATTEMPTS:
        OpenPosition.objects.filter(pk=position.pk).update(status=PositionStatus.OPEN, updated_at=now)
        audit(by=by, action=AuditAction.POSITION_REOPENED, subject=position, data=data)
        return
    OpenPosition.objects.filter(pk=position.pk).update(status=PositionStatus.CLOSE_FAILED, updated_at=now)
    audit(by=by, action=AuditAction.POSITION_CLOSE_FAILED, subject=position, data=data)
    alert_raise(
        kind=AlertKind.CLOSE_FAILED,
        dedupe_key=f"close_failed:{position.pk}",
        message=f"Position #{position.pk}: the EA failed to close it {failures} times; it needs the desk.",
        position_id=position.pk,
        device_id=command.device_id,
    )


def _apply_close(
    *, position: OpenPosition, command: CloseCommand, result: CloseResult, now, by: Actor
) -> None:
    pnl = realized_pnl(
        side=position.side,
        entry_price=position.entry_price,
        close_price=result.close_price,
        volume=result.closed_volume,
        contract_size=position.instrument.contract_size,
    )
    remaining = position.remaining_volume - result.closed_volume
    fully_closed = remaining == 0
    fields: dict[str, Any] = {
        "remaining_volume": remaining,
        "realized_pnl": (position.realized_pnl or Decimal(0)) + pnl,
        "close_price": result.close_price,
        "updated_at": now,
    }
    if fully_closed:
        fields.update(
            status=CLOSED_STATUS_FOR[CloseReason(command.reason)],
            closed_at=now,
            close_reason=command.reason,
        )
    else:
        fields.update(status=PositionStatus.OPEN)
    OpenPosition.objects.filter(pk=position.pk).update(**fields)
    audit(
        by=by,
        action=AuditAction.POSITION_CLOSED if fully_closed else AuditAction.POSITION_PARTIALLY_CLOSED,
        subject=position,
        data={
            "command_id": command.pk,
            "reason": command.reason,
            "close_price": str(result.close_price),
            "closed_volume": str(result.closed_volume),
            "realized_pnl": str(pnl),
            "trigger_quote": command.trigger_quote,
        },
    )


def positions_reconcile(
    *, device_id: int, open_tickets: set[str], by: Actor, now: datetime | None = None
) -> int:
    """Positions whose ticket vanished from the EA's account were closed outside the server.

    One heartbeat is not enough (a terminal reconnecting may report no tickets):
    a ticket must be missing from heartbeats at least RECONCILE_GRACE_SECONDS
    apart, and only ``open`` positions older than that count (a fresh fill may not
    be in the snapshot yet; a ``closing`` one is waiting for its close-ack).
    """
    now = now or timezone.now()
    grace = timedelta(seconds=settings.RECONCILE_GRACE_SECONDS)
    with transaction.atomic():
        live = OpenPosition.objects.filter(device_id=device_id, status=PositionStatus.OPEN)
        live.filter(broker_ticket__in=open_tickets, ticket_missing_since__isnull=False).update(
            ticket_missing_since=None
        )
        live.exclude(broker_ticket__in=open_tickets).filter(ticket_missing_since__isnull=True).update(
            ticket_missing_since=now
        )
        vanished = list(
            live.select_for_update(skip_locked=True)
            .filter(opened_at__lt=now - grace, ticket_missing_since__lte=now - grace)
            .exclude(broker_ticket__in=open_tickets)
            .only("pk", "broker_ticket", "ticket_missing_since")
        )
        if not vanished:
            return 0
        OpenPosition.objects.filter(
            pk__in=[position.pk for position in vanished], status=PositionStatus.OPEN
        ).update(status=PositionStatus.CLOSED_EXTERNAL, closed_at=now, updated_at=now)
        audit_many(
            by=by,
            action=AuditAction.POSITION_CLOSED_EXTERNALLY,
            subjects=vanished,
            data_for=lambda position: {
                "broker_ticket": position.broker_ticket,
                "missing_since": position.ticket_missing_since.isoformat(),
                "open_tickets_reported": len(open_tickets),
            },
        )
    return len(vanished)


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
    with transaction.atomic():
        # Lock order: positions, then their commands (as close_command_ack does).
        positions = set(
            OpenPosition.objects.select_for_update(skip_locked=True)
            .filter(pk__in=[position_id for _, position_id in candidates])
            .values_list("pk", flat=True)
        )
        commands = list(
            CloseCommand.objects.select_for_update(skip_locked=True)
            .filter(
                pk__in=[pk for pk, position_id in candidates if position_id in positions],
                status=CloseCommandStatus.DELIVERED,
                lease_expires_at__lte=now,
            )
            .order_by("pk")
        )
        for command in commands:
            if command.attempts >= settings.CLOSE_MAX_ATTEMPTS:
                _expire(command, now=now, by=by)
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
    return TimeoutReport(
        redelivered=redelivered, expired=expired, offline_alerts=_alert_offline_devices(now=now)
    )


def _expire(command: CloseCommand, *, now: datetime, by: Actor) -> None:
    CloseCommand.objects.filter(pk=command.pk).update(
        status=CloseCommandStatus.EXPIRED, completed_at=now, lease_expires_at=None
    )
    if OpenPosition.objects.filter(pk=command.position_id, status=PositionStatus.CLOSING).update(
        status=PositionStatus.CLOSE_FAILED, updated_at=now
    ):
        audit(
            by=by,
            action=AuditAction.POSITION_CLOSE_FAILED,
            subject=OpenPosition(pk=command.position_id),
            data={"command_id": command.pk, "attempts": command.attempts, "why": "no acknowledgement"},
        )
    audit(
        by=by,
        action=AuditAction.CLOSE_COMMAND_EXPIRED,
        subject=command,
        data={"position_id": command.position_id, "attempts": command.attempts},
    )
    metrics.CLOSES.labels(method=_close_method(command), result="expired").inc()
    alert_raise(
        kind=AlertKind.CLOSE_FAILED,
        dedupe_key=f"close_failed:{command.position_id}",
        message=(
            f"Position #{command.position_id}: close command #{command.pk} was delivered "
            f"{command.attempts} times without an acknowledgement; the position is close_failed."
        ),
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


@dataclass(frozen=True)
class QuoteBatchResult:
    accepted: int
    ignored: int


def quotes_ingest(*, quotes: list[Quote]) -> QuoteBatchResult:
    """Store the owner's quotes (from the feed API or a replay) and sweep at once
    every instrument that moved and has open positions.

    An unknown instrument rejects the whole batch: nothing is stored.
    """
    from positions.tasks import sweep_instrument_soon  # tasks import this module

    symbols = {quote.instrument for quote in quotes}
    known = set(Instrument.objects.filter(symbol__in=symbols, active=True).values_list("symbol", flat=True))
    unknown = sorted(symbols - known)
    if unknown:
        raise DomainError(
            "invalid",
            "Unknown instruments in the batch.",
            fields={"quotes": [f"unknown instrument {symbol!r}" for symbol in unknown[:20]]},
        )
    received_at = time.time()
    stored = [
        quote for quote in sorted(quotes, key=lambda q: q.ts) if quote_store(quote, received_at=received_at)
    ]
    for symbol in sorted({quote.instrument for quote in stored}):
        if OpenPosition.objects.filter(instrument__symbol=symbol, status=PositionStatus.OPEN).exists():
            sweep_instrument_soon(symbol)
    return QuoteBatchResult(accepted=len(stored), ignored=len(quotes) - len(stored))


@dataclass(frozen=True)
class ManualCloseResult:
    commands: dict[int, int]  # position id -> the close command queued for it
    skipped: list[int]  # positions that are not open (already closing or closed)
    unknown: list[int]  # ids that name no position

    @property
    def queued(self) -> list[int]:
        return sorted(self.commands)


def positions_close_manual(
    *, position_ids: list[int], reason: str, note: str, by: Actor
) -> ManualCloseResult:
    """The owner closes positions by hand, through the same guarded claim as
    everything else: a double click, or a breach at the same moment, still makes one close."""
    ids = sorted(set(position_ids))
    commands = closes_queue(
        position_ids=ids, reason=CloseReason.MANUAL, by=by, note=f"{reason}: {note}" if note else reason
    )
    known = set(OpenPosition.objects.filter(pk__in=ids).values_list("pk", flat=True))
    return ManualCloseResult(
        commands=commands,
        skipped=sorted(known - set(commands)),
        unknown=sorted(set(ids) - known),
    )
