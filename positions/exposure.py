"""Exposure limits: per client, the most live positions (``max_open_positions``) and
the most lots per instrument (``max_volume_per_instrument``); an empty field takes
GUARD_MAX_OPEN_POSITIONS / GUARD_MAX_VOLUME_PER_INSTRUMENT, and 0 there is no limit.

The EA poll hands out only approvals within them (``approvals_hand_out``):

1. the candidates are the poll's approvals (``ea_gateway.selectors.approvals_for_poll``);
2. with no limit in force, all of them go;
3. otherwise, under the client's exposure lock (``positions.locks``: two devices of
   one client polling at once take turns), it counts what is committed already:
   live positions (open, closing, close failed; their remaining volume) and
   approvals handed out earlier and not yet filled (approved, unexpired);
4. it walks the candidates in the poll's order: one handed out before is in the
   counts and goes again (the EA may not have placed it yet); a new one goes only
   if one more position, and its whole volume on its instrument, stay within the
   limits; otherwise it is held back whole (never cut down) and stays approved
   until room frees up or it expires;
5. it marks the new ones handed out (from then on they count until filled or
   expired) and the held-back ones held back: audited the first time only, not on
   every poll or long-poll wake.

Room frees up when a position leaves the live statuses; the close-ack wakes the
client (``core.wake``) so its waiting long-polls look again. A fill beyond the
limits (an EA placing an approval it was never handed) is accepted, because the
trade exists at the broker and refusing it would leave it unwatched, and flagged:
an owner alert and an audit event (``exposure_check_fill``).

The EA learns nothing of the limits: a held-back approval is simply not in the
answer.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Sum
from django.utils import timezone

from positions.alerts import alert_raise
from positions.choices import AlertKind, PositionStatus
from positions.locks import client_exposure_lock
from positions.models import OpenPosition
from signals_app.choices import ApprovalStatus, AuditAction
from signals_app.events import Actor, audit, audit_many
from signals_app.models import Approval, Client

LIVE = (PositionStatus.OPEN, PositionStatus.CLOSING, PositionStatus.CLOSE_FAILED)
EXPOSURE = Actor.system("exposure_limits")
MAX_POSITIONS, MAX_VOLUME = "max_open_positions", "max_volume_per_instrument"


@dataclass(frozen=True)
class Limits:
    max_positions: int | None
    max_volume: Decimal | None

    @property
    def any(self) -> bool:
        return self.max_positions is not None or self.max_volume is not None


def client_limits(client_id: int) -> Limits:
    """The client's own limits, or the global ones where it has none (0: no limit)."""
    own_positions, own_volume = Client.objects.filter(pk=client_id).values_list(
        "max_open_positions", "max_volume_per_instrument"
    )[0]
    positions = own_positions if own_positions is not None else settings.GUARD_MAX_OPEN_POSITIONS or None
    volume = own_volume if own_volume is not None else settings.GUARD_MAX_VOLUME_PER_INSTRUMENT or None
    return Limits(positions, volume)


@dataclass
class Committed:
    positions: int = 0
    volume: defaultdict[int, Decimal] = field(default_factory=lambda: defaultdict(Decimal))  # per instrument

    def add(self, instrument_id: int, count: int, volume: Decimal) -> None:
        self.positions += count
        self.volume[instrument_id] += volume

    def exceeded(self, limits: Limits, instrument_id: int) -> str:
        """Which limit the counts are beyond ("" for none)."""
        if limits.max_positions is not None and self.positions > limits.max_positions:
            return MAX_POSITIONS
        if limits.max_volume is not None and self.volume[instrument_id] > limits.max_volume:
            return MAX_VOLUME
        return ""


def _live_positions(client_id: int, committed: Committed) -> None:
    rows = (
        OpenPosition.objects.filter(client_id=client_id, status__in=LIVE)
        .values("instrument_id")
        .annotate(count=Count("pk"), volume=Sum("remaining_volume"))
        .order_by()
    )
    for row in rows:
        committed.add(row["instrument_id"], row["count"], row["volume"])


def approvals_hand_out(*, client_id: int, candidates: list[Approval]) -> list[Approval]:
    """Steps 2 to 5: the candidates that may go to the EA now, in the poll's order."""
    if not candidates:
        return []
    limits = client_limits(client_id)
    now = timezone.now()
    with transaction.atomic():
        if not limits.any:
            _mark_handed_out([a for a in candidates if a.handed_out_at is None], now)
            return candidates
        client_exposure_lock(client_id)
        committed = Committed()
        _live_positions(client_id, committed)
        earlier = set(
            Approval.objects.filter(
                client_id=client_id,
                status=ApprovalStatus.APPROVED,
                handed_out_at__isnull=False,
                expires_at__gt=now,
                position__isnull=True,
            ).values_list("pk", "signal__instrument_id", "volume")
        )
        for _, instrument_id, volume in earlier:
            committed.add(instrument_id, 1, volume)
        handed_before = {pk for pk, _, _ in earlier}
        given, new, held = [], [], []
        for approval in candidates:
            instrument_id = approval.signal.instrument_id
            if approval.pk in handed_before:
                given.append(approval)
                continue
            committed.add(instrument_id, 1, approval.volume)
            limit = committed.exceeded(limits, instrument_id)
            if limit:
                committed.add(instrument_id, -1, -approval.volume)
                held.append((approval, limit))
                continue
            given.append(approval)
            new.append(approval)
        _mark_handed_out(new, now)
        _mark_held_back(held, now)
    return given


def _mark_handed_out(approvals: list[Approval], now) -> None:
    if approvals:
        Approval.objects.filter(pk__in=[a.pk for a in approvals], handed_out_at__isnull=True).update(
            handed_out_at=now
        )


def _mark_held_back(held: list[tuple[Approval, str]], now) -> None:
    """Audited once per approval: only the rows this update changed."""
    first = [(approval, limit) for approval, limit in held if approval.held_back_at is None]
    if not first:
        return
    changed = set(
        Approval.objects.filter(pk__in=[a.pk for a, _ in first], held_back_at__isnull=True).values_list(
            "pk", flat=True
        )
    )
    Approval.objects.filter(pk__in=changed, held_back_at__isnull=True).update(held_back_at=now)
    limit_of = {approval.pk: limit for approval, limit in first}
    audit_many(
        by=EXPOSURE,
        action=AuditAction.APPROVAL_HELD_BACK,
        subjects=[approval for approval, _ in first if approval.pk in changed],
        data_for=lambda approval: {"limit": limit_of[approval.pk], "volume": str(approval.volume)},
    )


def exposure_check_fill(*, position: OpenPosition) -> str:
    """After a fill: flag it (alert, audit) if it took the client beyond a limit; which one."""
    limits = client_limits(position.client_id)
    if not limits.any:
        return ""
    committed = Committed()
    _live_positions(position.client_id, committed)
    limit = committed.exceeded(limits, position.instrument_id)
    if not limit:
        return ""
    audit(
        by=EXPOSURE,
        action=AuditAction.POSITION_OVER_EXPOSURE,
        subject=position,
        data={
            "limit": limit,
            "live_positions": committed.positions,
            "instrument_volume": str(committed.volume[position.instrument_id]),
        },
    )
    alert_raise(
        kind=AlertKind.OVER_EXPOSURE,
        dedupe_key=f"over_exposure:{position.pk}",
        message=(
            f"Position #{position.pk} (ticket {position.broker_ticket}) took client #{position.client_id} "
            f"beyond its {limit.replace('_', ' ')}; it is watched like any other."
        ),
        position_id=position.pk,
    )
    return limit
