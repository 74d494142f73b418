"""What the monitor did lately, for the dashboard and the owner API: the last
sweep and the latest sweep durations, in Redis (no table write per sweep).

The scanner records through ``sweep_record``; readers use the functions below,
never the key names.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from core.redis import get_redis

_LAST_SWEEP_KEY = "veilstop:scanner:last-sweep"  # JSON of the latest sweep
_DURATIONS_KEY = "veilstop:scanner:durations"  # the latest sweep times in seconds, newest first
DURATIONS_KEPT = 1000


@dataclass(frozen=True)
class SweepSummary:
    at: float  # unix seconds
    seconds: float
    signals: int
    commands: int
    dry_run: bool


def sweep_record(summary: SweepSummary) -> None:
    pipeline = get_redis().pipeline(transaction=False)
    pipeline.set(_LAST_SWEEP_KEY, json.dumps(summary.__dict__))
    pipeline.lpush(_DURATIONS_KEY, repr(summary.seconds))
    pipeline.ltrim(_DURATIONS_KEY, 0, DURATIONS_KEPT - 1)
    pipeline.execute()


def sweep_last() -> SweepSummary | None:
    raw = get_redis().get(_LAST_SWEEP_KEY)
    return SweepSummary(**json.loads(raw)) if raw else None


def sweep_durations(*, limit: int) -> list[float]:
    """The latest ``limit`` sweep durations in seconds, newest first."""
    return [float(value) for value in get_redis().lrange(_DURATIONS_KEY, 0, max(limit, 1) - 1)]
