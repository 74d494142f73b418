"""Remove a staff user's authenticator (a lost or replaced phone): their next login with
their password enrols a new one. Audited."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from signals_app.events import Actor
from staff_auth.two_factor import two_factor_reset


class Command(BaseCommand):
    help = "Reset a staff user's second factor: their next login enrols a new authenticator."

    def add_arguments(self, parser) -> None:
        parser.add_argument("username")

    def handle(self, *args, username: str, **options) -> None:
        user_model = get_user_model()
        user = user_model.objects.filter(**{user_model.USERNAME_FIELD: username}).first()
        if user is None:
            raise CommandError(f"no user named {username!r}")
        removed = two_factor_reset(user=user, by=Actor.system("manage.py reset_two_factor"))
        if removed:
            self.stdout.write(
                f"Second factor of {username} reset ({removed} authenticator(s) removed): their next "
                "login with their password asks them to set up a new authenticator."
            )
        else:
            self.stdout.write(f"{username} had no authenticator: their next login sets one up.")
