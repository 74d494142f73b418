"""One Redis client per process, for the code that talks to Redis directly."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings


@cache
def _client_for(url: str) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=1,
        socket_timeout=1,
        health_check_interval=30,
    )


def get_redis() -> redis.Redis:
    return _client_for(settings.REDIS_URL)
