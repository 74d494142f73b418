"""Request slots: how many requests a web process works on at once, and under
gevent the database connections they share.

Under gevent workers (``config/gunicorn.py``) every request is a greenlet, and
Django keeps one database connection per greenlet: left alone, a burst (a
thousand EAs reconnecting after a restart, a breach waking them all) opens a
connection per request, past PostgreSQL's ``max_connections``, and every
request pays a new connection.

1. ``RequestSlotsMiddleware`` takes a slot before the request runs and gives it
   back once the response is made: at most ``WEB_REQUEST_SLOTS`` requests of a
   process work at once, the others queue for a slot.
2. Under gevent each slot owns one Django connection, installed as the
   greenlet's ``connections["default"]`` while it holds the slot and kept open
   across requests for ``CONN_MAX_AGE``, as a sync worker keeps its own: a
   pool of ``WEB_REQUEST_SLOTS`` connections per process, none opened per
   request. A connection that failed or grew old is closed as its slot comes
   back (Django's ``close_if_unusable_or_obsolete``).
3. ``slot_given_back()``: a request about to wait (a long-poll,
   ``ea_gateway.wake``) gives back its slot and with it its connection, and
   takes a slot again when it wakes. A waiting request holds neither.
4. A slot coming back goes to the first request queued at the most urgent
   ``Priority``: the owner's side (the price feed, the console, everything
   not under ``EA_PATH_PREFIX``) first, then a long-poll woken with something
   to deliver, then any other EA request. A thousand EAs asking again at once
   (a restart, their waits running out together) then never hold back the
   crossing quote, nor the close commands it queued.

Elsewhere (sync workers, Django's test client) a slot is only a place in the
queue, connections are Django's usual ones, and a request about to wait
closes its own.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from enum import IntEnum

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections

# The EAs' own requests: any other path is the owner's side.
EA_PATH_PREFIX = "/api/v1/client/"


class Priority(IntEnum):
    """Who gets a slot coming back first (module docstring, 4): the lowest value."""

    OWNER = 0  # the price feed and the owner: never queued behind EAs
    WOKEN = 1  # a long-poll woken with something to deliver
    EA = 2  # every other EA request


def _under_gevent() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("socket"))


class _Slot:
    def __init__(self) -> None:
        self.database = None  # this slot's connection (a DatabaseWrapper), under gevent

    def install(self) -> None:
        if self.database is None:
            self.database = connections.create_connection(DEFAULT_DB_ALIAS)
            # Handed from greenlet to greenlet, one at a time (each holds the slot).
            self.database.inc_thread_sharing()
        connections[DEFAULT_DB_ALIAS] = self.database

    def uninstall(self) -> None:
        if self.database.in_atomic_block:  # never at a slot's return; no half transaction is pooled
            self.database.close()
        self.database.close_if_unusable_or_obsolete()
        del connections[DEFAULT_DB_ALIAS]


class _Queued:
    """A request waiting for a slot: the slot is handed to it, then its event set."""

    def __init__(self) -> None:
        self.handed: _Slot | None = None
        self.event = threading.Event()


class RequestSlots:
    def __init__(self, size: int) -> None:
        self.pooled = _under_gevent()
        self._lock = threading.Lock()
        self._idle = [_Slot() for _ in range(size)]
        self._queues: tuple[deque[_Queued], ...] = tuple(deque() for _ in Priority)

    def take(self, priority: Priority = Priority.EA) -> _Slot:
        with self._lock:
            # An idle slot means nobody queues (a slot coming back goes to a queued request).
            slot = self._idle.pop() if self._idle else None
            if slot is None:
                queued = _Queued()
                self._queues[priority].append(queued)
        if slot is None:
            try:
                queued.event.wait()
            except BaseException:  # killed while queued (a worker stopping): no slot may leak
                with self._lock:
                    if queued.handed is None:
                        self._queues[priority].remove(queued)
                if queued.handed is not None:
                    self._release(queued.handed)
                raise
            slot = queued.handed
        if self.pooled:
            slot.install()
        return slot

    def give_back(self, slot: _Slot, *, to_wait: bool) -> None:
        if self.pooled:
            slot.uninstall()
        else:
            # A waiting request closes its connection; at the end of a request a connection
            # meant to persist (CONN_MAX_AGE) stays, as Django would keep it.
            _close_connection(unless_persistent=not to_wait)
        self._release(slot)

    def _release(self, slot: _Slot) -> None:
        with self._lock:
            for queue in self._queues:
                if queue:
                    queued = queue.popleft()
                    queued.handed = slot
                    queued.event.set()
                    return
            self._idle.append(slot)


def _close_connection(*, unless_persistent: bool) -> None:
    # Inside a transaction (a test's) the connection is not ours to close.
    if connection.in_atomic_block or (unless_persistent and connection.settings_dict["CONN_MAX_AGE"]):
        return
    connection.close()


_held: ContextVar[tuple[RequestSlots, _Slot] | None] = ContextVar("veilstop_request_slot", default=None)


class RequestSlotsMiddleware:
    """At most WEB_REQUEST_SLOTS requests of this process at work at once (module docstring)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.slots = RequestSlots(settings.WEB_REQUEST_SLOTS)

    def __call__(self, request):
        priority = Priority.EA if request.path_info.startswith(EA_PATH_PREFIX) else Priority.OWNER
        token = _held.set((self.slots, self.slots.take(priority)))
        try:
            return self.get_response(request)
        finally:
            held = _held.get()
            if held is not None:
                held[0].give_back(held[1], to_wait=False)
            _held.reset(token)


@contextlib.contextmanager
def slot_given_back(*, woken: Callable[[], bool] = lambda: False) -> Iterator[None]:
    """While a request waits: no request slot, no database connection. Once it is over,
    ``woken()`` says whether the request has something to deliver (it then takes a slot
    ahead of other EA requests)."""
    held = _held.get()
    if held is None:  # not under the middleware (a direct call)
        _close_connection(unless_persistent=False)
        yield
        return
    slots, slot = held
    _held.set(None)
    slots.give_back(slot, to_wait=True)
    try:
        yield
    finally:
        _held.set((slots, slots.take(Priority.WOKEN if woken() else Priority.EA)))
