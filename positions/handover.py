"""A client's EA revoked or replaced: its live positions, and their close commands,
follow the client to its active device, so no close waits on a dead device.

``ea_gateway.services`` (which knows devices) calls ``positions_hand_over`` in the
transaction that revokes a device, and after the heartbeat in which an active EA
first reports the ticket of a position stranded on a revoked one, with the client's
revoked EA devices and its active ones. Then, under the locks of ``positions.locks``:

1. the live positions (open, closing, close_failed: still at the broker) of the
   revoked devices are locked in id order, then their active close commands;
2. each position goes to the one active EA device whose last heartbeat reported the
   position's ticket. Never to a device that did not: EAs close by ticket, and
   another account (a replacement EA on a new account or broker, the client's
   second account) may hold the same ticket number for an unrelated trade. A
   position no device can take, or whose ticket the device already holds, stays
   where it is and the owner is alerted: its closes cannot be delivered. A new
   EA's heartbeat that later reports a stranded ticket runs the hand-over again
   (``ea_gateway.services.device_heartbeat``); when nothing is left stranded the
   alert is acknowledged by the system, audited;
3. a pending command follows its position, due at once. A delivered one lost its
   lease with the revocation: the old device is refused from now on and can never
   acknowledge it, so whether it executed is unknown. A full close goes back to
   pending for the new device: the broker refuses to close a ticket twice. A
   partial close could take a second fraction: it expires, the position is
   ``close_failed`` and the owner alerted, as after an unacknowledged last attempt;
4. every change is audited (who revoked or created the device); after the commit
   the new devices' waiting EAs are woken (``core.wake``). Closes queued later go
   to the position's device, which is now the active one.

Exactly-once holds: a command keeps its id and the one-active-close-per-position
constraint, and only one device can be leased it at a time.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from core.wake import wake_devices
from positions import metrics
from positions.alerts import alert_raise, alerts_acknowledge
from positions.choices import ACTIVE_CLOSE_STATUSES, LIVE_STATUSES, AlertKind, CloseCommandStatus
from positions.locks import close_commands_lock, positions_lock
from positions.models import Alert, CloseCommand, OpenPosition
from positions.timeouts import close_command_expire
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit


@dataclass(frozen=True)
class Handover:
    moved: int  # positions now on an active device
    commands_readdressed: int
    commands_expired: int  # delivered partial closes whose outcome is unknown
    stranded: int  # positions left on a revoked device: nobody can close them


def _taker(ticket: str, active_tickets: Mapping[int, frozenset[str]]) -> int | None:
    seeing = [device_id for device_id, tickets in active_tickets.items() if ticket in tickets]
    return seeing[0] if len(seeing) == 1 else None


@transaction.atomic
def positions_hand_over(
    *,
    client_id: int,
    from_device_ids: Collection[int],
    active_tickets: Mapping[int, frozenset[str]],
    by: Actor,
) -> Handover:
    """Move the live positions of ``from_device_ids`` (the client's revoked devices) and
    their active commands to the client's active devices (``active_tickets``: each one's
    last reported open tickets). See the module docstring."""
    now = timezone.now()
    candidates = OpenPosition.objects.filter(
        client_id=client_id, device_id__in=list(from_device_ids), status__in=LIVE_STATUSES
    ).values_list("pk", flat=True)
    positions = positions_lock(candidates, device_id__in=list(from_device_ids), status__in=LIVE_STATUSES)
    if not positions:
        return Handover(0, 0, 0, 0)
    commands = {
        command.position_id: command
        for command in close_commands_lock(
            CloseCommand.objects.filter(
                position_id__in=[p.pk for p in positions], status__in=ACTIVE_CLOSE_STATUSES
            ).values_list("pk", flat=True),
            status__in=ACTIVE_CLOSE_STATUSES,
        )
    }
    held = set(
        OpenPosition.objects.filter(
            device_id__in=list(active_tickets), broker_ticket__in=[p.broker_ticket for p in positions]
        ).values_list("device_id", "broker_ticket")
    )
    moved = readdressed = expired = 0
    stranded: list[OpenPosition] = []
    woken: set[int] = set()
    for position in positions:
        taker = _taker(position.broker_ticket, active_tickets)
        if taker is None or (taker, position.broker_ticket) in held:
            stranded.append(position)
            continue
        OpenPosition.objects.filter(pk=position.pk).update(device_id=taker, updated_at=now)
        held.add((taker, position.broker_ticket))
        audit(
            by=by,
            action=AuditAction.POSITION_DEVICE_CHANGED,
            subject=position,
            data={"from_device_id": position.device_id, "to_device_id": taker},
        )
        moved += 1
        command = commands.get(position.pk)
        if command is None:
            continue
        if command.status == CloseCommandStatus.DELIVERED and command.volume < position.remaining_volume:
            _expire_partial(command, position=position, now=now, by=by)
            expired += 1
            continue
        CloseCommand.objects.filter(pk=command.pk).update(
            device_id=taker, status=CloseCommandStatus.PENDING, lease_expires_at=None, next_attempt_at=now
        )
        audit(
            by=by,
            action=AuditAction.CLOSE_COMMAND_READDRESSED,
            subject=command,
            data={
                "position_id": position.pk,
                "from_device_id": command.device_id,
                "to_device_id": taker,
                "was": command.status,
                "attempts": command.attempts,
            },
        )
        if command.status == CloseCommandStatus.DELIVERED:
            metrics.CLOSE_RETRIES.labels(reason="device_revoked").inc()
        readdressed += 1
        woken.add(taker)
    if stranded:
        _alert_stranded(client_id=client_id, stranded=stranded)
    else:
        _stranded_alert_close(client_id=client_id, by=by)
    wake_devices(woken)
    return Handover(moved, readdressed, expired, len(stranded))


def positions_left_on(*, device_id: int) -> int:
    """How many live positions a (revoked) device still holds: none could take them."""
    return OpenPosition.objects.filter(device_id=device_id, status__in=LIVE_STATUSES).count()


def _expire_partial(command: CloseCommand, *, position: OpenPosition, now, by: Actor) -> None:
    close_command_expire(
        command,
        now=now,
        by=by,
        why="partial close delivered to a revoked device, never acknowledged",
        alert=(
            f"Position #{position.pk}: partial close command #{command.pk} was delivered to a device "
            "since revoked and never acknowledged; check the volume left at the broker."
        ),
    )


def _stranded_key(client_id: int) -> str:
    return f"no_active_device:{client_id}"


def _stranded_alert_close(*, client_id: int, by: Actor) -> None:
    """No live position of the client is left on a revoked device: the alert is over."""
    open_alerts = Alert.objects.filter(dedupe_key=_stranded_key(client_id), acknowledged_at__isnull=True)
    alerts_acknowledge(alert_ids=list(open_alerts.values_list("pk", flat=True)), by=by)


def _alert_stranded(*, client_id: int, stranded: list[OpenPosition]) -> None:
    alert_raise(
        kind=AlertKind.NO_ACTIVE_DEVICE,
        dedupe_key=_stranded_key(client_id),
        message=(
            f"Client #{client_id} has {len(stranded)} live position(s) on revoked devices and no "
            "active EA device whose heartbeat reports their tickets: their closes cannot be "
            "delivered until one does. "
            f"Positions: {', '.join(f'#{position.pk}' for position in stranded[:20])}."
        ),
        position_id=stranded[0].pk,
        device_id=stranded[0].device_id,
    )
