"""The Celery app: Redis broker, JSON only, settings under the CELERY_ prefix.

Task defaults (acks_late, reject_on_worker_lost, time limits) live in
``config.settings``; periodic tasks are declared once in ``config.schedule``.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("veilstop")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
