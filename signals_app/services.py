"""Writes for signals, approvals and clients. Each top-level service is atomic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.db import transaction
from django.utils import timezone
from fernet_fields import EncryptedField
from rest_framework import status

from core.errors import DomainError
from signals_app.choices import ApprovalStatus, AuditAction, DecidedBy, SignalStatus
from signals_app.events import Actor, audit, audit_many
from signals_app.hidden_levels import (
    HiddenLevels,
    HiddenLevelsError,
    check_levels_against_entry,
    parse_hidden_levels,
    payload_problems,
)
from signals_app.models import Approval, Client, Instrument, Signal

MAX_PAYLOAD_BYTES = 4096
LEGACY_LEVEL_KEYS = {"sl": "sl", "tp": "tp", "stop_loss": "sl", "take_profit": "tp"}


def _invalid(fields: dict[str, str]) -> DomainError:
    return DomainError(
        "invalid_signal",
        "The signal is invalid; see fields.",
        fields={name: [message] for name, message in fields.items()},
    )


def signal_validate(
    *, side: str, entry_price: Decimal, payload: Any, owner_only: Any
) -> tuple[HiddenLevels, dict[str, Any]]:
    """Check a signal's levels and payload together; return the parsed levels and the payload."""
    try:
        levels = parse_hidden_levels(owner_only)
    except HiddenLevelsError as error:
        raise _invalid(
            {
                f"owner_only.{name}" if name != "owner_only" else name: message
                for name, message in error.errors.items()
            }
        ) from None
    problems = {
        f"owner_only.{name}": message
        for name, message in check_levels_against_entry(levels, side=side, entry_price=entry_price).items()
    }
    if payload is None:
        payload = {}
    payload_issues = payload_problems(payload, hidden_prices=levels.prices())
    if payload_issues:
        problems["payload"] = "; ".join(payload_issues)
    elif len(json.dumps(payload, default=str)) > MAX_PAYLOAD_BYTES:
        problems["payload"] = f"must be at most {MAX_PAYLOAD_BYTES} bytes of JSON"
    if problems:
        raise _invalid(problems)
    return levels, payload


def _instrument(symbol: str) -> Instrument:
    instrument = Instrument.objects.filter(symbol=symbol.strip().upper(), active=True).first()
    if instrument is None:
        raise _invalid({"instrument": f"unknown instrument {symbol[:20]!r}"})
    return instrument


@transaction.atomic
def signal_create(
    *,
    instrument: str,
    side: str,
    entry_price: Decimal,
    ttl_minutes: int,
    payload: dict[str, Any] | None,
    owner_only: dict[str, Any],
    by: Actor,
) -> Signal:
    levels, payload = signal_validate(
        side=side, entry_price=entry_price, payload=payload, owner_only=owner_only
    )
    signal = Signal.objects.create(
        instrument=_instrument(instrument),
        side=side,
        entry_price=entry_price,
        ttl_minutes=ttl_minutes,
        payload=payload,
        owner_only=levels.to_dict(),
        created_by_id=by.user_id,
    )
    audit(by=by, action=AuditAction.SIGNAL_CREATED, subject=signal, data={"status": signal.status})
    return signal


@transaction.atomic
def signal_submit(
    *,
    instrument: str,
    side: str,
    entry_price: Decimal,
    ttl_minutes: int,
    payload: dict[str, Any] | None,
    owner_only: dict[str, Any],
    publish: bool,
    by: Actor,
) -> Signal:
    """The strategy bot's call: create the signal and, unless told not to, publish it."""
    signal = signal_create(
        instrument=instrument,
        side=side,
        entry_price=entry_price,
        ttl_minutes=ttl_minutes,
        payload=payload,
        owner_only=owner_only,
        by=by,
    )
    if publish:
        signal = signal_publish(signal=signal, by=by).signal
    return signal


@dataclass(frozen=True)
class PublishResult:
    signal: Signal
    approvals_created: int
    already_published: bool


@transaction.atomic
def signal_publish(*, signal: Signal, by: Actor) -> PublishResult:
    """Publish a draft and fan it out: one approval per active client.

    The draft → published compare-and-swap lets exactly one caller fan out;
    publishing again (or concurrently) creates nothing. Auto-approving clients
    get their approval already approved.
    """
    now = timezone.now()
    claimed = Signal.objects.filter(pk=signal.pk, status=SignalStatus.DRAFT).update(
        status=SignalStatus.PUBLISHED, published_at=now, updated_at=now
    )
    signal.refresh_from_db()
    if claimed == 0:
        if signal.status != SignalStatus.PUBLISHED:
            raise DomainError(
                "signal_not_publishable",
                f"A {signal.status} signal cannot be published.",
                status_code=status.HTTP_409_CONFLICT,
            )
        return PublishResult(signal, 0, already_published=True)

    expires_at = now + timedelta(minutes=signal.ttl_minutes)
    approvals = [
        Approval(
            signal=signal,
            client=client,
            volume=client.default_volume,
            expires_at=expires_at,
            **(
                {"status": ApprovalStatus.APPROVED, "decided_by": DecidedBy.AUTO, "decided_at": now}
                if client.auto_approve
                else {}
            ),
        )
        for client in Client.objects.filter(active=True).order_by("pk")
    ]
    Approval.objects.bulk_create(approvals)
    audit(by=by, action=AuditAction.SIGNAL_PUBLISHED, subject=signal, data={"approvals": len(approvals)})
    audit_many(
        by=by,
        action=AuditAction.APPROVAL_CREATED,
        subjects=approvals,
        data_for=lambda approval: {
            "signal_id": signal.pk,
            "client_id": approval.client_id,
            "status": approval.status,
            "volume": str(approval.volume),
        },
    )
    return PublishResult(signal, len(approvals), already_published=False)


@transaction.atomic
def signal_update_hidden_levels(*, signal: Signal, owner_only: dict[str, Any], by: Actor) -> Signal:
    """Move the owner's levels; the audit keeps old and new, encrypted."""
    locked = Signal.objects.select_for_update().get(pk=signal.pk)
    levels, _ = signal_validate(
        side=locked.side, entry_price=locked.entry_price, payload=locked.payload, owner_only=owner_only
    )
    new_levels = levels.to_dict()
    if new_levels == locked.owner_only:
        return locked
    old_levels = locked.owner_only
    Signal.objects.filter(pk=locked.pk).update(owner_only=new_levels, updated_at=timezone.now())
    audit(
        by=by,
        action=AuditAction.SIGNAL_LEVELS_CHANGED,
        subject=locked,
        data={
            "changed": sorted(k for k in {*old_levels, *new_levels} if old_levels.get(k) != new_levels.get(k))
        },
        secret_data={"old": old_levels, "new": new_levels},
    )
    locked.refresh_from_db()
    return locked


_DECISIONS = {
    True: (ApprovalStatus.APPROVED, AuditAction.APPROVAL_APPROVED),
    False: (ApprovalStatus.DECLINED, AuditAction.APPROVAL_DECLINED),
}


@transaction.atomic
def approval_decide(*, approval: Approval, approve: bool, decided_by: str, by: Actor) -> Approval:
    """Approve or decline a pending, unexpired approval (guarded pending → decided)."""
    new_status, action = _DECISIONS[approve]
    now = timezone.now()
    changed = Approval.objects.filter(
        pk=approval.pk, status=ApprovalStatus.PENDING, expires_at__gt=now
    ).update(
        status=new_status,
        decided_by=decided_by,
        decided_by_user_id=by.user_id,
        decided_at=now,
        updated_at=now,
    )
    approval.refresh_from_db()
    if changed != 1:
        if approval.status == new_status:
            return approval  # the same decision again: nothing to do
        raise DomainError(
            "approval_not_pending",
            f"This approval is {approval.status}; only a pending, unexpired approval can be decided.",
            status_code=status.HTTP_409_CONFLICT,
        )
    audit(by=by, action=action, subject=approval, data={"decided_by": decided_by})
    return approval


def approvals_expire(*, now: datetime | None = None, batch_size: int = 1000) -> int:
    """Expire pending and approved approvals past their TTL; return how many."""
    now = now or timezone.now()
    expired = 0
    by = Actor.system("approval-expiry")
    while True:
        with transaction.atomic():
            due = list(
                Approval.objects.select_for_update(skip_locked=True)
                .filter(status__in=[ApprovalStatus.PENDING, ApprovalStatus.APPROVED], expires_at__lte=now)
                .order_by("pk")
                .only("pk", "status")[:batch_size]
            )
            if not due:
                return expired
            Approval.objects.filter(pk__in=[approval.pk for approval in due]).update(
                status=ApprovalStatus.EXPIRED, updated_at=now
            )
            audit_many(
                by=by,
                action=AuditAction.APPROVAL_EXPIRED,
                subjects=due,
                data_for=lambda approval: {"from": approval.status},
            )
            expired += len(due)


@transaction.atomic
def client_ensure(
    *,
    name: str,
    by: Actor,
    auto_approve: bool | None = None,
    default_volume: Decimal | None = None,
    telegram_chat_id: str | None = None,
) -> tuple[Client, bool]:
    """Create the client if none has this name; apply the given settings either way."""
    settings_given = {
        key: value
        for key, value in {
            "auto_approve": auto_approve,
            "default_volume": default_volume,
            "telegram_chat_id": telegram_chat_id,
        }.items()
        if value is not None
    }
    client, created = Client.objects.get_or_create(name=name.strip(), defaults=settings_given)
    if created:
        audit(by=by, action=AuditAction.CLIENT_CREATED, subject=client, data={"name": client.name})
    elif settings_given:
        Client.objects.filter(pk=client.pk).update(**settings_given)
        client.refresh_from_db()
    return client, created


@dataclass(frozen=True)
class BackfillChange:
    signal_id: int
    moved_keys: list[str]
    conflict: str = ""


def hidden_levels_backfill(*, dry_run: bool, by: Actor) -> list[BackfillChange]:
    """Move legacy level keys (sl, tp, stop_loss, take_profit) out of payloads.

    Idempotent: a signal whose payload holds no such key is left alone. A
    legacy value that disagrees with a level already in ``owner_only`` is
    reported and left for the owner to settle, never overwritten.
    """
    changes: list[BackfillChange] = []
    candidates = (
        Signal.objects.filter(payload__has_any_keys=list(LEGACY_LEVEL_KEYS))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for signal_id in candidates.iterator():
        with transaction.atomic():
            signal = Signal.objects.select_for_update().get(pk=signal_id)
            change = _backfill_one(signal, dry_run=dry_run, by=by)
            if change:
                changes.append(change)
    return changes


def _backfill_one(signal: Signal, *, dry_run: bool, by: Actor) -> BackfillChange | None:
    moved = sorted(key for key in LEGACY_LEVEL_KEYS if key in signal.payload)
    if not moved:
        return None
    levels = dict(signal.owner_only or {})
    for key in moved:
        target = LEGACY_LEVEL_KEYS[key]
        value = str(signal.payload[key])
        if target in levels and Decimal(str(levels[target])) != Decimal(value):
            return BackfillChange(
                signal.pk, moved, conflict=f"payload {key} differs from owner_only {target}"
            )
        levels.setdefault(target, value)
    payload = {key: value for key, value in signal.payload.items() if key not in LEGACY_LEVEL_KEYS}
    try:
        parsed, payload = signal_validate(
            side=signal.side, entry_price=signal.entry_price, payload=payload, owner_only=levels
        )
    except DomainError as error:
        return BackfillChange(signal.pk, moved, conflict=f"levels invalid after the move: {error.fields}")
    if not dry_run:
        Signal.objects.filter(pk=signal.pk).update(
            payload=payload, owner_only=parsed.to_dict(), updated_at=timezone.now()
        )
        audit(
            by=by,
            action=AuditAction.SIGNAL_LEVELS_BACKFILLED,
            subject=signal,
            data={"moved_keys": moved},
            secret_data={"old": signal.owner_only, "new": parsed.to_dict()},
        )
    return BackfillChange(signal.pk, moved)


def encrypted_fields() -> list[tuple[type, str]]:
    """Every (model, field name) stored Fernet-encrypted, across all apps."""
    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedField)
    ]


def encrypted_values_reencrypt(*, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every encrypted value under the first (newest) key of FERNET_KEYS.

    Reading decrypts with any configured key; writing encrypts with the first.
    Rows are locked a batch at a time, so the command runs beside live traffic.
    """
    counts: dict[str, int] = {}
    for model, field_name in encrypted_fields():
        label = f"{model._meta.label}.{field_name}"
        counts[label] = 0
        last_pk = 0
        while True:
            with transaction.atomic():
                rows = list(
                    model.objects.select_for_update()
                    .filter(pk__gt=last_pk)
                    .exclude(**{f"{field_name}__isnull": True})
                    .order_by("pk")
                    .values_list("pk", field_name)[:batch_size]
                )
                for pk, value in rows:
                    model.objects.filter(pk=pk).update(**{field_name: value})
            if not rows:
                break
            counts[label] += len(rows)
            last_pk = rows[-1][0]
    return counts
