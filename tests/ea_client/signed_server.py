"""A real HTTP server on 127.0.0.1 that authenticates like Veilstop does.

It checks every request's signature with ``ea_protocol.signing`` (the code the
server uses), records what arrived, and answers through a handler. Failing
authentication gets the generic 401 with ``X-Server-Time``, before the
handler runs, as on the real server. ``FakeVeilstop`` is a handler with the
EA endpoints' semantics (idempotent acks, 409 on conflict, leased commands)
and injectable faults.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ea_protocol import signing

KEY = "dev_4f9a1c"
SECRET = "s3cret-for-tests-only"
SERVER_NOW = 1_763_770_000.0
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
UNAUTHENTICATED = {"error": {"code": "not_authenticated", "message": "Authentication failed."}}
# Returned by a handler: close the connection without answering, as when a
# response is lost on the way back.
DROP = object()


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    body: bytes
    authenticated: bool

    @property
    def nonce(self) -> str:
        return self.headers.get("x-nonce", "")

    @property
    def timestamp(self) -> str:
        return self.headers.get("x-timestamp", "")

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


Reply = tuple[int, dict[str, str], Any]
Handler = Callable[[Seen], "Reply | object"]


class SignedServer:
    def __init__(
        self,
        keys: dict[str, str],
        handler: Handler,
        *,
        now: Callable[[], float] = time.time,
        skew_seconds: int = 300,
    ) -> None:
        self.keys = keys
        self.handler = handler
        self.now = now
        self.skew_seconds = skew_seconds
        self.seen: list[Seen] = []
        self._nonces: set[str] = set()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._request_handler_class())
        self._httpd.daemon_threads = True
        # A short poll interval keeps shutdown (and so each test) fast.
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> SignedServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def authenticate(self, method: str, path: str, query: str, headers: dict[str, str], body: bytes) -> bool:
        secret = self.keys.get(headers.get("x-device-key", ""))
        timestamp = headers.get("x-timestamp", "")
        nonce = headers.get("x-nonce", "")
        if secret is None or not timestamp.isdigit() or not NONCE_PATTERN.fullmatch(nonce):
            return False
        if abs(int(timestamp) - self.now()) > self.skew_seconds:
            return False
        canonical = signing.canonical_string(
            method=method, path=path, query_string=query, timestamp=timestamp, nonce=nonce, body=body
        )
        if not signing.signature_matches(secret, canonical, headers.get("x-signature", "")):
            return False
        with self._lock:
            if nonce in self._nonces:
                return False
            self._nonces.add(nonce)
        return True

    def _request_handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {name.lower(): value for name, value in self.headers.items()}
                authenticated = server.authenticate(self.command, parts.path, parts.query, headers, body)
                seen = Seen(self.command, parts.path, parts.query, headers, body, authenticated)
                with server._lock:
                    server.seen.append(seen)
                if not authenticated:
                    reply: Reply | object = (401, {"X-Server-Time": str(int(server.now()))}, UNAUTHENTICATED)
                else:
                    reply = server.handler(seen)
                if reply is DROP:
                    self.close_connection = True
                    return
                status, extra_headers, payload = reply  # type: ignore[misc]
                raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(raw)))
                    for name, value in extra_headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(raw)
                except OSError:
                    # The client gave up (timeout test); nothing to answer to.
                    self.close_connection = True

        return _Handler


Serve = Callable[..., SignedServer]


class Sleeps(list[float]):
    """An injectable ``sleep`` that records instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def scripted(*replies: Reply | object) -> Handler:
    """A handler answering with ``replies`` in order, then 200 ``{}``."""
    queue = deque(replies)

    def handle(seen: Seen) -> Reply | object:
        return queue.popleft() if queue else (200, {}, {})

    return handle


def error(status: int, code: str, message: str = "", **headers: str) -> Reply:
    return (status, headers, {"error": {"code": code, "message": message}})


@dataclass
class FakeVeilstop:
    """The EA endpoints' semantics, in memory.

    ``faults[path]`` is a queue consumed one per request to that path:
    ``"unavailable"`` answers 503 without applying the request; ``"lost"``
    applies it and then drops the connection (the answer is lost);
    ``"conflict"`` answers 409 without applying it.

    A poll with ``?wait=N`` waits up to N seconds for something to hand out
    (``add_approval`` / ``add_command`` wake it), as the server does; with
    ``honor_wait`` off it answers at once, as a server that ignores ``wait``.
    """

    approvals: dict[int, dict[str, Any]] = field(default_factory=dict)
    commands: dict[int, dict[str, Any]] = field(default_factory=dict)
    acks: dict[int, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    close_acks: dict[int, tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict)
    leased: set[int] = field(default_factory=set)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    faults: dict[str, deque[str]] = field(default_factory=dict)
    server_time: int = 1_763_770_000
    honor_wait: bool = True
    _position_ids: Iterator[int] = field(default_factory=lambda: itertools.count(9001))
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def add_approval(self, approval_id: int, *, instrument: str = "XAUUSD", direction: str = "buy") -> None:
        self.approvals[approval_id] = {
            "approval_id": approval_id,
            "signal_id": 100 + approval_id,
            "execution_params": {
                "instrument": instrument,
                "direction": direction,
                "entry_price": "2650.5",
                "volume": "0.10",
                "ttl_minutes": 30,
            },
        }
        self._wake()

    def add_command(self, command_id: int, *, ticket: str, volume: str = "0.10") -> None:
        self.commands[command_id] = {
            "command_id": command_id,
            "position_id": 9001,
            "broker_ticket": ticket,
            "volume": volume,
            "reason": "risk limit",
        }
        self._wake()

    def _wake(self) -> None:
        with self._changed:
            self._changed.notify_all()

    def expire_leases(self) -> None:
        self.leased.clear()

    def inject(self, path: str, *faults: str) -> None:
        self.faults.setdefault(path, deque()).extend(faults)

    def __call__(self, seen: Seen) -> Reply | object:
        queue = self.faults.get(seen.path)
        fault = queue.popleft() if queue else None
        if fault == "unavailable":
            return error(503, "unavailable", "try again")
        if fault == "conflict":
            return error(409, "conflict", "a different acknowledgement is recorded")
        reply = self._apply(seen)
        wait = float(parse_qs(seen.query_string).get("wait", ["0"])[0]) if self.honor_wait else 0.0
        deadline = time.monotonic() + wait
        with self._changed:
            while _nothing_in(reply) and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
                reply = self._apply(seen)
        return DROP if fault == "lost" else reply

    def _apply(self, seen: Seen) -> Reply:
        route = (seen.method, seen.path)
        if route == ("GET", "/api/v1/client/poll"):
            unacked = [item for approval_id, item in self.approvals.items() if approval_id not in self.acks]
            return 200, {}, {"approvals": unacked}
        if route == ("GET", "/api/v1/client/close-commands"):
            due = [
                item
                for command_id, item in self.commands.items()
                if command_id not in self.close_acks and command_id not in self.leased
            ]
            self.leased.update(item["command_id"] for item in due)
            return 200, {}, {"commands": due}
        if route == ("POST", "/api/v1/client/ack"):
            return self._acknowledge(seen.json, "approval_id", self.approvals, self.acks)
        if route == ("POST", "/api/v1/client/close-ack"):
            return self._acknowledge(seen.json, "command_id", self.commands, self.close_acks)
        if route == ("POST", "/api/v1/client/heartbeat"):
            self.heartbeats.append(seen.json)
            return 200, {}, {"server_time": self.server_time}
        return error(404, "not_found", "no such endpoint")

    def _acknowledge(
        self,
        body: dict[str, Any],
        id_field: str,
        known: dict[int, dict[str, Any]],
        recorded: dict[int, tuple[dict[str, Any], dict[str, Any]]],
    ) -> Reply:
        item_id = body[id_field]
        if item_id not in known:
            return error(404, "not_found", "not found")
        if item_id in recorded:
            first_body, answer = recorded[item_id]
            if first_body != body:
                return error(409, "conflict", "a different acknowledgement is recorded")
            return 200, {}, answer
        answer = {id_field: item_id, "status": body["status"]}
        if id_field == "approval_id" and body["status"] == "placed":
            answer["position_id"] = next(self._position_ids)
        recorded[item_id] = (body, answer)
        return 200, {}, answer


def _nothing_in(reply: Reply) -> bool:
    status, _, payload = reply
    return status == 200 and isinstance(payload, dict) and payload in ({"approvals": []}, {"commands": []})
