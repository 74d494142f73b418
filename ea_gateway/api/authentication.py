"""HMAC authentication for EAs and price feeds (SPEC §4, docs/ea-protocol.md).

Every failure is the same 401. A request, step by step:
1. the four headers are present and well-formed;
2. the device: this process's copy if younger than EA_DEVICE_CACHE_SECONDS, else
   its generation from Redis, then the row (``ea_gateway.selectors``; an unknown key
   is remembered too, so it costs what a known one does);
3. the key names an active, unrevoked device, the timestamp is within
   ±HMAC_CLOCK_SKEW_SECONDS, the signature matches (constant time; all three
   computed before any is refused, against a dummy secret for an unknown key). A
   refusal from a cached copy first asks Redis whether the generation moved (a copy
   from before a rotation knows only the old secret) and, if it did, reads again;
4. one Redis round trip (``ea_gateway.api.admission``, a Lua script): if the device's
   generation moved since the copy was read (revoked, rotated), nothing is consumed and
   steps 2-3 run again on a fresh read; otherwise the nonce is taken (``SET NX``, kept
   for twice the skew window), the request is counted against the device's rate (a 429
   with Retry-After, raised by ``ea_gateway.api.throttling``), and the last-seen mark is
   taken if free. Only a verified request consumes its nonce, so a forged one cannot
   burn a nonce that a genuine one is about to use. Before the nonce, the replay fence:
   nonces live only in Redis, so the timestamps a device had accepted so far have a
   bound in PostgreSQL (``ea_gateway.models.ReplayFence``), raised (one statement,
   committed) half to all of HMAC_REPLAY_FENCE_SECONDS ahead before a request signed
   above it is accepted. Redis keeps a copy per device stamped with the server's
   identity (run id, replication id and epoch marker, read by the script itself); a
   copy from another identity (a restart, a promoted replica, a flush, a lost marker:
   each may have lost nonces) or none is replaced from PostgreSQL, and requests signed
   at or below the bound the earlier servers left (the floor) are refused (503 with
   Retry-After): any of them may have been accepted with a nonce that this server does
   not hold. For a long-poll view answering without a wait (``pending_topic``), the
   same round trip reads its wake generation and "nothing pending" marker
   (``ea_gateway.wake`` step 1): an idle EA's request then costs one round trip, not
   two. It is read before any fetch of the request, as step 1 requires, and the view
   ignores it inside an open transaction;
5. ``last_seen_at`` is written when the mark was free: at most once every
   LAST_SEEN_RESOLUTION_SECONDS per device, whichever process answers.
If Redis cannot answer, the request is refused with 503: never let a replay
through because the nonce store is down.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import connection
from django.utils import timezone
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication

from core.redis import get_redis
from ea_gateway.api.admission import DEVICE_GONE, FENCED, REPLAYED, STALE, UNSETTLED, admit
from ea_gateway.models import Device
from ea_gateway.selectors import (
    DEVICE_GENERATION_KEY,
    DeviceEntry,
    device_copy,
    device_entry_cached,
    device_entry_load,
)
from ea_gateway.wake import PendingCheck
from ea_protocol import signing

logger = logging.getLogger(__name__)

KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,40}")
TIMESTAMP_PATTERN = re.compile(r"[0-9]{1,12}")
NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,64}")
SIGNATURE_PATTERN = re.compile(r"[0-9a-f]{64}")
# A generation that moves again while a request re-reads its device (a rotation racing a
# revoke) is refused as unavailable after this many reads, not looped on.
MAX_DEVICE_READS = 3

# Verifying against this when the key is unknown keeps the timing of
# "unknown key" and "bad signature" alike.
_DUMMY_SECRET = "veilstop-no-such-device"  # noqa: S105 - not a credential


class AuthenticationUnavailable(exceptions.APIException):
    status_code = 503
    default_detail = "Authentication is temporarily unavailable; retry shortly."
    default_code = "unavailable"


class ReplayFenced(AuthenticationUnavailable):
    """Signed no later than the device's replay fence after Redis lost its nonces: the
    request may be a replay, so it is refused; a genuine EA signs again once its clock
    has passed the fence, which ``Retry-After`` (``wait``, seconds) says."""

    def __init__(self, wait: int):
        super().__init__()
        self.wait = wait


@dataclass(frozen=True)
class DevicePrincipal:
    """``request.user`` for a device: authenticated, never staff."""

    device: Device
    retry_after_ms: int = 0  # > 0: over the device's rate (ea_gateway.api.throttling)
    pending: PendingCheck | None = None  # read with the admission (step 4), for the view
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
        django_request = request._request  # each attribute read through DRF's proxy costs
        meta = django_request.META
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

        canonical = signing.canonical_string(
            method=django_request.method,
            path=signing.encode_path(django_request.path),  # WSGI gives it decoded
            query_string=meta.get("QUERY_STRING", ""),
            timestamp=timestamp,
            nonce=nonce,
            body=django_request.body,
        )
        skew = abs(time.time() - int(timestamp))
        entry = device_entry_cached(key_id=key_id)
        fresh = entry is None
        if entry is None:
            entry = device_entry_load(key_id=key_id, generation=_unavailable_if_down(_generation, key_id))
        for _read in range(MAX_DEVICE_READS):
            refusal = _refusal(entry, skew=skew, canonical=canonical, signature=signature)
            if refusal is None:
                topic = _wake_topic(request, entry.device)
                outcome = _unavailable_if_down(
                    admit, entry=entry, nonce=nonce, timestamp=int(timestamp), wake_topic=topic
                )
                if outcome[0] != STALE:
                    return _admitted(entry, outcome, int(timestamp))
                generation = outcome[1].decode()
            elif fresh:
                raise _fail(refusal, key_id)
            else:
                # A copy read before a rotation knows the old secret only: look again
                # before refusing (every refusal from a cached copy costs this read,
                # known key or not).
                generation = _unavailable_if_down(_generation, key_id)
                if generation == entry.generation:
                    raise _fail(refusal, key_id)
            entry = device_entry_load(key_id=key_id, generation=generation)
            fresh = True
        logger.warning("EA authentication unavailable: device %s kept changing while read", key_id)
        raise AuthenticationUnavailable()


def _refusal(entry: DeviceEntry, *, skew: float, canonical: str, signature: str) -> str | None:
    device = entry.device
    usable = device is not None and device.active and device.revoked_at is None
    signature_ok = signing.signature_matches(device.secret if usable else _DUMMY_SECRET, canonical, signature)
    if not usable:
        return "unknown or revoked key"
    if skew > settings.HMAC_CLOCK_SKEW_SECONDS:
        return f"timestamp off by {int(skew)} s"
    if not signature_ok:
        return "bad signature"
    return None


def _admitted(entry: DeviceEntry, outcome: list, timestamp: int) -> tuple[DevicePrincipal, Device]:
    device = entry.device
    if outcome[0] == REPLAYED:
        raise _fail("nonce replayed", device.key_id)
    if outcome[0] == DEVICE_GONE:
        raise _fail("device deleted", device.key_id)
    if outcome[0] == UNSETTLED:
        raise AuthenticationUnavailable()
    if outcome[0] == FENCED:
        wait = max(1, int(outcome[1]) - timestamp + 1)
        logger.info("EA request refused by the replay fence for %s s (key %s)", wait, device.key_id[:40])
        raise ReplayFenced(wait)
    _, retry_after_ms, last_seen_free, *pending = outcome
    if last_seen_free:
        Device.objects.filter(pk=device.pk).update(last_seen_at=timezone.now())
    device = device_copy(device)
    check = pending[0] if pending else None
    return DevicePrincipal(device, retry_after_ms=retry_after_ms, pending=check), device


def _generation(key_id: str) -> str:
    return (get_redis().get(DEVICE_GENERATION_KEY.format(key_id=key_id)) or b"").decode()


def _wake_topic(request, device: Device) -> tuple[str, int] | None:
    """The wake (kind, key) whose step 1 the view will need (its ``pending_topic``), or
    None: it waits, looks at nothing, or runs inside a transaction (a test's)."""
    view = (getattr(request, "parser_context", None) or {}).get("view")
    topic = getattr(view, "pending_topic", None)
    if topic is None or connection.in_atomic_block:
        return None
    return topic(request, device)


def _unavailable_if_down(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except RedisError:
        logger.warning("EA authentication unavailable: Redis unreachable")
        raise AuthenticationUnavailable() from None
