from __future__ import annotations

from celery import shared_task

from monitoring.choices import HeartbeatName
from monitoring.notifications.delivery import TASK_TIME_LIMIT_SECONDS, outbox_deliver
from monitoring.services import heartbeat_record


@shared_task(name="monitoring.beat_heartbeat", bind=True, soft_time_limit=10, time_limit=15)
def beat_heartbeat(self) -> None:
    heartbeat_record(name=HeartbeatName.BEAT, worker=self.request.hostname or "")


@shared_task(name="monitoring.outbox_deliver", soft_time_limit=45, time_limit=TASK_TIME_LIMIT_SECONDS)
def outbox_deliver_task() -> None:
    # acks_late with reject_on_worker_lost (the defaults): a run lost with its worker is run
    # again; a row it held waits for its lease (monitoring.notifications.delivery).
    outbox_deliver()
