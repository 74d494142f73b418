"""The Celery app: Redis broker, JSON only, settings under the CELERY_ prefix.

Task defaults (acks_late, reject_on_worker_lost, time limits) live in
``config.settings``; periodic tasks are declared once in ``config.schedule``.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_shutdown

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("veilstop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_shutdown.connect
def _forget_metrics_of_dead_process(pid=None, **kwargs) -> None:
    # Metrics from workers reach /metrics through PROMETHEUS_MULTIPROC_DIR;
    # a process that is gone must not keep reporting live gauges.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())
