from __future__ import annotations

from celery import shared_task

from monitoring.choices import HeartbeatName
from monitoring.services import heartbeat_record


@shared_task(name="monitoring.beat_heartbeat", bind=True, soft_time_limit=10, time_limit=15)
def beat_heartbeat(self) -> None:
    heartbeat_record(name=HeartbeatName.BEAT, worker=self.request.hostname or "")
