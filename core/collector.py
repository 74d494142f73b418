"""Python's cyclic garbage collector, kept out of work that must not stall.

A full collection walks every object the process holds. A sweep worker holds its
books (``positions.plan_book``: some 300,000 objects for 10,000 plans), and a mass
breach's sweep allocates enough to set off a full collection every few sweeps: 100-120
ms of the sweep spent walking books that never change there, before the closes were
queued. Inside ``collector_paused`` no cyclic collection runs (reference counting
frees what it always frees); the cycles the block leaves behind are young objects,
collected cheaply once it ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection in this process while the block runs (also as a
    decorator). Process-wide: for a block that runs alone in its process or does not
    last long, as a sweep (its time limit is seconds)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
