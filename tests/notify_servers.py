"""Real local servers for the notification tests: the product's stand-in for Telegram's Bot
API (monitoring.notifications.standin, a threaded ``http.server`` answering as Telegram's
servers do), here with answers a test scripts per chat, and an SMTP server (aiosmtpd's
Controller)."""

from __future__ import annotations

import email
from email.message import Message

import pytest
from aiosmtpd.controller import Controller

from monitoring.notifications.standin import BotApiStandIn, api_error

BOT_TOKEN = "123456:stand-in-token"


class TelegramStandIn(BotApiStandIn):
    """The product's stand-in; a test scripts answers per chat:
    ``script(chat_id, (429, {"retry_after": 2}), ...)``; a chat with nothing scripted is
    answered as the stand-in answers (200)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(token=BOT_TOKEN, **kwargs)
        self.scripted: dict[str, list[tuple[int, dict]]] = {}

    def script(self, chat_id: str, *answers: tuple[int, dict]) -> None:
        with self.lock:
            self.scripted.setdefault(str(chat_id), []).extend(answers)

    def send_message(self, params: dict[str, str]) -> tuple[int, dict]:
        with self.lock:
            queued = self.scripted.get(params.get("chat_id", ""))
            scripted = queued.pop(0) if queued else None
        if scripted is not None:
            return _scripted(*scripted)
        return super().send_message(params)


_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    403: "Forbidden: bot was blocked by the user",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def _scripted(status: int, parameters: dict) -> tuple[int, dict]:
    if status == 200:
        return 200, {"ok": True, "result": True}
    parameters = dict(parameters)
    description = parameters.pop("description", _DESCRIPTIONS.get(status, "Error"))
    return api_error(status, description.format(**parameters), parameters)


@pytest.fixture
def telegram(settings):
    """The Bot API stand-in, running; the product's settings point at it."""
    stand_in = TelegramStandIn().start()
    settings.TELEGRAM_BOT_TOKEN = stand_in.token
    settings.TELEGRAM_API_URL = stand_in.url
    yield stand_in
    stand_in.stop()


class Mailbox:
    """aiosmtpd handler: keeps what it accepts; refuses the addresses in ``refused`` (550)."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.refused: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refused:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.content)
        message["X-Envelope-To"] = ", ".join(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Message]:
        return [message for message in self.messages if address in message["X-Envelope-To"]]


@pytest.fixture
def mailbox(settings, unused_tcp_port):
    """A real SMTP server; the product's e-mail settings point at it (as EMAIL_URL would)."""
    handler = Mailbox()
    controller = Controller(handler, hostname="127.0.0.1", port=unused_tcp_port)
    controller.start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = unused_tcp_port
    settings.EMAIL_CONFIGURED = True
    yield handler
    controller.stop()


def body_of(message: Message) -> str:
    return message.get_payload(decode=True).decode()
