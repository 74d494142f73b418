from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from core.errors import DomainError
from ea_gateway.management.commands.create_device import print_credentials
from ea_gateway.selectors import device_by_key
from ea_gateway.services import device_rotate_secret
from signals_app.events import Actor


class Command(BaseCommand):
    help = "Give a device a new secret (printed once); the old secret stops working at once."

    def add_arguments(self, parser) -> None:
        parser.add_argument("key", help="the device's key id")
        parser.add_argument("--json", dest="as_json", action="store_true")

    def handle(self, *args, key: str, as_json: bool, **options) -> None:
        device = device_by_key(key_id=key)
        if device is None:
            raise CommandError(f"no device with key {key!r}")
        try:
            credentials = device_rotate_secret(
                device=device, by=Actor.system("manage.py rotate_device_secret")
            )
        except DomainError as error:
            raise CommandError(error.message) from None
        print_credentials(self, credentials, as_json)
