from __future__ import annotations

import os
import secrets
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from config.embedded import default_state_dir


class Command(BaseCommand):
    help = (
        "Create the owner (superuser) account if no superuser exists. The generated "
        "password is written to a file readable only by you, never printed."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--username", default="owner")
        parser.add_argument(
            "--credentials-file",
            type=Path,
            default=None,
            help="where to write the password (default: <state dir>/owner-credentials.txt)",
        )

    def handle(self, *args, username: str, credentials_file: Path | None, **options) -> None:
        credentials_file = credentials_file or default_state_dir() / "owner-credentials.txt"
        user_model = get_user_model()
        if user_model.objects.filter(is_superuser=True).exists():
            where = f" (credentials in {credentials_file})" if credentials_file.exists() else ""
            self.stdout.write(f"Owner account exists{where}.")
            return
        password = secrets.token_urlsafe(18)
        user_model.objects.create_superuser(username=username, email="", password=password)
        credentials_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(f"username: {username}\npassword: {password}\n")
        self.stdout.write(
            self.style.SUCCESS(f"Created owner account '{username}'; password in {credentials_file}")
        )
        if settings.IS_PRODUCTION:
            self.stdout.write("Change it after the first login and delete that file.")
