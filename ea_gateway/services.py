"""Writes on behalf of devices: key management, fills, heartbeats, quotes."""

from __future__ import annotations

import json
import logging
import random
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from redis.exceptions import RedisError

from core.errors import DomainError
from core.redis import get_redis
from ea_gateway.choices import DeviceRole
from ea_gateway.models import Device
from ea_gateway.selectors import DEVICE_GENERATION_KEY, approvals_for_poll
from positions.choices import LIVE_STATUSES
from positions.exposure import approvals_hand_out
from positions.fills import AckResult, Fill, FillReport, approval_fill_report, positions_reconcile
from positions.guards.equity import guard_equity_record
from positions.handover import Handover, positions_hand_over
from positions.models import OpenPosition
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit
from signals_app.models import Approval, Client

KEY_PREFIX = "vsk_"
# Longer than any EA_DEVICE_CACHE_SECONDS: an entry read before a change has left every
# process's cache before the generation that refused it could expire.
DEVICE_GENERATION_TTL_SECONDS = 86_400

logger = logging.getLogger(__name__)


def approvals_for_ea(*, device: Device) -> list[Approval]:
    """What the EA poll hands out now: its client's approvals within the client's exposure
    limits (``positions.exposure``: the others are held back, whole, and audited once)."""
    return approvals_hand_out(client_id=device.client_id, candidates=list(approvals_for_poll(device=device)))


def _new_secret() -> str:
    return secrets.token_urlsafe(32)


def device_actor(device: Device) -> Actor:
    return Actor(kind="device", name=device.key_id)


@dataclass(frozen=True)
class IssuedCredentials:
    """A device and its secret in the clear: shown once, never stored like this."""

    device: Device
    secret: str


def _device_generation_renew(device: Device) -> None:
    get_redis().set(
        DEVICE_GENERATION_KEY.format(key_id=device.key_id),
        secrets.token_hex(8),
        ex=DEVICE_GENERATION_TTL_SECONDS,
    )


@contextmanager
def _credentials_change(device: Device) -> Iterator[None]:
    """A transaction after which no process's cached copy of the device authenticates
    (``ea_gateway.selectors``).

    A new generation before the transaction, so a request from then on reads the row
    again, and another after the commit, so a copy read before the commit (the old row)
    is dropped too. Both outside the transaction: no network I/O holds the row lock. If
    Redis cannot take the first, nothing changes: the change would otherwise commit and
    still let cached copies through for up to EA_DEVICE_CACHE_SECONDS.
    """
    try:
        _device_generation_renew(device)
    except RedisError:
        raise DomainError(
            "unavailable",
            "The device store is unreachable (Redis); nothing was changed. Retry shortly.",
            status_code=503,
        ) from None

    def after_commit() -> None:
        try:
            _device_generation_renew(device)
        except RedisError:
            logger.warning(
                "device %s changed but Redis was unreachable after the commit: a copy cached "
                "before the commit may authenticate for up to EA_DEVICE_CACHE_SECONDS",
                device.key_id,
            )

    with transaction.atomic():
        yield
        transaction.on_commit(after_commit)


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
    # A replacement EA takes the positions stranded on the client's revoked ones only
    # once its heartbeat reports their tickets (``device_heartbeat``).
    return IssuedCredentials(device, secret)


def _client_positions_hand_over(*, client_id: int, by: Actor) -> Handover:
    """The live positions on the client's revoked EA devices, and their close commands,
    go to its active EA device (``positions.handover``). Inside the caller's transaction."""
    devices = Device.objects.filter(client_id=client_id, role=DeviceRole.EA)
    revoked = list(devices.filter(revoked_at__isnull=False).values_list("pk", flat=True))
    if not revoked:
        return Handover(0, 0, 0, 0)
    active_tickets = {
        device_id: frozenset(str(ticket) for ticket in (account or {}).get("open_tickets", []))
        for device_id, account in devices.filter(active=True, revoked_at__isnull=True).values_list(
            "pk", "last_account"
        )
    }
    return positions_hand_over(
        client_id=client_id, from_device_ids=revoked, active_tickets=active_tickets, by=by
    )


def device_rotate_secret(*, device: Device, by: Actor) -> IssuedCredentials:
    """A new secret for the same key id; the old one stops working at once."""
    secret = _new_secret()
    with _credentials_change(device):
        changed = Device.objects.filter(pk=device.pk, revoked_at__isnull=True).update(
            secret=secret, secret_rotated_at=timezone.now()
        )
        if changed != 1:
            raise DomainError("device_revoked", "A revoked device cannot get a new secret.", status_code=409)
        audit(by=by, action=AuditAction.DEVICE_SECRET_ROTATED, subject=device, data={"key_id": device.key_id})
    device.refresh_from_db()
    return IssuedCredentials(device, secret)


def device_revoke(*, device: Device, by: Actor) -> Device:
    """The device's requests are refused from the moment this returns, in every process.
    Its client's live positions, and their close commands, go to the client's active EA
    device; with none to take them the owner is alerted (``positions.handover``)."""
    with _credentials_change(device):
        changed = Device.objects.filter(pk=device.pk, revoked_at__isnull=True).update(
            active=False, revoked_at=timezone.now()
        )
        if changed == 1:
            audit(by=by, action=AuditAction.DEVICE_REVOKED, subject=device, data={"key_id": device.key_id})
            if device.client_id is not None:
                _client_positions_hand_over(client_id=device.client_id, by=by)
    device.refresh_from_db()
    return device


_RAISE_REPLAY_FENCE = """
INSERT INTO ea_gateway_replayfence AS fence (device_id, redis_server, floor, bound)
SELECT id, %(server)s, 0, %(bound)s FROM ea_gateway_device WHERE id = %(device_id)s
ON CONFLICT (device_id) DO UPDATE SET
    redis_server = EXCLUDED.redis_server,
    floor = CASE WHEN fence.redis_server = EXCLUDED.redis_server THEN fence.floor ELSE fence.bound END,
    bound = GREATEST(fence.bound, EXCLUDED.bound)
RETURNING floor, bound
"""


def replay_fence_raise(*, device_id: int, redis_server: str, signed_at: int) -> tuple[int, int] | None:
    """Raise the device's bound of accepted timestamps past ``signed_at`` for the Redis
    server ``redis_server``; return its (floor, bound) there, or None if the device is gone.

    The bound goes between half and all of HMAC_REPLAY_FENCE_SECONDS past it, at random:
    devices first seen together (a fleet after a deploy) do not all come back to write it
    in the same second, and a loss still fences none longer than the setting.

    The first raise for another server makes the bound so far its floor
    (``ea_gateway.models.ReplayFence``). One statement: outside a transaction it has
    committed when this returns, before the request it makes room for is accepted
    (``ea_gateway.api.authentication``, step 4). The row lock orders concurrent raises.
    """
    fence = settings.HMAC_REPLAY_FENCE_SECONDS
    ahead = random.randint((fence + 1) // 2, fence)  # noqa: S311 - spreading load, not a secret
    with connection.cursor() as cursor:
        cursor.execute(
            _RAISE_REPLAY_FENCE, {"server": redis_server, "bound": signed_at + ahead, "device_id": device_id}
        )
        row = cursor.fetchone()
    return (int(row[0]), int(row[1])) if row else None


def approval_ack(*, device: Device, approval_id: int, fill: Fill | None, error: str = "") -> AckResult:
    """The EA's report on one of its client's approvals (``positions.fills``)."""
    return approval_fill_report(
        report=FillReport(
            approval_id=approval_id, client_id=device.client_id, device_id=device.pk, fill=fill, error=error
        ),
        by=device_actor(device),
    )


_HEARTBEAT_UPDATE = "UPDATE ea_gateway_device SET last_account = %s::jsonb, last_seen_at = %s WHERE id = %s"


def device_heartbeat(*, device: Device, balance: Decimal, equity: Decimal, open_tickets: list[str]) -> int:
    """Record the account snapshot; positions whose ticket vanished are closed externally;
    the equity goes to the client's risk guard (``positions.guards``), which may trip it."""
    now = timezone.now()
    snapshot: dict[str, Any] = {
        "balance": str(balance),
        "equity": str(equity),
        "open_tickets": open_tickets,
        "at": now.isoformat(),
    }
    # Every EA sends one every few seconds: the statement as the ORM would write it, without
    # building and compiling its query each time.
    with connection.cursor() as cursor:
        cursor.execute(_HEARTBEAT_UPDATE, [json.dumps(snapshot), now, device.pk])
    if device.client_id is not None and _holds_stranded(device=device, open_tickets=open_tickets):
        _client_positions_hand_over(client_id=device.client_id, by=device_actor(device))
    vanished = positions_reconcile(
        device_id=device.pk, open_tickets=set(open_tickets), by=device_actor(device), now=now
    )
    if device.client_id is not None:
        # After the reconciliation: a trade already gone at the broker gets no close command.
        guard_equity_record(
            client_id=device.client_id, device_id=device.pk, device_name=device.key_id, equity=equity, now=now
        )
    return vanished


def _holds_stranded(*, device: Device, open_tickets: list[str]) -> bool:
    """Whether the EA's account reports the ticket of a live position left on one of its
    client's revoked EAs (one indexed probe; false for nearly every heartbeat)."""
    if not open_tickets:
        return False
    return OpenPosition.objects.filter(
        client_id=device.client_id,
        device__revoked_at__isnull=False,
        status__in=LIVE_STATUSES,
        broker_ticket__in=open_tickets,
    ).exists()
