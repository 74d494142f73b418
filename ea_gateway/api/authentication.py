"""HMAC authentication for EAs and price feeds (SPEC §4, docs/ea-protocol.md).

Checks, in this order, each failure the same 401:
1. the four headers are present and well-formed;
2. the key id names an active, unrevoked device;
3. the timestamp is within ±HMAC_CLOCK_SKEW_SECONDS of the server clock;
4. the signature matches (constant-time);
5. the nonce was never used by this device (Redis ``SET NX``, kept for twice
   the skew window). Only a verified request consumes its nonce, so a forged
   request cannot burn a nonce that a genuine one is about to use.
If Redis cannot answer, the request is refused with 503: never let a replay
through because the nonce store is down.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.utils import timezone
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from core.redis import get_redis
from ea_gateway.models import Device
from ea_gateway.selectors import device_by_key
from ea_protocol import signing

logger = logging.getLogger(__name__)

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,40}")
TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,12}")
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
SIGNATURE_PATTERN = re.compile(r"[0-9a-f]{64}")
NONCE_KEY = "veilstop:nonce:{device}:{nonce}"
LAST_SEEN_RESOLUTION_SECONDS = 10
# Verifying against this when the key is unknown keeps the timing of
# "unknown key" and "bad signature" alike.
_DUMMY_SECRET = "veilstop-no-such-device"  # noqa: S105 - not a credential


class AuthenticationUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "Authentication is temporarily unavailable; retry shortly."
    default_code = "unavailable"


@dataclass(frozen=True)
class DevicePrincipal:
    """``request.user`` for a device: authenticated, never staff."""

    device: Device
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    is_anonymous: bool = False

    @property
    def pk(self) -> int:
        return self.device.pk

    def get_username(self) -> str:
        return self.device.key_id

    def has_perm(self, perm: str, obj=None) -> bool:
        return False


def _fail(reason: str, key_id: str = "-") -> exceptions.AuthenticationFailed:
    # The reason is for the operator's log only; the client always sees the same 401.
    logger.info("EA authentication refused: %s (key %s)", reason, key_id[:40])
    return exceptions.AuthenticationFailed("Authentication failed.")


class HMACDeviceAuthentication(BaseAuthentication):
    www_authenticate_realm = "veilstop"

    def authenticate_header(self, request) -> str:
        return 'HMAC-SHA256 realm="veilstop"'

    def authenticate(self, request):
        meta = request.META
        key_id = meta.get("HTTP_X_DEVICE_KEY", "")
        timestamp = meta.get("HTTP_X_TIMESTAMP", "")
        nonce = meta.get("HTTP_X_NONCE", "")
        signature = meta.get("HTTP_X_SIGNATURE", "")
        if not (
            KEY_PATTERN.fullmatch(key_id)
            and TIMESTAMP_PATTERN.fullmatch(timestamp)
            and NONCE_PATTERN.fullmatch(nonce)
            and SIGNATURE_PATTERN.fullmatch(signature)
        ):
            raise _fail("missing or malformed headers", key_id if KEY_PATTERN.fullmatch(key_id) else "-")

        device = device_by_key(key_id=key_id)
        usable = device is not None and device.active and device.revoked_at is None
        secret = device.secret if usable else _DUMMY_SECRET

        skew = abs(time.time() - int(timestamp))
        canonical = signing.canonical_string(
            method=request.method,
            path=request.path,
            query_string=meta.get("QUERY_STRING", ""),
            timestamp=timestamp,
            nonce=nonce,
            body=request.body,
        )
        signature_ok = signing.signature_matches(secret, canonical, signature)
        if not usable:
            raise _fail("unknown or revoked key", key_id)
        if skew > settings.HMAC_CLOCK_SKEW_SECONDS:
            raise _fail(f"timestamp off by {int(skew)} s", key_id)
        if not signature_ok:
            raise _fail("bad signature", key_id)
        self._consume_nonce(device, nonce)
        self._touch(device)
        return DevicePrincipal(device), device

    @staticmethod
    def _consume_nonce(device: Device, nonce: str) -> None:
        ttl = 2 * settings.HMAC_CLOCK_SKEW_SECONDS + 60
        try:
            fresh = get_redis().set(NONCE_KEY.format(device=device.pk, nonce=nonce), b"1", nx=True, ex=ttl)
        except RedisError:
            logger.warning("EA authentication unavailable: Redis unreachable")
            raise AuthenticationUnavailable() from None
        if not fresh:
            raise _fail("nonce replayed", device.key_id)

    @staticmethod
    def _touch(device: Device) -> None:
        """last_seen_at, written at most every few seconds per device."""
        now = timezone.now()
        stale_before = now - timedelta(seconds=LAST_SEEN_RESOLUTION_SECONDS)
        if device.last_seen_at is None or device.last_seen_at < stale_before:
            Device.objects.filter(pk=device.pk).update(last_seen_at=now)
