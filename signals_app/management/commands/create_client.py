from __future__ import annotations

from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError

from signals_app.events import Actor
from signals_app.services import client_ensure


def _volume(value: str) -> Decimal:
    try:
        volume = Decimal(value)
    except InvalidOperation:
        raise CommandError(f"--volume must be a number of lots, got {value!r}") from None
    if not volume.is_finite() or volume < Decimal("0.01") or volume.as_tuple().exponent < -2:
        raise CommandError(f"--volume must be at least 0.01 lots with at most 2 decimals, got {value!r}")
    return volume


class Command(BaseCommand):
    help = "Create a client (subscriber) if none has this name; apply the given options either way."

    def add_arguments(self, parser) -> None:
        parser.add_argument("name")
        parser.add_argument("--auto-approve", action="store_true", default=None)
        parser.add_argument("--volume", type=str, default=None, help="default volume in lots, e.g. 0.10")
        parser.add_argument("--telegram-chat-id", default=None)

    def handle(self, *args, name: str, auto_approve, volume, telegram_chat_id, **options) -> None:
        if not name.strip() or len(name) > 100:
            raise CommandError("NAME must be 1 to 100 characters")
        client, created = client_ensure(
            name=name,
            auto_approve=auto_approve,
            default_volume=_volume(volume) if volume is not None else None,
            telegram_chat_id=telegram_chat_id,
            by=Actor.system("manage.py create_client"),
        )
        state = "created" if created else "exists"
        self.stdout.write(
            f"client {client.name!r} {state} (id {client.pk}, auto-approve {client.auto_approve}, "
            f"volume {client.default_volume})"
        )
