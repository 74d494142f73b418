from __future__ import annotations

import signal
import threading
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from config.embedded import default_state_dir
from monitoring.notifications.standin import STANDIN_TOKEN, BotApiStandIn


class Command(BaseCommand):
    help = (
        "Run a local stand-in for Telegram's Bot API until stopped: it answers sendMessage as "
        "Telegram does, logs one line per message and appends each to a JSON-lines file. "
        "`make run` starts it when no TELEGRAM_BOT_TOKEN is set."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--port", type=int, default=8081, help="port on 127.0.0.1 (0: any free one)")
        parser.add_argument(
            "--record-to",
            type=Path,
            default=None,
            help="JSON-lines file of the messages (default: <state dir>/telegram-standin.jsonl)",
        )
        parser.add_argument(
            "--token",
            default=None,
            help=f"the bot token it answers for (default: TELEGRAM_BOT_TOKEN, or {STANDIN_TOKEN!r})",
        )

    def handle(self, *args, port: int, record_to: Path | None, token: str | None, **options) -> None:
        if not 0 <= port < 65536:
            raise CommandError(f"--port {port} is not a port number (0-65535).")
        record_to = record_to or default_state_dir() / "telegram-standin.jsonl"
        record_to.parent.mkdir(parents=True, exist_ok=True)
        stand_in = BotApiStandIn(
            token=token or settings.TELEGRAM_BOT_TOKEN or STANDIN_TOKEN, record_to=record_to
        )
        try:
            stand_in.start(port=port)
        except OSError as error:
            raise CommandError(f"cannot listen on 127.0.0.1:{port}: {error}") from error
        stop = threading.Event()
        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            signal.signal(stop_signal, lambda *_: stop.set())
        self.stdout.write(
            f"Telegram Bot API stand-in at {stand_in.url}: each message it receives is logged "
            f"here and appended to {record_to}.",
        )
        self.stdout.flush()
        stop.wait()
        stand_in.stop()
