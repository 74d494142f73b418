"""The clients' half of the guards' status (``GET /api/v1/guards/status``): plain data.

Each account (an active EA device that has sent equity) with its figures as the guard
judges them; the client's equity and peak are its accounts' sums, its drawdown and
daily loss its worst account's (each account is judged on its own). State: ``tripped``,
else ``stale`` when an account with live positions has had no equity for
GUARD_EQUITY_STALE_SECONDS (or an EA with live positions never reported any), else
``armed``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db.models import Count
from django.utils import timezone

from positions.choices import GuardState, PositionStatus
from positions.guards.limits import guard_day, limits_effective, stale_window
from positions.guards.rules import Account, daily_loss_percent, drawdown_percent
from positions.models import ClientGuard, GuardAccount, OpenPosition
from signals_app.models import Client

STALE = "stale"
CENT = Decimal("0.01")


def _percent(value: Decimal) -> Decimal:
    return value.quantize(CENT)


def guards_status_clients(*, now: datetime | None = None) -> list[dict[str, Any]]:
    now = now or timezone.now()
    day = guard_day(now)
    stale_before = now - stale_window()
    guards = {guard.client_id: guard for guard in ClientGuard.objects.all()}
    live = dict(
        OpenPosition.objects.filter(status__in=[PositionStatus.OPEN, PositionStatus.CLOSING])
        .values_list("device_id")
        .annotate(count=Count("id"))
        .order_by()
    )
    # Live positions on an active device that never reported its equity: nothing to judge.
    silent = set(
        OpenPosition.objects.filter(
            status__in=[PositionStatus.OPEN, PositionStatus.CLOSING],
            opened_at__lt=stale_before,
            device__active=True,
            device__revoked_at__isnull=True,
        )
        .exclude(device_id__in=GuardAccount.objects.values("device_id"))
        .values_list("client_id", flat=True)
        .distinct()
        .order_by()
    )
    accounts = defaultdict(list)
    for row in GuardAccount.objects.filter(device__active=True, device__revoked_at__isnull=True).order_by(
        "device_id"
    ):
        account = Account(
            peak=row.peak_equity,
            day=row.day,
            day_start=row.day_start_equity,
            last=row.last_equity,
            last_at=row.last_at,
        )
        accounts[row.client_id].append(
            {
                "device_id": row.device_id,
                "equity": row.last_equity,
                "peak": row.peak_equity,
                "day_start_equity": row.day_start_equity if row.day == day else None,
                "drawdown_percent": _percent(drawdown_percent(account)),
                "daily_loss_percent": _percent(daily_loss_percent(account, day=day)),
                "equity_at": row.last_at,
                "jump_held": row.held_equity is not None,
                "live_positions": live.get(row.device_id, 0),
                "stale": row.last_at < stale_before and live.get(row.device_id, 0) > 0,
            }
        )
    clients = []
    for client in Client.objects.order_by("name"):
        guard = guards.get(client.pk)
        own = accounts.get(client.pk, [])
        limits = limits_effective(
            drawdown_limit_percent=client.drawdown_limit_percent,
            daily_loss_limit_percent=client.daily_loss_limit_percent,
        )
        if guard is not None and guard.state == GuardState.TRIPPED:
            state = GuardState.TRIPPED.value
        elif client.pk in silent or any(account["stale"] for account in own):
            state = STALE
        else:
            state = GuardState.ARMED.value
        clients.append(
            {
                "client_id": client.pk,
                "client": client.name,
                "state": state,
                "equity": sum((account["equity"] for account in own), Decimal(0)) if own else None,
                "peak": sum((account["peak"] for account in own), Decimal(0)) if own else None,
                "drawdown_percent": max((account["drawdown_percent"] for account in own), default=None),
                "daily_loss_percent": max((account["daily_loss_percent"] for account in own), default=None),
                "drawdown_limit_percent": limits.drawdown,
                "daily_loss_limit_percent": limits.daily_loss,
                "tripped_at": guard.tripped_at if guard is not None and state == GuardState.TRIPPED else None,
                "tripped_reason": guard.tripped_reason
                if guard is not None and state == GuardState.TRIPPED
                else "",
                "accounts": own,
            }
        )
    return clients
