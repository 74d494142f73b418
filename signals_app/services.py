"""Writes for signals, approvals and clients. Each top-level service is atomic."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.expressions import RawSQL
from django.utils import timezone
from rest_framework import status

from core.errors import DomainError
from core.wake import wake_clients
from signals_app.choices import ApprovalStatus, AuditAction, DecidedBy, SignalStatus
from signals_app.events import Actor, audit, audit_many
from signals_app.hidden_levels import (
    ATR_TIMEFRAME_MINUTES,
    HiddenLevels,
    HiddenLevelsError,
    parse_hidden_levels,
)
from signals_app.level_sides import check_levels_against_entry
from signals_app.models import PLANS_VERSION_SEQUENCE, Approval, Client, Instrument, Signal
from signals_app.notify.messages import approvals_pending_notice
from signals_app.payload_guard import payload_problems

MAX_PAYLOAD_BYTES = 4096


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
    trailing = levels.trailing
    if trailing is not None and trailing.distance_atr is not None:
        # The bars it needs must be kept (CANDLE_RETENTION_DAYS), or the stop would never trail.
        needed_minutes = (trailing.atr_period + 1) * ATR_TIMEFRAME_MINUTES[trailing.atr_timeframe]
        if needed_minutes > settings.CANDLE_RETENTION_DAYS * 24 * 60:
            problems["owner_only.trailing.atr_period"] = (
                f"needs more {trailing.atr_timeframe} bars than the {settings.CANDLE_RETENTION_DAYS} days "
                "of history kept (CANDLE_RETENTION_DAYS)"
            )
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
    """Publish a draft and fan it out: one approval per active client. The draft → published
    compare-and-swap lets exactly one caller fan out; publishing again (or concurrently) creates
    nothing. Auto-approving clients get their approval already approved; the others are told."""
    now = timezone.now()
    claimed = Signal.objects.filter(pk=signal.pk, status=SignalStatus.DRAFT).update(
        status=SignalStatus.PUBLISHED, published_at=now, updated_at=now
    )
    signal.refresh_from_db()
    if claimed:
        instrument_plans_changed(signal.instrument_id)  # a new signal for sweeps to watch
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
    approvals_pending_notice(signal=signal, approvals=approvals)
    wake_clients(approval.client_id for approval in approvals if approval.decided_by)  # auto: EAs poll now
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


def instrument_plans_changed(instrument_id: int) -> None:
    """In the caller's transaction: what sweeps of the instrument watch changed (sweep
    workers keep decoded plans in memory; ``positions.plan_book``)."""
    Instrument.objects.filter(pk=instrument_id).update(
        plans_version=RawSQL("nextval(%s)", [PLANS_VERSION_SEQUENCE])
    )


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
    instrument_plans_changed(locked.instrument_id)
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
    wake_clients([approval.client_id] if approve else [])  # after the commit: its EAs poll now
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


def approvals_withdraw(*, signal_ids: list[int], why: str, by: Actor, skip_locked: bool = False) -> int:
    """Withdraw the signals' approvals not yet filled (pending or approved): the trade they
    would open is over. The poll stops offering them; a fill still reported for one is
    watched (the trade exists at the broker). With ``skip_locked``, an approval another
    transaction holds (a fill being recorded) is left to that transaction."""
    if not signal_ids:
        return 0
    with transaction.atomic():
        unfilled = list(
            Approval.objects.select_for_update(skip_locked=skip_locked)
            .filter(signal_id__in=signal_ids, status__in=[ApprovalStatus.PENDING, ApprovalStatus.APPROVED])
            .order_by("pk")
            .only("pk", "status")
        )
        Approval.objects.filter(pk__in=[approval.pk for approval in unfilled]).update(
            status=ApprovalStatus.WITHDRAWN, updated_at=timezone.now()
        )
        audit_many(
            by=by,
            action=AuditAction.APPROVAL_WITHDRAWN,
            subjects=unfilled,
            data_for=lambda approval: {"was": approval.status, "why": why},
        )
    return len(unfilled)


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
