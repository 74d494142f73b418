"""Owner alerts: one open row per problem, counted, never a flood."""

from __future__ import annotations

import logging

from django.db import connection

from positions import metrics

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
    """Open an alert, or count one more occurrence of the open one; True if new."""
    with connection.cursor() as cursor:
        cursor.execute(_UPSERT, [kind, dedupe_key, message[:500], instrument_id, position_id, device_id])
        (created,) = cursor.fetchone()
    if created:
        metrics.ALERTS.labels(kind=kind).inc()
        logger.warning("alert %s: %s", kind, message)
    return bool(created)
