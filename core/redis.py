"""One Redis client per process, for the code that talks to Redis directly."""

from __future__ import annotations

from functools import cache

import redis
from django.conf import settings
from redis.commands.core import Script


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


@cache
def _script_for(url: str, source: str) -> Script:
    return _client_for(url).register_script(source)


def get_script(source: str) -> Script:
    """A Lua script, registered once per process and Redis URL: each call is one EVALSHA
    (redis-py loads the script again by itself after a Redis restart forgets it)."""
    return _script_for(settings.REDIS_URL, source)
