"""A mass breach's claim, split over the database's cores: ``apart_start`` starts a job on
every chunk at once, each chunk in a thread of this process's pool, on that thread's own
connection (kept between claims) and in a transaction of its own; ``apart_end`` waits
for all of them.

Used by ``positions.closes.closes_claim`` for the scanner (``SWEEP_CLAIM_CONNECTIONS``):
one statement closing 10,000 positions keeps one database backend busy while the
others idle; chunks of it run side by side.

What makes it safe to wait on threads (a wait PostgreSQL cannot see in its deadlock
detector): the calling thread claims nothing itself, so it holds no position lock while
it waits, and what it does meanwhile (the scanner saves its plans) locks
no row a chunk locks, nor waits for one; each chunk locks its positions in id order, as
every claim does, so the chunks' lock waits and other claims' follow one order; and a
chunk that waits longer than CLAIM_LOCK_TIMEOUT_MS for a lock fails (``lock_timeout``)
instead of hanging: the caller then claims the rest itself, in its own transaction
(``positions.closes``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

CLAIM_LOCK_TIMEOUT_MS = 2_000
Result = TypeVar("Result")


class Keyed(Protocol):
    key: int


Row = TypeVar("Row", bound=Keyed)


def chunks_by_key(rows: Sequence[Row], *, parts: int, minimum: int) -> list[list[Row]]:
    """``rows`` (sorted by key) in at most ``parts`` runs of consecutive rows, none of
    fewer than about ``minimum``; rows of one key stay in one run."""
    count = min(parts, len(rows) // minimum) if minimum > 0 else parts
    if count <= 1:
        return [list(rows)]
    size = -(-len(rows) // count)
    chunks: list[list[Row]] = []
    for row in rows:
        if chunks and (len(chunks[-1]) < size or chunks[-1][-1].key == row.key):
            chunks[-1].append(row)
        else:
            chunks.append([row])
    return chunks


def apart_start(job: Callable[[list[Row]], Result], chunks: list[list[Row]]) -> list[Future]:
    """``job(chunk)`` started for every chunk at once, each to commit on its own."""
    pool = _pool(len(chunks))
    return [pool.submit(_outcome, job, chunk) for chunk in chunks]


def apart_end(started: list[Future]) -> tuple[list[Result], BaseException | None]:
    """Once every chunk has ended: what the committed ones returned, in the chunks' order,
    and the first failure (None if none failed). Anything raised in the calling thread
    while it waits (a task's time limit) goes up at once."""
    outcomes = [future.result() for future in started]
    failures = [outcome.error for outcome in outcomes if isinstance(outcome, _Failed)]
    return [outcome for outcome in outcomes if not isinstance(outcome, _Failed)], next(iter(failures), None)


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def _outcome(job: Callable[[list[Row]], Result], chunk: list[Row]) -> Result | _Failed:
    # A chunk's error travels back as a value: whatever future.result() raises is the
    # waiting thread's own.
    try:
        return _in_own_transaction(job, chunk)
    except Exception as error:
        return _Failed(error)


def _in_own_transaction(job: Callable[[list[Row]], Result], chunk: list[Row]) -> Result:
    # django.db.connection is this pool thread's own (Django keeps one per thread), kept
    # from one claim to the next: a new connection, and a new backend's first claim (its
    # catalog caches), cost some 15-20 ms a chunk. One that broke since is replaced, one
    # whose chunk failed closed.
    _KEPT.setdefault(os.getpid(), set()).add(connections[DEFAULT_DB_ALIAS])
    if connection.connection is not None and not connection.is_usable():
        connection.close()
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('lock_timeout', %s, true)", [f"{CLAIM_LOCK_TIMEOUT_MS}ms"])
            return job(chunk)
    except BaseException:
        connection.close()
        raise


# By process id (a forked worker child makes its own): the pool and its thread count.
_POOLS: dict[int, tuple[int, ThreadPoolExecutor]] = {}
# The connections the pool's threads keep, by process id: closed with the pool.
_KEPT: dict[int, set[BaseDatabaseWrapper]] = {}


def _pool(threads: int) -> ThreadPoolExecutor:
    size, pool = _POOLS.get(os.getpid(), (0, None))
    if pool is None or size < threads:
        pool_close()
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="claim-apart")
        _POOLS[os.getpid()] = (threads, pool)
    return pool


def pool_close() -> None:
    """End this process's pool (waiting for its jobs) and close the connections its
    threads kept: before the database goes away (the tests' teardown) or a bigger pool
    replaces it."""
    _, pool = _POOLS.pop(os.getpid(), (0, None))
    if pool is not None:
        pool.shutdown(wait=True)
    for wrapper in _KEPT.pop(os.getpid(), set()):
        # Its thread has ended: closing it from here is the only use it has left.
        wrapper.inc_thread_sharing()
        wrapper.close()
