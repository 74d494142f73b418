"""The checks behind /healthz. Each returns None when fine, or what is wrong."""

from __future__ import annotations

from django.conf import settings
from django.db import DatabaseError, connection
from redis.exceptions import RedisError

from core.redis import get_redis
from monitoring.choices import HeartbeatName
from monitoring.selectors import heartbeat_age


def check_database() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as error:
        return f"database unreachable: {error.__class__.__name__}"
    return None


def check_redis() -> str | None:
    try:
        get_redis().ping()
    except RedisError as error:
        return f"redis unreachable: {error.__class__.__name__}"
    return None


def check_beat() -> str | None:
    try:
        age = heartbeat_age(name=HeartbeatName.BEAT)
    except DatabaseError:
        return "unknown: database unreachable"
    if age is None:
        return "no beat heartbeat yet (are celery beat and a worker running?)"
    limit = settings.HEALTH_BEAT_MAX_AGE_SECONDS
    if age.total_seconds() > limit:
        return f"last beat heartbeat {int(age.total_seconds())} s ago (limit {limit} s)"
    return None


CHECKS = {"database": check_database, "redis": check_redis, "beat": check_beat}


def run_checks() -> dict[str, str | None]:
    return {name: check() for name, check in CHECKS.items()}
