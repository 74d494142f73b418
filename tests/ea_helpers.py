"""Signed requests for tests, made the way an EA makes them (ea_protocol.signing)."""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from django.test import Client as DjangoClient

from ea_gateway.choices import DeviceRole
from ea_gateway.services import IssuedCredentials, device_create
from ea_protocol import signing
from signals_app.events import Actor
from tests.factories import ClientFactory


def make_device(*, client=None, role: str = DeviceRole.EA, name: str = "EA") -> IssuedCredentials:
    if role == DeviceRole.EA and client is None:
        client = ClientFactory()
    return device_create(name=name, role=role, client=client, by=Actor.system("tests"))


def signed_headers(
    *,
    key: str,
    secret: str,
    method: str,
    path: str,
    query_string: str = "",
    body: bytes = b"",
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    timestamp_text = str(int(time.time()) if timestamp is None else timestamp)
    nonce = nonce or secrets.token_urlsafe(24)
    canonical = signing.canonical_string(
        method=method, path=path, query_string=query_string, timestamp=timestamp_text, nonce=nonce, body=body
    )
    return {
        signing.HEADER_KEY: key,
        signing.HEADER_TIMESTAMP: timestamp_text,
        signing.HEADER_NONCE: nonce,
        signing.HEADER_SIGNATURE: signing.sign(secret, canonical),
    }


def encode(body: Any) -> bytes:
    def default(value):
        if isinstance(value, Decimal):
            return str(value)
        raise TypeError(type(value))

    return json.dumps(body, separators=(",", ":"), default=default).encode()


@dataclass
class EA:
    """A device speaking the protocol through Django's test client."""

    credentials: IssuedCredentials
    http: DjangoClient

    @property
    def device(self):
        return self.credentials.device

    def request(
        self, method: str, path: str, body: Any = None, query: dict | None = None, **header_overrides
    ):
        raw = b"" if body is None else (body if isinstance(body, bytes) else encode(body))
        query_string = urlencode(query or {})
        headers = signed_headers(
            key=self.device.key_id,
            secret=self.credentials.secret,
            method=method,
            path=path,
            query_string=query_string,
            body=raw,
        )
        headers.update(header_overrides)
        url = f"{path}?{query_string}" if query_string else path
        return self.http.generic(method, url, raw, content_type="application/json", headers=headers)

    def poll(self):
        return self.request("GET", "/api/v1/client/poll")

    def ack(self, body):
        return self.request("POST", "/api/v1/client/ack", body)

    def close_commands(self):
        return self.request("GET", "/api/v1/client/close-commands")

    def close_ack(self, body):
        return self.request("POST", "/api/v1/client/close-ack", body)

    def heartbeat(self, body):
        return self.request("POST", "/api/v1/client/heartbeat", body)

    def quotes(self, body):
        return self.request("POST", "/api/v1/feed/quotes", body)


def ea_for(credentials: IssuedCredentials) -> EA:
    return EA(credentials, DjangoClient())
