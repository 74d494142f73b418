from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from ea_gateway.selectors import device_by_key
from ea_gateway.services import device_revoke
from signals_app.events import Actor


class Command(BaseCommand):
    help = "Revoke a device: its requests are refused from now on."

    def add_arguments(self, parser) -> None:
        parser.add_argument("key", help="the device's key id")

    def handle(self, *args, key: str, **options) -> None:
        device = device_by_key(key_id=key)
        if device is None:
            raise CommandError(f"no device with key {key!r}")
        device = device_revoke(device=device, by=Actor.system("manage.py revoke_device"))
        self.stdout.write(f"device {device.key_id} revoked at {device.revoked_at:%Y-%m-%d %H:%M:%S}")
