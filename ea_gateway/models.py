from __future__ import annotations

from django.db import models
from django.db.models import Q

from ea_gateway.choices import DeviceRole
from signals_app.fields import EncryptedText
from signals_app.models import Client


class Device(models.Model):
    """A client's EA installation, or a price-feed key. Authenticates by HMAC."""

    name = models.CharField(max_length=100)
    role = models.CharField(max_length=4, choices=DeviceRole.choices, default=DeviceRole.EA)
    client = models.ForeignKey(
        Client, null=True, blank=True, on_delete=models.PROTECT, related_name="devices"
    )
    key_id = models.CharField(max_length=40, unique=True, help_text="public key id (X-Device-Key)")
    # The HMAC secret. The server must know it to verify, so it is encrypted, not hashed.
    secret = EncryptedText()
    active = models.BooleanField(default=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    secret_rotated_at = models.DateTimeField(null=True, blank=True)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    last_account = models.JSONField(null=True, blank=True, help_text="balance, equity, open tickets")

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(role=DeviceRole.EA, client__isnull=False)
                | Q(role=DeviceRole.FEED, client__isnull=True),
                name="device_ea_has_client_feed_has_none",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.role}, {self.key_id})"


class ReplayFence(models.Model):
    """What survives of a device's replay protection when Redis loses its nonces.

    ``bound``: no request of the device accepted so far was signed (X-Timestamp, unix s)
    after it; it is raised before a request above it is accepted. ``floor``: the bound
    as it stood when the Redis server named ``redis_server`` (run id, replication id and
    epoch marker: ``ea_gateway.api.admission``) first raised it; requests signed at or
    below it may have been accepted by an earlier server, whose nonces this one may lack,
    so it refuses them (``ea_gateway.api.authentication``, step 4).
    """

    device = models.OneToOneField(Device, primary_key=True, on_delete=models.CASCADE, related_name="+")
    redis_server = models.CharField(max_length=100)
    floor = models.BigIntegerField()
    bound = models.BigIntegerField()

    def __str__(self) -> str:
        return f"replay fence of device {self.device_id}: ({self.floor}, {self.bound}]"
