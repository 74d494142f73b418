"""The close command's life after the claim: delivery to the EA (a lease) and the
EA's report (executed or failed).

Lock order (``positions.locks``): the position, then its close command.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from core.errors import DomainError
from core.wake import wake_clients
from positions import metrics
from positions.alerts import alert_raise
from positions.choices import (
    ACTIVE_CLOSE_STATUSES,
    CLOSED_STATUS_FOR,
    AlertKind,
    CloseCommandStatus,
    CloseReason,
    PositionStatus,
)
from positions.locks import close_command_lock, position_lock
from positions.models import CloseCommand, OpenPosition
from positions.notices import position_close_notice
from positions.plan_store import plans_mark_dirty
from positions.quotes import sweep_instrument_soon
from positions.rules import realized_pnl
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit
from signals_app.models import AuditEvent

_LEASE = """
WITH due AS (
    SELECT id FROM {command}
     WHERE device_id = %(device)s AND status = %(pending)s AND next_attempt_at <= %(now)s
     ORDER BY next_attempt_at, id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE {command} AS command
       SET status = %(delivered)s, attempts = command.attempts + 1,
           delivered_at = %(now)s, lease_expires_at = %(lease_until)s
      FROM due
     WHERE command.id = due.id
    RETURNING {returning}
), audited AS (
    INSERT INTO {audit} (occurred_at, actor_kind, actor, action, subject_type, subject_id, data)
    SELECT now(), %(actor_kind)s, %(actor)s, %(action)s, %(subject_type)s, leased.id,
           jsonb_build_object('device_id', leased.device_id, 'attempt', leased.attempts)
      FROM leased
)
SELECT (SELECT min(next_attempt_at) FROM {command}
         WHERE device_id = %(device)s AND status = %(pending)s AND next_attempt_at > %(now)s),
       position.broker_ticket, {selected}
  FROM (SELECT 1) AS one
  LEFT JOIN (leased JOIN {position} AS position ON position.id = leased.position_id) ON true
 ORDER BY leased.next_attempt_at, leased.id
"""


@dataclass(frozen=True)
class Lease:
    """What one delivery leased (``commands``, each with its position's broker ticket and
    nothing else of the position), and the seconds until this device's next command in
    backoff becomes due (None: it has none)."""

    commands: list[CloseCommand]
    next_due_in: float | None


def close_commands_lease(*, device_id: int, limit: int, now: datetime | None = None) -> Lease:
    """Lease this device's due pending commands to it (at most ``limit``), audit each
    delivery, and say when its next command in backoff becomes due: one statement
    (committed when it returns, unless the caller holds a transaction), a round trip
    instead of five, since a woken long-poll pays it on the way to its EA.

    ``SKIP LOCKED`` lets two polls of one device run at once without either waiting or
    both getting the same command. The returned commands are as leased (delivered,
    attempts counted)."""
    now = now or timezone.now()
    fields = list(CloseCommand._meta.concrete_fields)
    by = Actor.system("ea-gateway")
    sql = _LEASE.format(
        command=CloseCommand._meta.db_table,
        position=OpenPosition._meta.db_table,
        audit=AuditEvent._meta.db_table,
        returning=", ".join(f"command.{field.column}" for field in fields),
        selected=", ".join(f"leased.{field.column}" for field in fields),
    )
    params = {
        "device": device_id,
        "pending": CloseCommandStatus.PENDING.value,
        "delivered": CloseCommandStatus.DELIVERED.value,
        "now": now,
        "lease_until": now + timedelta(seconds=settings.CLOSE_ACK_TIMEOUT_SECONDS),
        "limit": limit,
        "actor_kind": by.kind,
        "actor": by.name,
        "action": AuditAction.CLOSE_COMMAND_DELIVERED.value,
        "subject_type": CloseCommand._meta.model_name,
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    next_due = rows[0][0]
    columns = [field.get_col(CloseCommand._meta.db_table) for field in fields]
    converters = [
        (index, [*connection.ops.get_db_converters(column), *column.get_db_converters(connection)], column)
        for index, column in enumerate(columns)
    ]
    commands = []
    for row in rows:
        if row[2] is None:  # the one row of nothing leased
            break
        values = list(row[2:])
        for index, functions, field in converters:
            for convert in functions:
                values[index] = convert(values[index], field, connection)
        command = CloseCommand.from_db(connection.alias, [field.attname for field in fields], values)
        command.position = OpenPosition.from_db(
            connection.alias, ["id", "broker_ticket"], [command.position_id, row[1]]
        )
        commands.append(command)
    return Lease(commands, None if next_due is None else (next_due - now).total_seconds())


def close_commands_deliver(*, device_id: int, limit: int, now: datetime | None = None) -> list[CloseCommand]:
    """The commands ``close_commands_lease`` leases."""
    return close_commands_lease(device_id=device_id, limit=limit, now=now).commands


def close_commands_next_due(*, device_id: int, after: datetime) -> float | None:
    """Seconds from ``after`` until this device's next pending command in backoff may be
    delivered, or None if it has none: how long "nothing to deliver" holds."""
    next_attempt_at = (
        CloseCommand.objects.filter(
            device_id=device_id, status=CloseCommandStatus.PENDING, next_attempt_at__gt=after
        )
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    return None if next_attempt_at is None else (next_attempt_at - after).total_seconds()


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


def _record_close_metrics(command: CloseCommand) -> None:
    method = metrics.close_method(command.reason)
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
            raise DomainError.not_found()
        position = position_lock(command.position_id)
        command = close_command_lock(command_id)

        if command.status in (CloseCommandStatus.EXECUTED, CloseCommandStatus.FAILED):
            if result.same_as(command.result):
                return command, False
            raise DomainError.conflict(f"This close command was already acknowledged as {command.status}.")
        if result.executed and result.closed_volume > position.remaining_volume:
            raise DomainError(
                "invalid",
                "closed_volume is larger than the position's open volume.",
                fields={"closed_volume": [f"at most {position.remaining_volume}"]},
            )

        # A late acknowledgement of a command given up (expired) after another close was
        # queued (the owner's, a guard's): what it reports is recorded, and the position
        # stays closing for the close now active.
        # (An active command is the only one of its position: no query for it.)
        superseded = (
            command.status not in ACTIVE_CLOSE_STATUSES
            and CloseCommand.objects.filter(
                position_id=position.pk, status__in=ACTIVE_CLOSE_STATUSES
            ).exists()
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
            _apply_close(
                position=position, command=command, result=result, now=now, by=by, superseded=superseded
            )
        elif position.status in (PositionStatus.CLOSING, PositionStatus.CLOSE_FAILED) and not superseded:
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
        _rejudge(position)
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
    *, position: OpenPosition, command: CloseCommand, result: CloseResult, now, by: Actor, superseded: bool
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
    total_pnl = (position.realized_pnl or Decimal(0)) + pnl
    fields: dict[str, Any] = {
        "remaining_volume": remaining,
        "realized_pnl": total_pnl,
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
        fields.update(status=PositionStatus.CLOSING if superseded else PositionStatus.OPEN)
    OpenPosition.objects.filter(pk=position.pk).update(**fields)
    # Room under the client's exposure limits (positions.exposure): held-back approvals may go.
    wake_clients([position.client_id])
    if not fully_closed and not superseded:
        _rejudge(position)
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
    position_close_notice(
        position=position,
        command=command,
        close_price=result.close_price,
        closed_volume=result.closed_volume,
        pnl=pnl,
        total_pnl=total_pnl,
        remaining_volume=remaining,
    )


def _rejudge(position: OpenPosition) -> None:
    """An open position again (part of it closed, or the close failed): its plan's standing
    orders (an exit, a partial still due) apply to it on the next sweep, queued now."""
    plans_mark_dirty(position.signal_id)
    sweep_instrument_soon(position.instrument.symbol)
