from __future__ import annotations

from django.conf import settings
from redis.exceptions import RedisError
from rest_framework.throttling import SimpleRateThrottle

from ea_gateway.api.authentication import AuthenticationUnavailable
from ea_gateway.models import Device


class DeviceRateThrottle(SimpleRateThrottle):
    """Per-device request rate (EA_THROTTLE_RATE / FEED_THROTTLE_RATE); 429 with Retry-After."""

    scope = "device"

    def __init__(self) -> None:
        # The rate depends on the device's role, known only per request.
        pass

    def get_cache_key(self, request, view) -> str | None:
        if not isinstance(request.auth, Device):
            return None
        return f"throttle:{self.scope}:{request.auth.pk}"

    def allow_request(self, request, view) -> bool:
        if not isinstance(request.auth, Device):
            return True
        feed = request.auth.role == "feed"
        self.scope = "feed_device" if feed else "ea_device"
        self.rate = settings.FEED_THROTTLE_RATE if feed else settings.EA_THROTTLE_RATE
        self.num_requests, self.duration = self.parse_rate(self.rate)
        try:
            return super().allow_request(request, view)
        except RedisError:
            raise AuthenticationUnavailable() from None
