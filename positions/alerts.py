"""Owner alerts: one open row per problem, counted, never a flood."""

from __future__ import annotations

import logging

from django.db import connection, transaction
from django.utils import timezone

from positions import metrics
from positions.choices import AlertKind
from positions.models import Alert
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit_many
from signals_app.notify.messages import owner_alert_notice

logger = logging.getLogger(__name__)

_UPSERT = """
INSERT INTO positions_alert
    (kind, dedupe_key, message, instrument_id, position_id, device_id, occurrences, created_at, last_seen_at,
     acknowledged_by)
VALUES (%s, %s, %s, %s, %s, %s, 1, now(), now(), '')
ON CONFLICT (dedupe_key) WHERE acknowledged_at IS NULL
DO UPDATE SET occurrences = positions_alert.occurrences + 1, last_seen_at = now(), message = EXCLUDED.message
RETURNING (xmax = 0)
"""


def alert_raise(
    *,
    kind: str,
    dedupe_key: str,
    message: str,
    instrument_id: int | None = None,
    position_id: int | None = None,
    device_id: int | None = None,
) -> bool:
    """Open an alert, or count one more occurrence of the open one; True if new. A new
    alert is told to the owner (grouped per kind), in the same transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_UPSERT, [kind, dedupe_key, message[:500], instrument_id, position_id, device_id])
        (created,) = cursor.fetchone()
        if created:
            label = AlertKind(kind).label if kind in AlertKind.values else kind
            owner_alert_notice(kind=kind, kind_label=str(label), message=message[:500])
    if created:
        metrics.ALERTS.labels(kind=kind).inc()
        logger.warning("alert %s: %s", kind, message)
    return bool(created)


def alerts_acknowledge(*, alert_ids: list[int], by: Actor) -> list[int]:
    """Acknowledge those of ``alert_ids`` still open; return the ids this call acknowledged.

    A guarded update: the open rows are locked in id order and only rows still
    unacknowledged change, so two owners acknowledging at once audit each alert once.
    Acknowledging frees the alert's dedupe key: the same problem seen again opens a new alert.
    """
    now = timezone.now()
    with transaction.atomic():
        alerts = list(
            Alert.objects.select_for_update()
            .filter(pk__in=alert_ids, acknowledged_at__isnull=True)
            .order_by("pk")
            .only("pk", "kind", "dedupe_key", "occurrences")
        )
        if not alerts:
            return []
        changed = Alert.objects.filter(
            pk__in=[alert.pk for alert in alerts], acknowledged_at__isnull=True
        ).update(acknowledged_at=now, acknowledged_by=by.name)
        if changed != len(alerts):  # cannot happen under the row locks; refuse rather than half-audit
            raise RuntimeError(f"acknowledged {changed} of {len(alerts)} locked alerts")
        audit_many(
            by=by,
            action=AuditAction.ALERT_ACKNOWLEDGED,
            subjects=alerts,
            data_for=lambda alert: {
                "kind": alert.kind,
                "dedupe_key": alert.dedupe_key,
                "occurrences": alert.occurrences,
            },
        )
    return [alert.pk for alert in alerts]
