from __future__ import annotations

from django.db import models


class Heartbeat(models.Model):
    """The last time a periodic liveness task ran, per component.

    ``beat`` is written by a task that beat schedules and a worker executes,
    so a fresh row proves both are alive.
    """

    name = models.CharField(max_length=64, unique=True)
    last_seen_at = models.DateTimeField()
    worker = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name} @ {self.last_seen_at:%Y-%m-%d %H:%M:%S}"
