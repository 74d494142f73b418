"""The exit plans' live state in PostgreSQL (``SignalPlan``): loaded and saved by
sweeps under their instruments' locks, ended by the strategy's exit signal.

Lock order (``positions.locks``): instrument sweep lock, then plan rows, then
positions. Every change a sweep saves is audited in the same transaction; a
move of the effective stop keeps its old and new price in the encrypted
``secret_data``, never in the plain ``data``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection, transaction

from core.redis import get_redis
from positions.exit_plan import PARTIAL_TP, STOP_MOVED, PlanEvent, PlanState
from positions.models import SignalPlan
from signals_app.choices import AuditAction
from signals_app.events import Actor, AuditEntry, audit_bulk
from signals_app.fields import json_encrypt
from signals_app.models import PLANS_VERSION_SEQUENCE, Signal
from signals_app.services import approvals_withdraw


@dataclass(frozen=True)
class StoredPlan:
    state: PlanState
    exit_kind: str
    exit_quote: dict[str, Any] | None
    partials_hit: dict[str, Any]  # partial index (as text) -> the quote that hit it


EMPTY = StoredPlan(PlanState(), "", None, {})


def plans_read(signal_ids: list[int]) -> dict[int, StoredPlan]:
    """The stored plans of these signals, decrypted (missing ones: none)."""
    if not signal_ids:
        return {}
    rows = SignalPlan.objects.filter(signal_id__in=signal_ids).values_list(
        "signal_id", "state", "exit_kind", "exit_quote", "partials_hit"
    )
    return {
        signal_id: StoredPlan(PlanState.from_json(state), exit_kind, exit_quote, partials_hit or {})
        for signal_id, state, exit_kind, exit_quote, partials_hit in rows
    }


def plans_version_raise(instrument_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
    """Give the instruments a new ``plans_version`` (in the caller's transaction, which then
    holds their rows until it ends); return {id: (version before, version now)}."""
    ordered = sorted(set(instrument_ids))
    if not ordered:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE signals_app_instrument i SET plans_version = nextval(%s)
              FROM (SELECT id, plans_version FROM signals_app_instrument
                     WHERE id = ANY(%s) ORDER BY id FOR UPDATE) old
             WHERE i.id = old.id
            RETURNING i.id, old.plans_version, i.plans_version
            """,
            [PLANS_VERSION_SEQUENCE, ordered],
        )
        return {instrument_id: (before, now) for instrument_id, before, now in cursor.fetchall()}


@dataclass(frozen=True)
class PlanChange:
    signal_id: int
    instrument_id: int
    symbol: str
    before: StoredPlan
    state: PlanState
    events: list[PlanEvent]


# One upsert for every plan a sweep changed. A plan whose partials did not move keeps its
# stored token (the row's own, kept by the update) rather than a fresh encryption of the same
# map; a plan that has hit none stores null (nothing to hide, nothing to encrypt).
_SAVE = """
INSERT INTO positions_signalplan AS sp
       (signal_id, state, exit_kind, exit_quote, partials_hit, exited_by, book_version, updated_at)
SELECT w.signal_id, w.state, w.exit_kind, w.exit_quote, w.partials_hit, w.exited_by, w.book_version, now()
  FROM unnest(%s::bigint[], %s::bytea[], %s::text[], %s::jsonb[], %s::bytea[], %s::text[], %s::bigint[])
       AS w(signal_id, state, exit_kind, exit_quote, partials_hit, exited_by, book_version)
ON CONFLICT (signal_id) DO UPDATE
   SET state = EXCLUDED.state, exit_kind = EXCLUDED.exit_kind, exit_quote = EXCLUDED.exit_quote,
       partials_hit = coalesce(EXCLUDED.partials_hit, sp.partials_hit), exited_by = EXCLUDED.exited_by,
       book_version = EXCLUDED.book_version, updated_at = EXCLUDED.updated_at
"""


def plans_save(changes: list[PlanChange], *, by: Actor) -> dict[int, SavedPlans]:
    """Write every changed plan in one upsert, audit their events in one insert, and raise
    their instruments' ``plans_version``; return, per instrument, what was saved."""
    if not changes:
        return {}
    versions = plans_version_raise(change.instrument_id for change in changes)
    saved = {instrument_id: SavedPlans(*version) for instrument_id, version in versions.items()}
    columns: tuple[list, ...] = ([], [], [], [], [], [], [])
    ended = []
    # Plan rows are locked in signal order (positions.locks).
    for change in sorted(changes, key=lambda change: change.signal_id):
        exit_event = plan_exit_event(change.events)
        hits = any(event.kind == PARTIAL_TP for event in change.events)
        partials = partials_after(change.before, change.events, change.symbol)
        exit_quote = exit_event.quote.as_json(change.symbol) if exit_event else change.before.exit_quote
        stored = StoredPlan(change.state, change.state.exit_kind, exit_quote, partials)
        saved[change.instrument_id].plans[change.signal_id] = stored
        for column, value in zip(
            columns,
            (
                change.signal_id,
                json_encrypt(stored.state.to_json()),
                stored.exit_kind,
                None if exit_quote is None else json.dumps(exit_quote),
                # None: the stored map (or none, null, for a plan that has hit no partial yet).
                json_encrypt(partials) if hits else None,
                by.name if exit_event else "",
                versions[change.instrument_id][1],
            ),
            strict=True,
        ):
            column.append(value)
        if exit_event:
            ended.append(change.signal_id)
    # The owner's trade is over: no client enters it any more (a fill being recorded right
    # now keeps its approval; the ended plan closes that position on the next sweep).
    approvals_withdraw(signal_ids=ended, why="the signal's exit plan ended", by=by, skip_locked=True)
    with connection.cursor() as cursor:
        cursor.execute(_SAVE, list(columns))
    audit_bulk(by=by, entries=[entry for change in changes for entry in _audit_entries(change)])
    return saved


@dataclass
class SavedPlans:
    before: int  # the instrument's plans_version just before the save
    version: int  # and after it
    plans: dict[int, StoredPlan] = field(default_factory=dict)


def plan_exit_event(events: list[PlanEvent]) -> PlanEvent | None:
    return next((event for event in events if event.kind not in (PARTIAL_TP, STOP_MOVED)), None)


def _audit_entries(change: PlanChange) -> list[AuditEntry]:
    entries = [
        AuditEntry(
            action=AuditAction.SIGNAL_PARTIAL_TP_HIT
            if event.kind == PARTIAL_TP
            else AuditAction.SIGNAL_PLAN_EXITED,
            subject=Signal,
            subject_id=change.signal_id,
            data={
                "kind": event.kind,
                "partial_index": event.partial_index,
                "trigger_quote": event.quote.as_json(change.symbol),
            },
        )
        for event in change.events
        if event.kind != STOP_MOVED
    ]
    moves = [event for event in change.events if event.kind == STOP_MOVED]
    if moves:  # one record per sweep: from where the stop was to where it is now
        entries.append(
            AuditEntry(
                action=AuditAction.SIGNAL_STOP_MOVED,
                subject=Signal,
                subject_id=change.signal_id,
                data={"moved_by": change.state.moved_by, "moves": len(moves)},
                secret_data={
                    "old_stop": None if moves[0].old_stop is None else str(moves[0].old_stop),
                    "new_stop": str(moves[-1].new_stop),
                    "at_quote": moves[-1].quote.as_json(change.symbol),
                },
            )
        )
    return entries


def partials_after(before: StoredPlan, events: list[PlanEvent], symbol: str) -> dict[str, Any]:
    """The partial take-profits a plan has hit once these events are saved (its index as
    text -> the quote that hit it)."""
    partials = dict(before.partials_hit)
    for event in events:
        if event.kind == PARTIAL_TP:
            partials[str(event.partial_index)] = event.quote.as_json(symbol)
    return partials


def stored_quote(stored: dict[str, Any]) -> dict[str, Any]:
    """A quote kept in a plan, as a close's trigger quote: encrypted JSON reads numbers
    back as Decimal, and a quote's times are floats again."""
    return {key: float(value) if key in ("ts", "received_at") else value for key, value in stored.items()}


# --- which plans' standing orders to re-send ------------------------------------------
# A plan's standing orders (an ended plan's exit, its partials, for every open position)
# are claimed by the sweep that reaches them; after that only a position that becomes
# claimable again needs them: a fill, or a position reopened by a partial close or a
# failed one. Those mark their signal here, after their commit; a sweep takes the marks
# of its signals before its claim. A safety net re-sends everything now and then.
_DIRTY_KEY = "veilstop:plan-dirty"
_RECHECK_KEY = "veilstop:plan-recheck"
RECHECK_ALL_SECONDS = 60


def plans_mark_dirty(signal_id: int) -> None:
    """After the current transaction commits: the signal has a position to (re)judge."""
    transaction.on_commit(lambda: get_redis().sadd(_DIRTY_KEY, signal_id))


def plans_dirty() -> set[int]:
    """Every signal marked now (a handful: marks are taken by the next sweep)."""
    return {int(member) for member in get_redis().smembers(_DIRTY_KEY)}


def plans_take_dirty(signal_ids: Iterable[int]) -> set[int]:
    """Take (remove and return) the marks of these signals."""
    wanted = [str(signal_id) for signal_id in signal_ids]
    if not wanted:
        return set()
    pipeline = get_redis().pipeline(transaction=True)
    pipeline.smismember(_DIRTY_KEY, wanted)
    pipeline.srem(_DIRTY_KEY, *wanted)
    members, _ = pipeline.execute()
    return {int(signal_id) for signal_id, member in zip(wanted, members, strict=True) if member}


def plans_restore_dirty(signal_ids: set[int]) -> None:
    """Put marks back when the sweep that took them did not commit."""
    if signal_ids:
        get_redis().sadd(_DIRTY_KEY, *signal_ids)


def plans_recheck_all_due() -> bool:
    """Whether this sweep should re-send every standing order (at most once a minute): the
    safety net for a mark lost with Redis."""
    return bool(get_redis().set(_RECHECK_KEY, 1, nx=True, ex=RECHECK_ALL_SECONDS))
