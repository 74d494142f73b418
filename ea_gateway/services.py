"""Writes on behalf of devices: key management, fills, heartbeats, quotes."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework import status

from core.errors import DomainError
from ea_gateway.choices import DeviceRole
from ea_gateway.models import Device
from positions.alerts import alert_raise
from positions.choices import AlertKind
from positions.models import OpenPosition
from positions.services import position_open, positions_reconcile
from signals_app.choices import ApprovalStatus, AuditAction
from signals_app.events import Actor, audit
from signals_app.models import Approval, Client

KEY_PREFIX = "vsk_"


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def device_actor(device: Device) -> Actor:
    return Actor(kind="device", name=device.key_id)


@dataclass(frozen=True)
class IssuedCredentials:
    """A device and its secret in the clear: shown once, never stored like this."""

    device: Device
    secret: str


@transaction.atomic
def device_create(*, name: str, role: str, client: Client | None, by: Actor) -> IssuedCredentials:
    if (role == DeviceRole.EA) != (client is not None):
        raise DomainError("invalid", "An EA device belongs to a client; a feed device to none.")
    secret = _new_secret()
    device = Device.objects.create(
        name=name, role=role, client=client, key_id=KEY_PREFIX + secrets.token_urlsafe(15), secret=secret
    )
    audit(
        by=by, action=AuditAction.DEVICE_CREATED, subject=device, data={"role": role, "key_id": device.key_id}
    )
    return IssuedCredentials(device, secret)


@transaction.atomic
def device_rotate_secret(*, device: Device, by: Actor) -> IssuedCredentials:
    """A new secret for the same key id; the old one stops working at once."""
    secret = _new_secret()
    now = timezone.now()
    changed = Device.objects.filter(pk=device.pk, revoked_at__isnull=True).update(
        secret=secret, secret_rotated_at=now
    )
    if changed != 1:
        raise DomainError("device_revoked", "A revoked device cannot get a new secret.", status_code=409)
    audit(by=by, action=AuditAction.DEVICE_SECRET_ROTATED, subject=device, data={"key_id": device.key_id})
    device.refresh_from_db()
    return IssuedCredentials(device, secret)


@transaction.atomic
def device_revoke(*, device: Device, by: Actor) -> Device:
    changed = Device.objects.filter(pk=device.pk, revoked_at__isnull=True).update(
        active=False, revoked_at=timezone.now()
    )
    if changed == 1:
        audit(by=by, action=AuditAction.DEVICE_REVOKED, subject=device, data={"key_id": device.key_id})
    device.refresh_from_db()
    return device


def _not_found() -> DomainError:
    return DomainError("not_found", "Not found.", status_code=status.HTTP_404_NOT_FOUND)


def _conflict(message: str) -> DomainError:
    return DomainError("conflict", message, status_code=status.HTTP_409_CONFLICT)


@dataclass(frozen=True)
class Fill:
    broker_ticket: str
    entry_price: Decimal
    volume: Decimal


@dataclass(frozen=True)
class AckResult:
    approval_id: int
    placed: bool
    position_id: int | None = None


# A fill may land just as the approval expires: the trade exists at the broker,
# so the server must still watch it.
FILLABLE = (ApprovalStatus.APPROVED, ApprovalStatus.EXPIRED)


def approval_ack(*, device: Device, approval_id: int, fill: Fill | None, error: str = "") -> AckResult:
    try:
        return _approval_ack(device=device, approval_id=approval_id, fill=fill, error=error)
    except DomainError as refused:
        if fill is not None and refused.code != "not_found":
            # A trade exists at the broker that the server will not watch: the owner must know.
            alert_raise(
                kind=AlertKind.FILL_REFUSED,
                dedupe_key=f"fill_refused:{device.pk}:{approval_id}:{fill.broker_ticket}",
                message=(
                    f"Device {device.key_id} reported ticket {fill.broker_ticket} for approval "
                    f"#{approval_id}; refused ({refused.message}). That trade is not monitored."
                ),
                device_id=device.pk,
            )
        raise


def _approval_ack(*, device: Device, approval_id: int, fill: Fill | None, error: str) -> AckResult:
    """The EA reports what became of an approval: a fill (``fill``) or a failure.

    Idempotent on the approval: the same report again returns the same result;
    a different one is a 409 and changes nothing. The approval's row lock makes
    concurrent copies of one ack wait for each other.
    """
    by = device_actor(device)
    with transaction.atomic():
        approval = (
            Approval.objects.select_for_update(of=("self",))
            .select_related("signal")
            .filter(pk=approval_id, client_id=device.client_id)
            .first()
        )
        if approval is None:
            raise _not_found()
        position = OpenPosition.objects.filter(approval=approval).first()

        if fill is None:
            if approval.status == ApprovalStatus.FAILED:
                return AckResult(approval.pk, placed=False)
            if approval.status not in FILLABLE or position is not None:
                raise _conflict(f"This approval is {approval.status}; it cannot be reported as failed.")
            Approval.objects.filter(pk=approval.pk, status=approval.status).update(
                status=ApprovalStatus.FAILED, updated_at=timezone.now()
            )
            audit(
                by=by, action=AuditAction.APPROVAL_FILL_FAILED, subject=approval, data={"error": error[:500]}
            )
            return AckResult(approval.pk, placed=False)

        if position is not None:
            same = (
                position.device_id == device.pk
                and position.broker_ticket == fill.broker_ticket
                and position.entry_price == fill.entry_price
                and position.volume == fill.volume
            )
            if not same:
                raise _conflict("This approval was already filled with another ticket, price or volume.")
            return AckResult(approval.pk, placed=True, position_id=position.pk)
        if approval.status not in FILLABLE:
            raise _conflict(f"This approval is {approval.status}; it cannot be filled.")
        if fill.volume > approval.volume:
            raise DomainError(
                "invalid",
                "The filled volume is larger than approved.",
                fields={"volume": [f"at most {approval.volume}"]},
            )
        position = position_open(
            approval=approval,
            device_id=device.pk,
            broker_ticket=fill.broker_ticket,
            entry_price=fill.entry_price,
            volume=fill.volume,
            by=by,
        )
        Approval.objects.filter(pk=approval.pk).update(
            status=ApprovalStatus.EXECUTED, updated_at=timezone.now()
        )
        audit(by=by, action=AuditAction.APPROVAL_FILLED, subject=approval, data={"position_id": position.pk})
        return AckResult(approval.pk, placed=True, position_id=position.pk)


def device_heartbeat(*, device: Device, balance: Decimal, equity: Decimal, open_tickets: list[str]) -> int:
    """Record the account snapshot; positions whose ticket vanished are closed externally."""
    now = timezone.now()
    snapshot: dict[str, Any] = {
        "balance": str(balance),
        "equity": str(equity),
        "open_tickets": open_tickets,
        "at": now.isoformat(),
    }
    Device.objects.filter(pk=device.pk).update(last_account=snapshot, last_seen_at=now)
    return positions_reconcile(
        device_id=device.pk, open_tickets=set(open_tickets), by=device_actor(device), now=now
    )
