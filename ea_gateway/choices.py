from __future__ import annotations

from django.db import models


class DeviceRole(models.TextChoices):
    EA = "ea", "Client EA"
    FEED = "feed", "Price feed"
