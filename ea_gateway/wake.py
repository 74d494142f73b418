"""Long-polling for EAs: answer as soon as something is deliverable, and look in
the database only when something may be.

A request for a device's close commands (or its client's approvals):

1. ``_check``: one Redis round trip reads the generation of the device (or
   client) and its "nothing pending" marker (for an answer without a wait, the
   authentication's round trip reads them: ``ea_gateway.api.authentication``) (``core.wake`` raises the
   generation after every commit that makes something deliverable). A marker
   equal to the generation means a fetch found nothing at that generation and
   nothing was woken since: answer "nothing" without touching the database,
   so an idle EA's request takes no lock. No marker (it expired, Redis was
   restarted) or an older one: fetch from the database.
2. A fetch that found nothing writes the marker with the generation read in
   step 1, *before* the fetch; so does one that handed out everything there was
   (``Fetched.drained``: the EA asks again as soon as it has its answer, and that
   request then skips the database). A claim that commits after the fetch read the
   table raises the generation after that read, so the marker it leaves can
   never equal the generation: the next request fetches again. That race costs
   one database look, never a hidden command. The marker lives at most
   ``core.wake.EMPTY_MARKER_SECONDS``, and no longer than until the device's
   next command in backoff becomes due.
3. Nothing found and time left: the request gives back its request slot and
   database connection (``core.request_slots``: a waiting request holds
   neither), waits on this process's hub for a wake of its id, a command in
   backoff becoming due, or the deadline. Woken, it takes a slot ahead of the
   EA requests that were not (``Priority.WOKEN``) and goes back to 1; at the
   deadline with no wake it answers "nothing" without looking again (the
   EA's next request looks). A wake after the client hung up answers at once,
   leasing nothing.

A wake that is lost (``core.wake``: Redis unreachable for the publisher, a
process killed between commit and publish) delays a command by at most the
wait in progress plus the marker's life: the next request after the marker
expired fetches from the database. A waiting request does not look again on
a marker's expiry alone: a thousand markers set together would expire
together, and their looks would queue ahead of the requests that matter.

The hub is one Redis pub/sub connection per process (a thread; a greenlet under
gevent) that sets the events of the requests waiting on the ids it hears.
When its connection drops it wakes every waiter once reconnected (a wake may
have been lost meanwhile), and while it is down waiters look every second.
On SIGTERM (a worker stopping) every waiter looks once more and answers.
"""

from __future__ import annotations

import contextlib
import logging
import random
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import redis
from django.conf import settings
from django.db import connection
from redis.exceptions import RedisError

from core.redis import get_redis
from core.request_slots import slot_given_back
from core.wake import (
    CHANNEL_PATTERN,
    EMPTY_MARKER_SECONDS,
    database_scope,
    generation_key,
    marker_key,
)

logger = logging.getLogger(__name__)

HUB_DOWN_RECHECK_SECONDS = 1.0
MIN_RECHECK_SECONDS = 0.05
DEADLINE_SPREAD = 0.2
_HUB_RETRY_SECONDS = (0.1, 0.5, 1.0, 2.0)


class Fetched(NamedTuple):
    """A fetch's answer. ``drained``: what it hands out is all there was to deliver,
    ``due_in`` saying when something in backoff becomes due, as for an empty answer
    (the EA's next request, as soon as it has this answer, then skips the database)."""

    items: list[Any]
    due_in: float | None  # seconds until something not yet due becomes due, or None
    drained: bool = False


Fetch = Callable[[], tuple]  # a Fetched, or a plain (items, due_in)


_DUE = b":due"  # a marker that ends when a command in backoff becomes due: look again then


@dataclass(frozen=True)
class PendingCheck:
    scope: str
    kind: str
    key: int
    generation: bytes
    nothing_pending: bool
    look_again_in: float | None  # only for a marker that ends at a due time


def pending_check(
    scope: str, kind: str, key: int, *, generation: bytes | None, marked: bytes | None, pttl: int
) -> PendingCheck:
    """Step 1's answer from what Redis said: the generation, the marker and its PTTL."""
    generation = generation or b"0"
    if marked is None or marked.split(b":")[0] != generation:
        return PendingCheck(scope, kind, key, generation, False, None)
    look_again_in = max(pttl, 0) / 1000 if marked.endswith(_DUE) else None
    return PendingCheck(scope, kind, key, generation, True, look_again_in)


def _check(scope: str, kind: str, key: int) -> PendingCheck | None:
    """Generation and marker in one round trip; None when Redis cannot say (then fetch)."""
    marker = marker_key(scope, kind, key)
    try:
        pipe = get_redis().pipeline(transaction=False)
        pipe.get(generation_key(scope, kind, key))
        pipe.get(marker)
        pipe.pttl(marker)
        generation, marked, pttl = pipe.execute()
    except RedisError:
        return None
    return pending_check(scope, kind, key, generation=generation, marked=marked, pttl=pttl)


def _mark_empty(check: PendingCheck, kind: str, key: int, seconds: float, *, due: bool) -> None:
    # Without a marker the next request fetches, as after a Redis restart. A marker that
    # only bounds a lost wake lives between half and all of its time, at random: devices
    # first seen together (a restart) do not all go back to the database at once.
    life = seconds if due else seconds * random.uniform(0.5, 1.0)  # noqa: S311 - not security
    with contextlib.suppress(RedisError):
        get_redis().set(
            marker_key(check.scope, kind, key),
            check.generation + (_DUE if due else b""),
            px=max(int(life * 1000), 1),
        )


def fetch_unless_empty(
    *, kind: str, key: int, fetch: Fetch, checked: PendingCheck | None = None
) -> tuple[list[Any], float | None]:
    """Steps 1 and 2: what is deliverable now; when nothing is, the seconds until a command
    in backoff becomes due (look again then), or None (only a wake can change it).

    ``checked``: step 1 already done in another round trip of this request (the
    authentication's, ``ea_gateway.api.authentication``), before any fetch of it.

    Inside an open transaction (never a request's own: no ATOMIC_REQUESTS; a test's)
    rows can be visible whose wake-ups are only published at its commit: markers are
    neither trusted nor written there."""
    if connection.in_atomic_block:
        check = None
    elif checked is not None and (checked.kind, checked.key) == (kind, key):
        check = checked
    else:
        check = _check(database_scope(), kind, key)
    if check is not None and check.nothing_pending:
        return [], check.look_again_in
    items, due_in, drained = Fetched(*fetch())
    if items and not drained:
        return items, None
    holds = EMPTY_MARKER_SECONDS if due_in is None else min(float(EMPTY_MARKER_SECONDS), due_in)
    if check is not None and holds >= MIN_RECHECK_SECONDS:
        _mark_empty(check, kind, key, holds, due=due_in is not None)
    if items:
        return items, None
    return [], None if due_in is None else max(holds, MIN_RECHECK_SECONDS)


def long_poll(
    *,
    kind: str,
    key: int,
    wait: float,
    fetch: Fetch,
    client_gone: Callable[[], bool] = lambda: False,
    checked: PendingCheck | None = None,
) -> list[Any]:
    """What is deliverable, as soon as there is some or after ``wait`` seconds (step 3).

    ``checked`` (step 1 done already) serves an answer without a wait only: a waiting
    request must register for wakes before its first look, or a wake published
    between that look and the registration would be missed.

    An empty answer comes up to DEADLINE_SPREAD of the wait early, at random: EAs that
    started together (after a restart) then drift apart instead of asking again as one
    herd every wait."""
    if wait <= 0:
        return fetch_unless_empty(kind=kind, key=key, fetch=fetch, checked=checked)[0]
    deadline = time.monotonic() + wait * (1 - random.uniform(0, DEADLINE_SPREAD))  # noqa: S311
    hub = _hub()
    # Registered before the first look: a wake from here on is never missed.
    event = hub.register(database_scope(), kind, key)
    try:
        while True:
            items, look_again_in = fetch_unless_empty(kind=kind, key=key, fetch=fetch)
            remaining = deadline - time.monotonic()
            if items or remaining <= 0 or hub.draining:
                return items
            timeout = remaining if look_again_in is None else min(remaining, look_again_in)
            if not hub.connected:
                timeout = min(timeout, HUB_DOWN_RECHECK_SECONDS)
            with slot_given_back(woken=event.is_set):
                event.wait(timeout)
            woken = event.is_set()  # a wake while the slot was taken back counts too
            event.clear()
            if client_gone():
                return []
            if not woken and hub.connected and time.monotonic() >= deadline:
                # The wait ran out with no wake: nothing changed since the last look, and the
                # EA's next request looks anyway. Not looking spares the database the wave
                # of a thousand waits that started together running out together.
                return []
    finally:
        hub.unregister(event)


def peer_closed(sock: socket.socket | None) -> bool:
    """True when the client at the other end of ``sock`` has closed the connection
    (an EA whose HTTP timeout ran out, or that stopped): nothing may be leased to it."""
    if sock is None:
        return False
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        return bool(readable) and sock.recv(1, socket.MSG_PEEK) == b""
    except (OSError, ValueError):
        return True


class _Hub:
    """This process's wake subscriber (module docstring)."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self._lock = threading.Lock()
        self._waiters: dict[str, set[threading.Event]] = {}
        self._topic_of: dict[threading.Event, str] = {}
        self._connected = threading.Event()
        self.draining = False
        self._thread = threading.Thread(target=self._run, name="veilstop-wake-hub", daemon=True)
        self._thread.start()
        self._drain_on_sigterm()

    def _drain_on_sigterm(self) -> None:
        """A process asked to stop (a gunicorn worker on a restart or deploy) answers its
        waiting long-polls at once, then stops as it would have: otherwise they would hold
        it for its whole graceful timeout. Chained before the handler already installed."""
        previous = signal.getsignal(signal.SIGTERM)
        if not callable(previous):
            return  # default or ignored: nothing graceful to come before

        def stopping(signum, frame) -> None:
            self.drain()
            previous(signum, frame)

        # Only the main thread may install it; elsewhere (a test's request thread) nothing stops.
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGTERM, stopping)

    def drain(self) -> None:
        # From a signal handler: no lock (it may have interrupted its holder), nothing that
        # blocks (under gevent it runs in the event loop); list() copies the keys at once.
        self.draining = True
        for event in list(self._topic_of):
            event.set()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def register(self, scope: str, kind: str, key: int) -> threading.Event:
        event = threading.Event()
        topic = f"{scope}:{kind}:{key}"
        with self._lock:
            self._waiters.setdefault(topic, set()).add(event)
            self._topic_of[event] = topic
        return event

    def unregister(self, event: threading.Event) -> None:
        with self._lock:
            topic = self._topic_of.pop(event, None)
            waiting = self._waiters.get(topic, set()) if topic else set()
            waiting.discard(event)
            if topic and not waiting:
                self._waiters.pop(topic, None)

    def waiting(self) -> int:
        with self._lock:
            return len(self._topic_of)

    def _dispatch(self, channel: bytes, data: bytes) -> None:
        # channel veilstop:wake:<scope>:channel, data "<kind>:<id>,<id>,..."
        scope = channel.decode().split(":")[2]
        kind, _, ids = data.decode().partition(":")
        with self._lock:
            events = [
                event for key in ids.split(",") for event in self._waiters.get(f"{scope}:{kind}:{key}", ())
            ]
        for event in events:
            event.set()

    def _wake_all(self) -> None:
        with self._lock:
            events = list(self._topic_of)
        for event in events:
            event.set()

    def _run(self) -> None:
        failures = 0
        while True:
            client = redis.Redis.from_url(self._redis_url, socket_connect_timeout=2, health_check_interval=15)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.psubscribe(CHANNEL_PATTERN)
                self._connected.set()
                failures = 0
                self._wake_all()  # anything published while we were not listening
                while True:
                    message = pubsub.get_message(timeout=5.0)
                    if message is not None and message["type"] == "pmessage":
                        self._dispatch(message["channel"], message["data"])
            except (RedisError, OSError) as error:
                self._connected.clear()
                self._wake_all()
                delay = _HUB_RETRY_SECONDS[min(failures, len(_HUB_RETRY_SECONDS) - 1)]
                failures += 1
                logger.warning("wake hub: Redis pub/sub lost (%s); reconnecting in %.1f s", error, delay)
                time.sleep(delay)
            finally:
                pubsub.close()
                client.close()


_hubs: dict[str, _Hub] = {}
_hubs_lock = threading.Lock()


def _hub() -> _Hub:
    with _hubs_lock:
        if settings.REDIS_URL not in _hubs:
            _hubs[settings.REDIS_URL] = _Hub(settings.REDIS_URL)
        return _hubs[settings.REDIS_URL]
