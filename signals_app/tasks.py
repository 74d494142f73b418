from __future__ import annotations

from celery import shared_task

from signals_app.services import approvals_expire


@shared_task(name="signals_app.expire_approvals", soft_time_limit=50, time_limit=60)
def expire_approvals() -> int:
    return approvals_expire()
