"""Per-device request rate (EA_THROTTLE_RATE / FEED_THROTTLE_RATE): 429 with Retry-After.

The count is kept in Redis by the authentication's one round trip
(``ea_gateway.api.authentication``, a sliding log of the last requests as DRF's
throttles keep it): at most N requests in any window of the rate's period. This
class only turns the answer it got into DRF's 429.
"""

from __future__ import annotations

import math
from functools import cache

from django.conf import settings
from rest_framework.throttling import BaseThrottle

from ea_gateway.choices import DeviceRole
from ea_gateway.models import Device

_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@cache
def _parse(rate: str) -> tuple[int, int]:
    requests, period = rate.split("/")
    return int(requests), _PERIOD_SECONDS[period[0]]


def device_rate(device: Device) -> tuple[int, int]:
    """(requests, window in seconds) allowed to this device."""
    feed = device.role == DeviceRole.FEED
    return _parse(settings.FEED_THROTTLE_RATE if feed else settings.EA_THROTTLE_RATE)


class DeviceRateThrottle(BaseThrottle):
    def __init__(self) -> None:
        self.retry_after_ms = 0

    def allow_request(self, request, view) -> bool:
        if not isinstance(request.auth, Device):
            return True
        self.retry_after_ms = getattr(request.user, "retry_after_ms", 0)
        return not self.retry_after_ms

    def wait(self) -> int:
        # Whole seconds, rounded up: the header is an integer, and an EA that waits as long
        # as it says finds the oldest request of the window gone.
        return max(1, math.ceil(self.retry_after_ms / 1000))
