"""System checks of what the device API assumes of its set-up (``manage.py check``).

- ``ea_gateway.E001``: every device-API URL pattern has an exact path that the browser
  middleware skips (``ea_gateway.middleware``). One that has none still works, but runs
  Django's session, CSRF, authentication and messages middleware on every request:
  the fixed cost the skip removes from the busiest paths (issue 11), and a 403 on every
  POST should its view not be CSRF-exempt as DRF's are. Static: runs with every check.
- ``ea_gateway.E002`` / ``W001`` / ``W002``: Redis does not evict keys. An eviction
  policy drops nonces (they have a TTL) and keeps the replay fence's epoch marker (it
  has none) under ``volatile-*``, so a captured EA request could be accepted again
  (``ea_gateway.api.admission``); it also drops Celery's queued tasks. It needs the
  server, so like Django's database checks it runs only when databases are checked:
  at ``manage.py migrate`` (which ``make run`` starts with) and
  ``manage.py check --database default``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from redis.exceptions import RedisError

from core.redis import get_redis
from ea_gateway.middleware import device_api_routes


@register(Tags.urls)
def device_api_middleware_check(app_configs=None, **kwargs) -> list[CheckMessage]:
    return [
        Error(
            f"The browser middleware cannot skip a device-API URL pattern: {problem}.",
            hint=(
                "Each pattern of ea_gateway.api.urls must be a named path() without converters, "
                "in a URL module mounted once, without a namespace: ea_gateway.middleware skips "
                "the exact paths reverse() gives. As it is, the session, CSRF, authentication "
                "and messages middleware run for this endpoint."
            ),
            obj=settings.ROOT_URLCONF,
            id="ea_gateway.E001",
        )
        for problem in device_api_routes(settings.ROOT_URLCONF).problems
    ]


@register("redis")
def redis_eviction_check(app_configs=None, databases=None, **kwargs) -> list[CheckMessage]:
    if not databases:
        return []
    try:
        memory = get_redis().info("memory")
    except RedisError as error:
        return [
            Warning(
                f"Could not read Redis's eviction policy: {error.__class__.__name__}: {error}.",
                hint="Redis must run with maxmemory-policy noeviction (docs/operations.md, Redis).",
                id="ea_gateway.W002",
            )
        ]
    policy, maxmemory = memory.get("maxmemory_policy"), int(memory.get("maxmemory", 0))
    if policy == "noeviction":
        return []
    if maxmemory == 0:
        return [
            Warning(
                f"Redis's maxmemory-policy is {policy}: no limit is set now, but with one it "
                "would evict nonces and queued tasks.",
                hint="Set maxmemory-policy noeviction (docs/operations.md, Redis).",
                id="ea_gateway.W001",
            )
        ]
    return [
        Error(
            f"Redis evicts keys (maxmemory {maxmemory} bytes, maxmemory-policy {policy}): an evicted "
            "nonce lets a captured EA request be accepted again, an evicted message loses a task.",
            hint=(
                "Set maxmemory-policy noeviction (a full Redis then refuses writes: EAs get 503 "
                "until memory is freed) and size memory as docs/operations.md (Redis) says."
            ),
            id="ea_gateway.E002",
        )
    ]
