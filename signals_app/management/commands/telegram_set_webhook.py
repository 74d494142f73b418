"""Point the bot's updates at this server: ``setWebhook`` with TELEGRAM_WEBHOOK_SECRET
as ``secret_token`` (Telegram then sends it in every request's header)."""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from telebot.apihelper import ApiException

from core.telegram import SEND_TIMEOUT_SECONDS, telegram_api


class Command(BaseCommand):
    help = "Register https://<your host>/api/v1/telegram/webhook as the bot's webhook."

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "url", help="the webhook's public URL, e.g. https://veilstop.example/api/v1/telegram/webhook"
        )

    def handle(self, *args, url: str, **options) -> None:
        if not settings.TELEGRAM_BOT_TOKEN or not settings.TELEGRAM_WEBHOOK_SECRET:
            raise CommandError("set TELEGRAM_BOT_TOKEN and TELEGRAM_WEBHOOK_SECRET first")
        if not url.startswith(("https://", "http://")) or not url.rstrip("/").endswith(
            "/api/v1/telegram/webhook"
        ):
            raise CommandError("the URL must be this server's .../api/v1/telegram/webhook")
        try:
            telegram_api().set_webhook(
                settings.TELEGRAM_BOT_TOKEN,
                url=url,
                secret_token=settings.TELEGRAM_WEBHOOK_SECRET,
                allowed_updates=["message", "callback_query"],
                timeout=SEND_TIMEOUT_SECONDS,
            )
        except ApiException as error:
            raise CommandError(f"Telegram refused the webhook: {error}") from None
        self.stdout.write(f"webhook set: {url}")
