"""Real local servers for the notification tests: a stand-in for Telegram's Bot API (a
threaded ``http.server`` speaking the methods the product calls, as Telegram's servers
answer them) and an SMTP server (aiosmtpd's Controller)."""

from __future__ import annotations

import email
import json
import threading
import time
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

import pytest
from aiosmtpd.controller import Controller

BOT_TOKEN = "123456:stand-in-token"


@dataclass
class BotCall:
    method: str
    params: dict[str, str]
    at: float  # time.monotonic() when it arrived
    status: int  # what the stand-in answered


@dataclass
class TelegramStandIn:
    """Answers ``sendMessage``, ``answerCallbackQuery`` and ``setWebhook`` as Telegram does. A test
    scripts answers per chat: ``script(chat_id, (429, {"retry_after": 2}), ...)``; a chat
    with nothing scripted gets 200."""

    token: str = BOT_TOKEN
    calls: list[BotCall] = field(default_factory=list)
    scripted: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def script(self, chat_id: str, *answers: tuple[int, dict]) -> None:
        with self.lock:
            self.scripted.setdefault(str(chat_id), []).extend(answers)

    def sent(self, chat_id: str | None = None) -> list[str]:
        """Texts delivered (answered 200), to ``chat_id`` or to anyone."""
        with self.lock:
            return [
                call.params["text"]
                for call in self.calls
                if call.method == "sendMessage"
                and call.status == 200
                and (chat_id is None or call.params["chat_id"] == str(chat_id))
            ]

    def attempts(self, chat_id: str) -> list[BotCall]:
        with self.lock:
            return [
                call
                for call in self.calls
                if call.method == "sendMessage" and call.params["chat_id"] == str(chat_id)
            ]

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, dict]:
        token, _, method = path.removeprefix("/bot").partition("/")
        if token != self.token:
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        if method == "sendMessage":
            if not params.get("chat_id") or not params.get("text"):
                return _error(400, {"description": "Bad Request: message text is empty"})
            with self.lock:
                queued = self.scripted.get(params["chat_id"])
                scripted = queued.pop(0) if queued else None
            if scripted is not None:
                return _error(*scripted)
            return 200, {
                "ok": True,
                "result": {
                    "message_id": len(self.calls) + 1,
                    "date": int(time.time()),
                    "chat": {"id": params["chat_id"], "type": "private"},
                    "text": params["text"],
                },
            }
        if method in ("answerCallbackQuery", "setWebhook"):
            return 200, {"ok": True, "result": True}
        return 404, {"ok": False, "error_code": 404, "description": "Not Found"}


_DESCRIPTIONS = {
    400: "Bad Request: chat not found",
    403: "Forbidden: bot was blocked by the user",
    429: "Too Many Requests: retry after {retry_after}",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


def _error(status: int, parameters: dict) -> tuple[int, dict]:
    if status == 200:
        return 200, {"ok": True, "result": True}
    parameters = dict(parameters)
    description = parameters.pop("description", _DESCRIPTIONS.get(status, "Error"))
    body = {"ok": False, "error_code": status, "description": description.format(**parameters)}
    if parameters:
        body["parameters"] = parameters
    return status, body


def _handler_for(stand_in: TelegramStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if raw and self.headers.get("Content-Type", "").startswith("application/json"):
                params.update({key: str(value) for key, value in json.loads(raw).items()})
            elif raw:
                params.update(parse_qsl(raw.decode()))
            status, body = stand_in.answer(url.path, params)
            with stand_in.lock:
                stand_in.calls.append(BotCall(url.path.rpartition("/")[2], params, time.monotonic(), status))
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = _handle
        do_POST = _handle

        def log_message(self, *args) -> None:  # quiet
            pass

    return Handler


@pytest.fixture
def telegram(settings):
    """The Bot API stand-in, running; the product's settings point at it."""
    stand_in = TelegramStandIn()
    stand_in.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(stand_in))
    thread = threading.Thread(target=stand_in.server.serve_forever, daemon=True)
    thread.start()
    settings.TELEGRAM_BOT_TOKEN = stand_in.token
    settings.TELEGRAM_API_URL = stand_in.url
    yield stand_in
    stand_in.server.shutdown()
    stand_in.server.server_close()


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
