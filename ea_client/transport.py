"""Signed HTTP requests to the Veilstop EA API, in the standard library only.

Each attempt of a request is signed afresh (new timestamp, new nonce) over
the same body bytes, so a retry after a lost response is the same request to
the server's idempotent endpoints and a new one to its replay guard.
"""

from __future__ import annotations

import http.client
import json
import math
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from ea_protocol import signing

USER_AGENT = "veilstop-ea-client/1"


class TransportError(Exception):
    """Base class: the request did not produce a usable successful answer."""


class ProtocolError(TransportError):
    """The server gave a final, non-retryable answer (a 4xx, or a malformed reply)."""

    def __init__(self, status: int, code: str, message: str, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.fields: dict[str, Any] = dict(fields or {})


class UnavailableError(TransportError):
    """Every attempt failed with a connection error, a 5xx or a 429.

    The outcome of a POST is unknown: the server may have applied it. Send the
    same body again later; the endpoints are idempotent.
    """

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason if status is None else f"HTTP {status}: {reason}")
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class Response:
    status: int
    # Lower-cased names: HTTP header names are case-insensitive.
    headers: Mapping[str, str] = field(default_factory=dict)
    json: Any = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would re-send the signed headers to wherever it points, and
    # the signature covers the original path anyway, so treat it as an answer.
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        return None


def _json_default(value: object) -> str:
    # Prices and volumes travel as decimal strings; format "f" never emits an exponent.
    if isinstance(value, Decimal):
        return format(value, "f")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_body(body: Mapping[str, Any]) -> bytes:
    """The exact bytes sent and signed for a JSON body: compact, UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=_json_default).encode("utf-8")


class SignedTransport:
    """Sends HMAC-signed requests and retries what is safe to retry.

    * 401 with ``X-Server-Time``: the local clock is assumed wrong; the offset
      is stored for every later request and the request is retried once.
    * connection errors, timeouts, 5xx, 429: retried up to ``max_retries``
      times with exponential backoff (a 429 or 503 waits its ``Retry-After``, capped).
    * any other 4xx: :class:`ProtocolError` at once.
    """

    def __init__(
        self,
        server_url: str,
        key: str,
        secret: str,
        timeout: float = 10,
        max_retries: int = 3,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        retry_after_cap: float = 30.0,
    ) -> None:
        parts = urlsplit(server_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"server_url must be an http(s) URL, got {server_url!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        # A deployment under a path prefix sees (and verifies) the full path.
        self._prefix = parts.path.rstrip("/")
        self.key = key
        self._secret = secret
        self.timeout = timeout
        self.max_retries = max_retries
        self._clock = clock
        self._sleep = sleep
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._retry_after_cap = retry_after_cap
        self.clock_offset = 0.0
        self._opener = urllib.request.build_opener(_NoRedirect())

    def __repr__(self) -> str:
        return f"SignedTransport({self._origin + self._prefix!r}, key={self.key!r})"

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Response:
        """``timeout`` replaces the transport's for this request (a long-poll's must
        exceed its wait)."""
        method = method.upper()
        if not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        # Requested and signed as the same text, percent-encoded once (protocol, section
        # 3): a prefix given as "/veil stop" or as "/veil%20stop" is "/veil%20stop".
        full_path = signing.canonical_path(self._prefix + path)
        query_string = urlencode(query, doseq=True, quote_via=quote) if query else ""
        body_bytes = encode_body(body) if body is not None else b""

        clock_corrected = False
        retries = 0
        while True:
            try:
                response = self._attempt(method, full_path, query_string, body_bytes, timeout or self.timeout)
            except (OSError, http.client.HTTPException) as error:
                # URLError (an OSError) wraps refused connections and DNS
                # failures; timeouts, resets and truncated replies escape
                # urllib as bare OSErrors or HTTPExceptions mid-response.
                reason = str(getattr(error, "reason", error)) or type(error).__name__
                if retries >= self.max_retries:
                    raise UnavailableError(f"connection failed: {reason}") from error
                self._sleep(self._backoff(retries))
                retries += 1
                continue

            if 200 <= response.status < 300:
                return response

            if response.status == 401 and not clock_corrected:
                server_time = _parse_number(response.header(signing.HEADER_SERVER_TIME))
                if server_time is not None:
                    self.clock_offset = server_time - self._clock()
                    clock_corrected = True
                    continue

            if response.status == 429 or response.status >= 500:
                if retries >= self.max_retries:
                    code, message, _ = _error_parts(response)
                    raise UnavailableError(f"{code}: {message}", status=response.status)
                delay = self._backoff(retries)
                if response.status in (429, 503):
                    retry_after = _parse_number(response.header("Retry-After"))
                    if retry_after is not None:
                        delay = min(max(retry_after, 0.0), self._retry_after_cap)
                self._sleep(delay)
                retries += 1
                continue

            code, message, fields = _error_parts(response)
            raise ProtocolError(response.status, code, message, fields)

    def _attempt(self, method: str, path: str, query_string: str, body: bytes, timeout: float) -> Response:
        return self._send(self._signed_request(method, path, query_string, body), timeout)

    def _signed_request(
        self, method: str, path: str, query_string: str, body: bytes
    ) -> urllib.request.Request:
        """One attempt's request: signed now, with a fresh nonce."""
        timestamp = str(int(self._clock() + self.clock_offset))
        nonce = secrets.token_urlsafe(24)
        canonical = signing.canonical_string(
            method=method, path=path, query_string=query_string, timestamp=timestamp, nonce=nonce, body=body
        )
        headers = {
            signing.HEADER_KEY: self.key,
            signing.HEADER_TIMESTAMP: timestamp,
            signing.HEADER_NONCE: nonce,
            signing.HEADER_SIGNATURE: signing.sign(self._secret, canonical),
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if method != "GET":
            headers["Content-Type"] = "application/json"
        url = self._origin + path + (f"?{query_string}" if query_string else "")
        return urllib.request.Request(  # noqa: S310 -- the scheme is checked in __init__
            url, data=body if method != "GET" else None, headers=headers, method=method
        )

    def _send(self, request: urllib.request.Request, timeout: float) -> Response:
        """The server's answer (any status); connection failures raise OSError."""
        try:
            with self._opener.open(request, timeout=timeout) as reply:
                return _response(reply.status, reply.headers.items(), reply.read())
        except urllib.error.HTTPError as error:
            try:
                return _response(error.code, error.headers.items(), error.read())
            finally:
                error.close()

    def _backoff(self, retries: int) -> float:
        return min(self._backoff_base * (2**retries), self._backoff_cap)


def _response(status: int, header_items: Any, raw: bytes) -> Response:
    headers = {name.lower(): value for name, value in header_items}
    if not raw:
        return Response(status, headers, None)
    try:
        payload = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        if 200 <= status < 300:
            raise ProtocolError(status, "invalid_response", "the server's reply is not JSON") from error
        # Proxies answer errors in HTML; the status alone still decides what to do.
        payload = None
    return Response(status, headers, payload)


def _error_parts(response: Response) -> tuple[str, str, dict[str, Any]]:
    error = response.json.get("error") if isinstance(response.json, dict) else None
    if isinstance(error, dict):
        fields = error.get("fields")
        return (
            str(error.get("code", f"http_{response.status}")),
            str(error.get("message", "")),
            fields if isinstance(fields, dict) else {},
        )
    return f"http_{response.status}", "no error body", {}


def _parse_number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None
