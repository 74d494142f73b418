from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from ea_gateway.models import Device
from positions.choices import GuardState
from positions.models import ClientGuard
from signals_app.choices import ApprovalStatus, SignalStatus
from signals_app.models import Approval


def approvals_for_poll(*, device: Device, limit: int = 50) -> QuerySet[Approval]:
    """Approved, unexpired approvals of this device's client that no EA has filled yet;
    none while the client's risk guard is tripped (``positions.guards``)."""
    return (
        Approval.objects.filter(
            ~Exists(ClientGuard.objects.filter(client_id=OuterRef("client_id"), state=GuardState.TRIPPED)),
            client_id=device.client_id,
            client__active=True,
            status=ApprovalStatus.APPROVED,
            expires_at__gt=timezone.now(),
            signal__status=SignalStatus.PUBLISHED,
            position__isnull=True,
        )
        .select_related("signal__instrument")
        .order_by("expires_at", "pk")[:limit]
    )


def device_by_key(*, key_id: str) -> Device | None:
    return Device.objects.filter(key_id=key_id).first()


# --- the devices an EA request authenticates against, cached per process -------------
#
# Signed requests look their device up by key id on every call. Each process keeps what
# it read for EA_DEVICE_CACHE_SECONDS, stamped with the device's *generation*: a Redis
# value that ``ea_gateway.services`` replaces, before and after the commit, whenever a
# device's credentials change (revoke, rotate). The authentication reads the generation
# before it reads the row, and checks it again in the same Redis round trip that
# consumes the nonce (``ea_gateway.api.authentication``): an entry read before a change
# never authenticates a request after it, whatever is left of its time. The time limit
# only bounds changes made around the services (an UPDATE by hand). A key that names no
# device is remembered as such too, for as long (so it costs what a known key costs):
# key ids are random, so no EA asks for one before it exists.

DEVICE_GENERATION_KEY = "veilstop:device:generation:{key_id}"
DEVICE_CACHE_MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class DeviceEntry:
    """A device as read (``None``: no such key), and its generation when it was read."""

    device: Device | None
    generation: str
    loaded_at: float


_device_entries: dict[str, DeviceEntry] = {}
_device_entries_lock = threading.Lock()


def device_entry_cached(*, key_id: str) -> DeviceEntry | None:
    entry = _device_entries.get(key_id)
    if entry is None or time.monotonic() - entry.loaded_at >= settings.EA_DEVICE_CACHE_SECONDS:
        return None
    return entry


def device_copy(device: Device) -> Device:
    """A request's own copy of a cached device: nothing a view does to it reaches the
    cached one. What ``copy.copy`` makes (Django's ``__getstate__``: the fields, and the
    state with its cache of related objects copied), without its trip through pickling's
    protocol (``__reduce_ex__``, the app registry's model lookup) on every request."""
    clone = Device.__new__(Device)
    clone.__dict__.update(device.__getstate__())
    return clone


def device_entry_load(*, key_id: str, generation: str) -> DeviceEntry:
    """Read the device now; ``generation`` must have been read before this call."""
    # The account snapshot is the largest field and no request reads it from here.
    device = Device.objects.defer("last_account").filter(key_id=key_id).first()
    entry = DeviceEntry(device, generation, time.monotonic())
    if settings.EA_DEVICE_CACHE_SECONDS > 0:
        with _device_entries_lock:
            if key_id not in _device_entries and len(_device_entries) >= DEVICE_CACHE_MAX_ENTRIES:
                # Oldest insertion first: unknown keys sent by a stranger churn the cache,
                # never grow it.
                del _device_entries[next(iter(_device_entries))]
            _device_entries[key_id] = entry
    return entry
