from __future__ import annotations

from django.db import models


class HeartbeatName(models.TextChoices):
    BEAT = "beat", "Celery beat → worker"
