"""Wake-ups for waiting EAs, the publishing half: "something may be deliverable".

Whoever makes a close command deliverable to a device (the close claim, a lease
re-queued) or an approval deliverable to a client (a publication, a decision)
calls ``wake_devices`` / ``wake_clients`` inside its transaction. After the
commit, one Redis round trip raises each one's generation counter and publishes
the ids on the wake channel. ``ea_gateway.wake`` is the other half: the
per-process subscriber that wakes the requests waiting on those ids, and the
"nothing pending as of generation G" markers that let an idle EA's request
skip the database.

This half lives in ``core`` because every layer publishes (``signals_app``
approvals, ``positions`` closes) and none of them may import ``ea_gateway``.

Publishing is best effort: a wake that is lost (Redis unreachable, the process
killed between the commit and the publish) delays a delivery by at most a
long-poll's wait plus a marker's life (``EMPTY_MARKER_SECONDS``), never loses
it: the database row is the truth.

Keys and the channel are scoped to the database's incarnation (its OID), so a
marker left in Redis by a database since dropped and recreated (a test run, a
restore) can never hide a row of the new one that happens to reuse its id.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import DatabaseError, connection, transaction
from redis.exceptions import RedisError

from core.redis import get_redis

logger = logging.getLogger(__name__)

DEVICE = "d"  # close commands of one device
CLIENT = "c"  # approvals of one client
# "Nothing pending" markers live this long at most: with a long-poll's wait, the bound on a lost wake.
EMPTY_MARKER_SECONDS = 30
# A generation counter outlives every marker that compares with it by far.
GENERATION_SECONDS = 24 * 3600
CHANNEL_PATTERN = "veilstop:wake:*:channel"
_IDS_PER_MESSAGE = 1000
_scopes: dict[str, str] = {}


def database_scope() -> str:
    """This database's incarnation: its OID, looked up once per process and database."""
    name = str(connection.settings_dict["NAME"])
    if name not in _scopes:
        with connection.cursor() as cursor:
            cursor.execute("SELECT oid FROM pg_database WHERE datname = current_database()")
            _scopes[name] = str(cursor.fetchone()[0])
    return _scopes[name]


def channel(scope: str) -> str:
    return f"veilstop:wake:{scope}:channel"


def generation_key(scope: str, kind: str, key: int) -> str:
    return f"veilstop:wake:{scope}:gen:{kind}:{key}"


def marker_key(scope: str, kind: str, key: int) -> str:
    return f"veilstop:wake:{scope}:empty:{kind}:{key}"


def wake_devices(device_ids: Iterable[int]) -> None:
    """After the commit: close commands may be deliverable to these devices."""
    _after_commit(DEVICE, device_ids)


def wake_clients(client_ids: Iterable[int]) -> None:
    """After the commit: approvals may be deliverable to these clients."""
    _after_commit(CLIENT, client_ids)


def wake_devices_now(device_ids: Iterable[int]) -> None:
    """At once, not after the current transaction: for commands another transaction has
    committed (a mass claim's chunks) while this one is failing."""
    ordered = sorted({int(key) for key in device_ids})
    if ordered:
        publish(DEVICE, ordered)


def _after_commit(kind: str, keys: Iterable[int]) -> None:
    ordered = sorted({int(key) for key in keys})
    if ordered:
        transaction.on_commit(lambda: publish(kind, ordered))


def publish(kind: str, keys: list[int]) -> None:
    """Raise the generations, then tell the waiting requests (one round trip).

    The generation goes up before the message goes out, so a request woken by
    the message always reads the new generation."""
    try:
        scope = database_scope()
        pipe = get_redis().pipeline(transaction=True)
        for key in keys:
            pipe.incr(generation_key(scope, kind, key))
            pipe.expire(generation_key(scope, kind, key), GENERATION_SECONDS)
        for start in range(0, len(keys), _IDS_PER_MESSAGE):
            chunk = keys[start : start + _IDS_PER_MESSAGE]
            pipe.publish(channel(scope), f"{kind}:{','.join(map(str, chunk))}")
        pipe.execute()
    except (RedisError, DatabaseError) as error:
        # Best effort (module docstring): the markers' TTL bounds the delay.
        logger.warning("wake-up of %s %s not published: %s", kind, keys[:20], error)
