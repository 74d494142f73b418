from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from ea_gateway.models import Device
from signals_app.choices import ApprovalStatus, SignalStatus
from signals_app.models import Approval


def approvals_for_poll(*, device: Device, limit: int = 50) -> QuerySet[Approval]:
    """Approved, unexpired approvals of this device's client that no EA has filled yet."""
    return (
        Approval.objects.filter(
            client_id=device.client_id,
            client__active=True,
            status=ApprovalStatus.APPROVED,
            expires_at__gt=timezone.now(),
            signal__status=SignalStatus.PUBLISHED,
            position__isnull=True,
        )
        .select_related("signal__instrument")
        .order_by("expires_at", "pk")[:limit]
    )


def device_by_key(*, key_id: str) -> Device | None:
    return Device.objects.filter(key_id=key_id).first()
