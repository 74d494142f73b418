"""A local stand-in for Telegram's Bot API: a threaded HTTP server answering the methods
the product calls (``sendMessage``; ``setWebhook``, ``answerCallbackQuery``, ``getMe``)
as Telegram's servers answer them, keeping every message it is sent (in memory, and one
JSON line per message in a file when given one) and logging one readable line for each.

``make run`` runs it when no TELEGRAM_BOT_TOKEN is set (``manage.py telegram_standin``)
and points the product at it, so a developer sees what each client would have received;
the tests run it in-process. Standard library only."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

# The token `make run` gives web and worker when it runs the stand-in.
STANDIN_TOKEN = "standin"  # noqa: S105 - not a secret: what the stand-in answers for
MESSAGE_MAX_LENGTH = 4096  # Telegram's limit, in characters
BOT_USER = {"id": 1, "is_bot": True, "first_name": "Veilstop stand-in", "username": "veilstop_standin_bot"}

logger = logging.getLogger("veilstop.telegram_standin")


@dataclass(frozen=True)
class BotCall:
    method: str
    params: dict[str, str]
    at: float  # time.monotonic() when it arrived
    status: int  # what the stand-in answered


class BotApiStandIn:
    """The Bot API for one token, at ``url`` once ``start``-ed. ``calls`` holds every request
    with its answer; ``sent`` the texts delivered."""

    def __init__(self, *, token: str = STANDIN_TOKEN, record_to: Path | None = None) -> None:
        if not token:
            raise ValueError("the stand-in needs a token to answer for")
        self.token = token
        self.record_to = record_to
        self.calls: list[BotCall] = []
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self._message_ids = 0

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self, *, host: str = "127.0.0.1", port: int = 0) -> BotApiStandIn:
        """Listen (port 0: any free one) and serve on a daemon thread."""
        self.server = ThreadingHTTPServer((host, port), _handler_for(self))
        threading.Thread(target=self.server.serve_forever, name="telegram-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

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
                if call.method == "sendMessage" and call.params.get("chat_id") == str(chat_id)
            ]

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, dict]:
        """The HTTP status and JSON body Telegram would answer ``path`` with."""
        token, _, method = path.removeprefix("/bot").partition("/")
        if token != self.token:
            return api_error(401, "Unauthorized")
        if method == "sendMessage":
            return self.send_message(params)
        if method in ("answerCallbackQuery", "setWebhook", "deleteWebhook"):
            return 200, {"ok": True, "result": True}
        if method == "getMe":
            return 200, {"ok": True, "result": BOT_USER}
        return api_error(404, "Not Found")

    def send_message(self, params: dict[str, str]) -> tuple[int, dict]:
        chat_id, text = params.get("chat_id", ""), params.get("text", "")
        if not chat_id:
            return api_error(400, "Bad Request: chat_id is empty")
        if not text.strip():
            return api_error(400, "Bad Request: message text is empty")
        if len(text) > MESSAGE_MAX_LENGTH:
            return api_error(400, "Bad Request: message is too long")
        with self.lock:
            self._message_ids += 1
            message = {
                "message_id": self._message_ids,
                "from": BOT_USER,
                "chat": {"id": _chat_id(chat_id), "type": "private"},
                "date": int(time.time()),
                "text": text,
            }
            if params.get("reply_markup"):
                message["reply_markup"] = json.loads(params["reply_markup"])
            self._record(message)
        return 200, {"ok": True, "result": message}

    def _record(self, message: dict) -> None:
        """Under the lock: one JSON line per message (the file's lines stay whole and in order)."""
        flat = " / ".join(line.strip() for line in message["text"].splitlines() if line.strip())
        logger.info("to chat %s: %s", message["chat"]["id"], flat)
        if self.record_to is not None:
            line = {"at": datetime.now(UTC).isoformat(), **message}
            with self.record_to.open("a", encoding="utf-8") as out:
                out.write(json.dumps(line, ensure_ascii=False) + "\n")


def api_error(status: int, description: str, parameters: dict | None = None) -> tuple[int, dict]:
    """An error as the Bot API words it: ``{"ok": false, "error_code", "description"[, "parameters"]}``."""
    body = {"ok": False, "error_code": status, "description": description}
    if parameters:
        body["parameters"] = parameters
    return status, body


def _chat_id(value: str) -> int | str:
    """Telegram's chat ids are integers; a ``@channel`` name stays as given."""
    return int(value) if value.lstrip("-").isdigit() else value


def _handler_for(stand_in: BotApiStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            url = urlsplit(self.path)
            params = dict(parse_qsl(url.query))
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                if raw and self.headers.get("Content-Type", "").startswith("application/json"):
                    params.update({key: _text(value) for key, value in json.loads(raw).items()})
                elif raw:
                    params.update(parse_qsl(raw.decode()))
                status, body = stand_in.answer(url.path, params)
            except (ValueError, AttributeError):  # a body that is not JSON or a form, bad reply_markup
                status, body = api_error(400, "Bad Request: can't parse request")
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

        def log_message(self, *args) -> None:  # one line per message is logged by the stand-in itself
            pass

    return Handler


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)
