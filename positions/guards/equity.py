"""A heartbeat's equity, recorded and judged by the client's guard.

In one transaction per heartbeat (``ea_gateway.services.device_heartbeat`` calls it):

1. the device's account row is created with its first equity (peak, day start and last
   all that equity: nothing to judge yet) together with the client's guard, or locked;
2. the equity goes through the jump rule (``rules.equity_step``): a held jump waits for
   the next heartbeat and is not judged; one that no heartbeat confirmed alerts;
3. accepted equity is judged against the client's effective limits (``limits``); a
   breach trips the guard (``trip.client_guard_trip``), which closes the client's live
   positions through the one close claim;
4. a client whose guard is already tripped has what opened since claimed too.

A heartbeat reports the equity at the moment it is sent, so the equity a heartbeat
judges is fresh by construction; what grows old is an account whose heartbeats stopped,
and the periodic check (``trip.guards_check``) alerts on that, never closes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.db import connection, transaction

from positions.alerts import alert_raise
from positions.choices import AlertKind, GuardState
from positions.guards.limits import guard_day, jump_fraction, limits_effective, stale_window
from positions.guards.rules import Account, Breach, breach, equity_step
from positions.guards.trip import client_guard_trip, guards_close_tripped
from positions.models import ClientGuard, GuardAccount
from signals_app.models import Client

_ACCOUNT_START = """
INSERT INTO positions_guardaccount
    (device_id, client_id, peak_equity, day, day_start_equity, last_equity, last_at)
VALUES (%(device)s, %(client)s, %(equity)s, %(day)s, %(equity)s, %(equity)s, %(now)s)
ON CONFLICT (device_id) DO NOTHING
RETURNING device_id
"""


@dataclass(frozen=True)
class EquityJudged:
    accepted: bool  # False: a jump held for its confirmation
    breach: Breach | None = None
    tripped: bool = False  # this heartbeat tripped the guard


def _account(row: GuardAccount) -> Account:
    return Account(
        peak=row.peak_equity,
        day=row.day,
        day_start=row.day_start_equity,
        last=row.last_equity,
        last_at=row.last_at,
        held=row.held_equity,
        held_at=row.held_at,
    )


def guard_equity_record(
    *, client_id: int, device_id: int, device_name: str, equity: Decimal, now: datetime
) -> EquityJudged:
    day = guard_day(now)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                _ACCOUNT_START,
                {"device": device_id, "client": client_id, "equity": equity, "day": day, "now": now},
            )
            started = cursor.fetchone() is not None
        if started:
            ClientGuard.objects.bulk_create([ClientGuard(client_id=client_id)], ignore_conflicts=True)
            guards_close_tripped(client_ids=[client_id])
            return EquityJudged(accepted=True)
        row = GuardAccount.objects.select_for_update().get(device_id=device_id)
        step = equity_step(
            _account(row), equity, now=now, day=day, jump_fraction=jump_fraction(), window=stale_window()
        )
        account = step.account
        GuardAccount.objects.filter(pk=device_id).update(
            peak_equity=account.peak,
            day=account.day,
            day_start_equity=account.day_start,
            last_equity=account.last,
            last_at=account.last_at,
            held_equity=account.held,
            held_at=account.held_at,
        )
        if step.dropped is not None:
            alert_raise(
                kind=AlertKind.EQUITY_JUMP,
                dedupe_key=f"equity_jump:{device_id}",
                message=(
                    f"Device {device_name} reported an equity of {step.dropped} that the next heartbeat "
                    "did not confirm; the risk guard ignored it."
                ),
                device_id=device_id,
            )
        if not step.judge:
            guards_close_tripped(client_ids=[client_id])
            return EquityJudged(accepted=False)
        # The limits and the guard's state in one read (a heartbeat is the hottest path).
        own_drawdown, own_daily, state = Client.objects.filter(pk=client_id).values_list(
            "drawdown_limit_percent", "daily_loss_limit_percent", "guard__state"
        )[0]
        limits = limits_effective(drawdown_limit_percent=own_drawdown, daily_loss_limit_percent=own_daily)
        found = breach(account, day=day, drawdown_limit=limits.drawdown, daily_loss_limit=limits.daily_loss)
        if found is not None:
            tripped = client_guard_trip(
                client_id=client_id, breach=found, device_id=device_id, device_name=device_name
            )
            return EquityJudged(accepted=True, breach=found, tripped=tripped)
        if state == GuardState.TRIPPED:
            guards_close_tripped(client_ids=[client_id])
        return EquityJudged(accepted=True)
