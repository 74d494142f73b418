"""Fills: an EA's report on an approval becomes a watched position; a heartbeat's
ticket list finds positions closed outside the server (reconciliation).

Lock order (``positions.locks``): the approval, then positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from core.errors import DomainError
from core.wake import wake_clients
from positions.alerts import alert_raise
from positions.choices import AlertKind, PositionStatus
from positions.exposure import exposure_check_fill
from positions.guards.trip import guards_close_tripped
from positions.locks import approval_lock, positions_lock
from positions.models import OpenPosition
from positions.notices import position_opened_notice
from positions.plan_store import plans_mark_dirty
from positions.quotes import sweep_instrument_soon
from signals_app.choices import ApprovalStatus, AuditAction
from signals_app.events import Actor, audit, audit_many
from signals_app.models import Approval


@dataclass(frozen=True)
class Fill:
    broker_ticket: str
    entry_price: Decimal
    volume: Decimal


@dataclass(frozen=True)
class FillReport:
    """What a device says became of an approval: ``fill`` if the trade was placed,
    None (with ``error``) if it failed."""

    approval_id: int
    client_id: int
    device_id: int
    fill: Fill | None
    error: str = ""


@dataclass(frozen=True)
class AckResult:
    approval_id: int
    placed: bool
    position_id: int | None = None


# A fill may land just as the approval expires, or just after the strategy exited and
# withdrew it: the trade exists at the broker, so the server must still watch it (and
# an ended plan closes it at once).
FILLABLE = (ApprovalStatus.APPROVED, ApprovalStatus.EXPIRED, ApprovalStatus.WITHDRAWN)


def approval_fill_report(*, report: FillReport, by: Actor) -> AckResult:
    """Apply a device's report on an approval. A refused fill alerts the owner: a trade
    exists at the broker that the server will not watch."""
    try:
        return _approval_fill_report(report=report, by=by)
    except DomainError as refused:
        if report.fill is not None and refused.status_code in (400, 409):
            _approval_unmonitored(report=report, why=refused.message, by=by)
            alert_raise(
                kind=AlertKind.FILL_REFUSED,
                dedupe_key=f"fill_refused:{report.device_id}:{report.approval_id}:{report.fill.broker_ticket}",
                message=(
                    f"Device {by.name} reported ticket {report.fill.broker_ticket} for approval "
                    f"#{report.approval_id}; refused ({refused.message}). That trade is not monitored."
                ),
                device_id=report.device_id,
            )
        raise


def _approval_unmonitored(*, report: FillReport, why: str, by: Actor) -> None:
    """A fill was refused for an approval not filled yet: it was placed at the broker, so it
    must be offered to no EA again (another of the client's accounts would place it a
    second time). Marked, and audited, once."""
    if report.fill is None:
        return
    with transaction.atomic():
        approval = approval_lock(approval_id=report.approval_id, client_id=report.client_id)
        if approval is None or approval.status not in FILLABLE:
            return
        if OpenPosition.objects.filter(approval=approval).exists():
            return  # filled: the position is watched, the refused report was another one
        Approval.objects.filter(pk=approval.pk).update(status=ApprovalStatus.UNMONITORED)
        audit(
            by=by,
            action=AuditAction.APPROVAL_UNMONITORED,
            subject=approval,
            data={"device_id": report.device_id, "broker_ticket": report.fill.broker_ticket, "why": why},
        )


def _approval_fill_report(*, report: FillReport, by: Actor) -> AckResult:
    """Idempotent on the approval: the same report again returns the same result; a
    different one is a 409 and changes nothing. The approval's row lock makes
    concurrent copies of one report wait for each other."""
    with transaction.atomic():
        approval = approval_lock(approval_id=report.approval_id, client_id=report.client_id)
        if approval is None:
            raise DomainError.not_found()
        position = OpenPosition.objects.filter(approval=approval).first()
        if report.fill is None:
            return _fill_failed(approval=approval, position=position, error=report.error, by=by)
        if position is not None:
            if not _same_fill(position, device_id=report.device_id, fill=report.fill):
                raise DomainError.conflict(
                    "This approval was already filled with another ticket, price or volume."
                )
            return AckResult(approval.pk, placed=True, position_id=position.pk)
        if approval.status not in FILLABLE:
            raise DomainError.conflict(f"This approval is {approval.status}; it cannot be filled.")
        if report.fill.volume > approval.volume:
            raise DomainError(
                "invalid",
                "The filled volume is larger than approved.",
                fields={"volume": [f"at most {approval.volume}"]},
            )
        position = position_open(approval=approval, device_id=report.device_id, fill=report.fill, by=by)
        exposure_check_fill(position=position)
        # A trade placed from an approval fetched before the client's risk guard tripped: the
        # guard closes it at once (positions.guards.trip, step 2).
        guards_close_tripped(client_ids=[approval.client_id])
        # Judged at once against the plan as it stands: a fill past a level, or after the
        # plan ended or hit a partial, gets its close without waiting for the next quote.
        plans_mark_dirty(approval.signal_id)
        sweep_instrument_soon(approval.signal.instrument.symbol)
        if not Approval.objects.filter(pk=approval.pk, status=approval.status).update(
            status=ApprovalStatus.EXECUTED, updated_at=timezone.now()
        ):
            raise RuntimeError(f"approval #{approval.pk} changed under its row lock")
        audit(by=by, action=AuditAction.APPROVAL_FILLED, subject=approval, data={"position_id": position.pk})
        return AckResult(approval.pk, placed=True, position_id=position.pk)


def _same_fill(position: OpenPosition, *, device_id: int, fill: Fill) -> bool:
    return (
        position.device_id == device_id
        and position.broker_ticket == fill.broker_ticket
        and position.entry_price == fill.entry_price
        and position.volume == fill.volume
    )


def _fill_failed(*, approval: Approval, position: OpenPosition | None, error: str, by: Actor) -> AckResult:
    if approval.status == ApprovalStatus.FAILED:
        return AckResult(approval.pk, placed=False)
    if approval.status not in FILLABLE or position is not None:
        raise DomainError.conflict(f"This approval is {approval.status}; it cannot be reported as failed.")
    if not Approval.objects.filter(pk=approval.pk, status=approval.status).update(
        status=ApprovalStatus.FAILED, updated_at=timezone.now()
    ):
        raise RuntimeError(f"approval #{approval.pk} changed under its row lock")
    audit(by=by, action=AuditAction.APPROVAL_FILL_FAILED, subject=approval, data={"error": error[:500]})
    return AckResult(approval.pk, placed=False)


def position_open(*, approval: Approval, device_id: int, fill: Fill, by: Actor) -> OpenPosition:
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
                entry_price=fill.entry_price,
                volume=fill.volume,
                remaining_volume=fill.volume,
                broker_ticket=fill.broker_ticket,
            )
    except IntegrityError:
        raise DomainError.conflict("This broker ticket already belongs to another position.") from None
    audit(
        by=by,
        action=AuditAction.POSITION_OPENED,
        subject=position,
        data={
            "approval_id": approval.pk,
            "signal_id": signal.pk,
            "broker_ticket": fill.broker_ticket,
            "entry_price": str(fill.entry_price),
            "volume": str(fill.volume),
        },
    )
    position_opened_notice(position=position)
    return position


# One statement: a ticket reported again is no longer missing, one not reported is missing
# from now (unless it was already), and the positions missing since the cutoff (as they
# were before this statement: the rows it marks are never among them) are returned.
_MARK_MISSING = """
WITH marked AS (
    UPDATE {table}
       SET ticket_missing_since = CASE WHEN broker_ticket = ANY(%(tickets)s::text[]) THEN NULL
                                       ELSE %(now)s END
     WHERE device_id = %(device)s AND status = %(open)s
       AND (broker_ticket = ANY(%(tickets)s::text[])) = (ticket_missing_since IS NOT NULL)
)
SELECT id FROM {table}
 WHERE device_id = %(device)s AND status = %(open)s AND NOT broker_ticket = ANY(%(tickets)s::text[])
   AND opened_at < %(cutoff)s AND ticket_missing_since <= %(cutoff)s
"""


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
    cutoff = now - timedelta(seconds=settings.RECONCILE_GRACE_SECONDS)
    with connection.cursor() as cursor:
        cursor.execute(
            _MARK_MISSING.format(table=OpenPosition._meta.db_table),
            {
                "device": device_id,
                "open": PositionStatus.OPEN.value,
                "tickets": sorted(open_tickets),
                "now": now,
                "cutoff": cutoff,
            },
        )
        candidates = [row[0] for row in cursor.fetchall()]
    if not candidates:  # an EA's every heartbeat but the rare one: one statement, no transaction
        return 0
    with transaction.atomic():
        vanished = positions_lock(
            candidates, skip_locked=True, status=PositionStatus.OPEN, ticket_missing_since__lte=cutoff
        )
        if not vanished:
            return 0
        # Room under the client's exposure limits (positions.exposure): held-back approvals may go.
        wake_clients({position.client_id for position in vanished})
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
