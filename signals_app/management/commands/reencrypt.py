from __future__ import annotations

from django.core.management.base import BaseCommand

from signals_app.encryption import encrypted_values_reencrypt


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted value (hidden levels, device secrets, audit secrets) under the "
        "first key of FERNET_KEYS. Rotation: prepend a new key, run this, then remove the old key."
    )

    def handle(self, *args, **options) -> None:
        for label, count in encrypted_values_reencrypt().items():
            self.stdout.write(f"{label}: {count} re-encrypted")
