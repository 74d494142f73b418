from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError

from ea_gateway.choices import DeviceRole
from ea_gateway.services import IssuedCredentials, device_create
from signals_app.events import Actor
from signals_app.services import client_ensure


def print_credentials(command: BaseCommand, credentials: IssuedCredentials, as_json: bool) -> None:
    device = credentials.device
    if as_json:
        command.stdout.write(
            json.dumps({"key": device.key_id, "secret": credentials.secret, "role": device.role})
        )
        return
    command.stdout.write(f"device {device.name!r} ({device.role})")
    command.stdout.write(f"  key:    {device.key_id}")
    command.stdout.write(f"  secret: {credentials.secret}")
    command.stdout.write("The secret is shown this once; store it in the EA's settings now.")


class Command(BaseCommand):
    help = (
        "Create an EA device for a client (the client is created with default settings if "
        "missing) or a price-feed key, and print its key and secret once."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--client", help="client name (for an EA device)")
        parser.add_argument("--role", choices=[DeviceRole.EA, DeviceRole.FEED], default=DeviceRole.EA)
        parser.add_argument("--name", help="device name (default: '<client> EA' or required for a feed)")
        parser.add_argument(
            "--json", dest="as_json", action="store_true", help='print {"key": ..., "secret": ...}'
        )

    def handle(
        self, *args, client: str | None, role: str, name: str | None, as_json: bool, **options
    ) -> None:
        by = Actor.system("manage.py create_device")
        if role == DeviceRole.EA:
            if not client or not client.strip():
                raise CommandError("an EA device needs --client NAME")
            owner_client, _ = client_ensure(name=client, by=by)
            credentials = device_create(
                name=name or f"{owner_client.name} EA", role=role, client=owner_client, by=by
            )
        else:
            if client:
                raise CommandError("a feed device belongs to no client; drop --client")
            if not name or not name.strip():
                raise CommandError("a feed device needs --name NAME")
            credentials = device_create(name=name, role=role, client=None, by=by)
        print_credentials(self, credentials, as_json)
