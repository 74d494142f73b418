from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from monitoring.models import Heartbeat


def heartbeat_age(*, name: str) -> timedelta | None:
    """How long ago the named heartbeat ran, or None if it never did."""
    last_seen_at = Heartbeat.objects.filter(name=name).values_list("last_seen_at", flat=True).first()
    if last_seen_at is None:
        return None
    return timezone.now() - last_seen_at
