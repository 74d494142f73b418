"""A client's guard trips, stays tripped, and is re-armed by the owner.

1. ``client_guard_trip`` (a heartbeat whose accepted equity breached a limit): a
   guarded update ``armed -> tripped``, so however many heartbeats breach at once one
   of them trips; that one audits and alerts. Every caller then claims a close of each
   live position of the client through the one close claim (``positions.closes``,
   ``Claim.CLIENT_POSITIONS``, reason ``drawdown``): the database makes it one each.
2. While tripped the client's EAs get no approvals (``ea_gateway.selectors``), and
   whatever opens later is closed too (``guards_close_tripped``): a fill reported after
   the trip (``positions.fills``), a position a failed partial close reopened. Called by
   the fill itself, by the client's heartbeats and by the periodic check, so a fill that
   raced the trip's claim is closed within GUARD_CHECK_INTERVAL_SECONDS.
3. ``client_guard_rearm`` (the owner): ``tripped -> armed``; each account of the client
   is measured again from its last equity (peak and day start), and its EAs are woken
   for the approvals still open to them.
4. ``guards_check`` (periodic): accounts with live positions and no heartbeat for
   GUARD_EQUITY_STALE_SECONDS raise "equity stale" (never a close), and the tripped
   clients' open positions are claimed (step 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from core.errors import DomainError
from core.wake import wake_clients
from positions.alerts import alert_raise
from positions.choices import AlertKind, CloseReason, GuardState, PositionStatus
from positions.closes import Claim, CloseRequest, closes_claim
from positions.guards.limits import guard_day, stale_window
from positions.guards.rules import Breach
from positions.models import ClientGuard, GuardAccount, OpenPosition
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit
from signals_app.models import Client

GUARD_ACTOR = Actor.system("risk guard")
CLOSE_NOTE = "the client's risk guard tripped"  # never the limit or the equity
LIVE = (PositionStatus.OPEN, PositionStatus.CLOSING)


def client_guard_trip(*, client_id: int, breach: Breach, device_id: int, device_name: str) -> bool:
    """Trip the client's guard if armed and close its live positions; True if this call
    tripped it. Inside the caller's transaction, which holds the breaching account's row."""
    now = timezone.now()
    reason = f"{device_name}: {breach.describe()}"
    tripped = ClientGuard.objects.filter(client_id=client_id, state=GuardState.ARMED).update(
        state=GuardState.TRIPPED, tripped_at=now, tripped_reason=reason[:200], tripped_device_id=device_id
    )
    if not tripped:
        guards_close_tripped(client_ids=[client_id])
        return False
    commands = closes_claim(
        claim=Claim.CLIENT_POSITIONS,
        requests=[CloseRequest(key=client_id, reason=CloseReason.DRAWDOWN, note=CLOSE_NOTE)],
        by=GUARD_ACTOR,
    )
    guard = ClientGuard.objects.select_related("client").get(client_id=client_id)
    audit(
        by=GUARD_ACTOR,
        action=AuditAction.CLIENT_GUARD_TRIPPED,
        subject=guard,
        data={
            "client_id": client_id,
            "device_id": device_id,
            "limit": breach.limit,
            "percent": str(breach.percent.quantize(Decimal("0.01"))),
            "limit_percent": str(breach.limit_percent),
            "close_commands": sorted(commands.values()),
            "approvals": "held back until re-armed",
        },
    )
    alert_raise(
        kind=AlertKind.GUARD_TRIPPED,
        dedupe_key=f"guard_tripped:{client_id}",
        message=(
            f"Client {guard.client.name}'s risk guard tripped ({reason}): {len(commands)} position(s) "
            "closing, no new trades until it is re-armed in the console."
        ),
        device_id=device_id,
    )
    return True


def guards_close_tripped(*, client_ids: list[int]) -> dict[int, int]:
    """Claim a close of each open position of those clients whose guard is tripped;
    return {position id: close command id} for those queued."""
    tripped = list(
        ClientGuard.objects.filter(client_id__in=client_ids, state=GuardState.TRIPPED).values_list(
            "client_id", flat=True
        )
    )
    if not tripped:
        return {}
    return closes_claim(
        claim=Claim.CLIENT_OPEN_POSITIONS,
        requests=[
            CloseRequest(key=client_id, reason=CloseReason.DRAWDOWN, note=CLOSE_NOTE) for client_id in tripped
        ],
        by=GUARD_ACTOR,
    )


def client_guard_rearm(*, client: Client, by: Actor) -> ClientGuard:
    """The owner re-arms a tripped guard: approvals reach the client's EAs again, and its
    accounts are judged from their last equity (it becomes their peak and day start)."""
    now = timezone.now()
    with transaction.atomic():
        # Lock order (positions.locks): the accounts, then the guard.
        accounts = list(
            GuardAccount.objects.select_for_update().filter(client_id=client.pk).order_by("device_id")
        )
        changed = ClientGuard.objects.filter(client_id=client.pk, state=GuardState.TRIPPED).update(
            state=GuardState.ARMED, rearmed_at=now, rearmed_by=by.name[:150]
        )
        if changed != 1:
            raise DomainError.conflict(f"The risk guard of client {client.name} is not tripped.")
        day = guard_day(now)
        for account in accounts:
            GuardAccount.objects.filter(pk=account.pk).update(
                peak_equity=account.last_equity,
                day=day,
                day_start_equity=account.last_equity,
                held_equity=None,
                held_at=None,
            )
        guard = ClientGuard.objects.get(client_id=client.pk)
        audit(
            by=by,
            action=AuditAction.CLIENT_GUARD_REARMED,
            subject=guard,
            data={
                "client_id": client.pk,
                "tripped_at": guard.tripped_at.isoformat() if guard.tripped_at else None,
                "tripped_reason": guard.tripped_reason,
                "accounts": {str(account.device_id): str(account.last_equity) for account in accounts},
            },
        )
        wake_clients([client.pk])  # after the commit: their waiting polls see the approvals
    return guard


@dataclass(frozen=True)
class CheckReport:
    stale_devices: list[int]
    closes: int


def guards_check(*, now: datetime | None = None) -> CheckReport:
    """The periodic check (step 4): stale equity alerts, and the tripped clients' closes."""
    now = now or timezone.now()
    stale_before = now - stale_window()
    live = OpenPosition.objects.filter(status__in=LIVE)
    stale = list(
        GuardAccount.objects.filter(
            last_at__lt=stale_before, device__active=True, device__revoked_at__isnull=True
        )
        .filter(Exists(live.filter(device_id=OuterRef("device_id"))))
        .select_related("client")
        .order_by("device_id")
    )
    for account in stale:
        alert_raise(
            kind=AlertKind.EQUITY_STALE,
            dedupe_key=f"equity_stale:{account.device_id}",
            message=(
                f"Client {account.client.name}: no equity from device #{account.device_id} since "
                f"{account.last_at:%Y-%m-%d %H:%M:%S} UTC while it has live positions; its risk guard "
                "cannot judge it (no close is made on stale equity)."
            ),
            device_id=account.device_id,
        )
    # Live positions on a device that never sent a heartbeat: no equity at all.
    silent = list(
        live.filter(opened_at__lt=stale_before, device__active=True, device__revoked_at__isnull=True)
        .exclude(device_id__in=GuardAccount.objects.values("device_id"))
        .values_list("device_id", "client__name")
        .distinct()
        .order_by("device_id")
    )
    for device_id, client_name in silent:
        alert_raise(
            kind=AlertKind.EQUITY_STALE,
            dedupe_key=f"equity_stale:{device_id}",
            message=(
                f"Client {client_name}: device #{device_id} has live positions and has never reported "
                "its equity; its risk guard cannot judge it."
            ),
            device_id=device_id,
        )
    tripped = list(
        ClientGuard.objects.filter(state=GuardState.TRIPPED)
        .filter(Exists(live.filter(client_id=OuterRef("client_id"), status=PositionStatus.OPEN)))
        .values_list("client_id", flat=True)
    )
    closes = guards_close_tripped(client_ids=tripped) if tripped else {}
    return CheckReport(
        stale_devices=sorted({account.device_id for account in stale} | {device for device, _ in silent}),
        closes=len(closes),
    )
