"""The exit plans' live state in PostgreSQL (``SignalPlan``): loaded and saved by
sweeps under their instruments' locks, ended by the strategy's exit signal.

Lock order (``positions.locks``): instrument sweep lock, then plan rows, then
positions. Every change a sweep saves is audited in the same transaction; a
move of the effective stop keeps its old and new price in the encrypted
``secret_data``, never in the plain ``data``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from positions.exit_plan import PARTIAL_TP, STOP_MOVED, PlanEvent, PlanState
from positions.models import SignalPlan
from signals_app.choices import AuditAction
from signals_app.events import Actor, AuditEntry, audit_bulk
from signals_app.models import Signal


@dataclass(frozen=True)
class StoredPlan:
    state: PlanState
    exit_kind: str
    exit_quote: dict[str, Any] | None
    partials_hit: dict[str, Any]  # partial index (as text) -> the quote that hit it


EMPTY = StoredPlan(PlanState(), "", None, {})


def plans_lock(signal_ids: Iterable[int]) -> dict[int, StoredPlan]:
    """The stored plans of these signals, locked in id order (missing ones: a fresh state)."""
    rows = (
        SignalPlan.objects.select_for_update()
        .filter(signal_id__in=sorted(set(signal_ids)))
        .order_by("signal_id")
        .values_list("signal_id", "state", "exit_kind", "exit_quote", "partials_hit")
    )
    return {
        signal_id: StoredPlan(PlanState.from_json(state), exit_kind, exit_quote, partials_hit or {})
        for signal_id, state, exit_kind, exit_quote, partials_hit in rows
    }


@dataclass(frozen=True)
class PlanChange:
    signal_id: int
    symbol: str
    before: StoredPlan
    state: PlanState
    events: list[PlanEvent]


def plans_save(changes: list[PlanChange], *, by: Actor) -> None:
    """Write every changed plan in one upsert and audit their events in one insert."""
    if not changes:
        return
    rows = []
    for change in changes:
        exit_event = _exit_event(change.events)
        partials = dict(change.before.partials_hit)
        for event in change.events:
            if event.kind == PARTIAL_TP:
                partials[str(event.partial_index)] = event.quote.as_json(change.symbol)
        rows.append(
            SignalPlan(
                signal_id=change.signal_id,
                state=change.state.to_json(),
                exit_kind=change.state.exit_kind,
                exit_quote=exit_event.quote.as_json(change.symbol)
                if exit_event
                else change.before.exit_quote,
                partials_hit=partials,
                exited_by=by.name if exit_event else "",
            )
        )
    SignalPlan.objects.bulk_create(
        rows,
        update_conflicts=True,
        unique_fields=["signal"],
        update_fields=["state", "exit_kind", "exit_quote", "partials_hit", "exited_by", "updated_at"],
    )
    audit_bulk(by=by, entries=[entry for change in changes for entry in _audit_entries(change)])


def _exit_event(events: list[PlanEvent]) -> PlanEvent | None:
    return next((event for event in events if event.kind not in (PARTIAL_TP, STOP_MOVED)), None)


def _audit_entries(change: PlanChange) -> list[AuditEntry]:
    subject = Signal(pk=change.signal_id)
    entries = [
        AuditEntry(
            action=AuditAction.SIGNAL_PARTIAL_TP_HIT
            if event.kind == PARTIAL_TP
            else AuditAction.SIGNAL_PLAN_EXITED,
            subject=subject,
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
                subject=subject,
                data={"moved_by": change.state.moved_by, "moves": len(moves)},
                secret_data={
                    "old_stop": None if moves[0].old_stop is None else str(moves[0].old_stop),
                    "new_stop": str(moves[-1].new_stop),
                    "at_quote": moves[-1].quote.as_json(change.symbol),
                },
            )
        )
    return entries


def plans_partials_hit(signal_ids: Iterable[int]) -> dict[int, dict[int, dict[str, Any]]]:
    """Per signal whose plan is running, the partial take-profits it has hit and the
    quote that hit each."""
    rows = (
        SignalPlan.objects.filter(signal_id__in=list(signal_ids), exit_kind="")
        .exclude(partials_hit={})
        .values_list("signal_id", "partials_hit")
    )
    return {signal_id: {int(index): quote for index, quote in hit.items()} for signal_id, hit in rows}
