"""The strategy's exit signal: the owner's trade is over, whatever the levels say.

``signal_exit`` ends the signal's plan (kind ``signal_exit``), withdraws its
approvals not yet filled, and queues a close of every open position through the
one claim. Idempotent: a second call, or a call after the plan already ended by
a level, changes nothing and says so. A fill that lands afterwards (an EA that
placed the trade before it heard) is closed by the next sweep: an ended plan is
a standing order.

Lock order (``positions.locks``): the instrument's sweep lock (waited for, so a
running sweep finishes first and the next one sees the ended plan), the plan row,
then positions inside the claim.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction

from core.errors import DomainError
from positions.choices import CloseReason
from positions.closes import Claim, CloseRequest, closes_claim
from positions.exit_plan import SIGNAL_EXIT, PlanState
from positions.locks import instrument_lock
from positions.models import SignalPlan
from positions.plan_store import plans_version_raise
from signals_app.choices import AuditAction, SignalStatus
from signals_app.events import Actor, audit
from signals_app.models import Signal
from signals_app.services import approvals_withdraw


@dataclass(frozen=True)
class SignalExitResult:
    signal_id: int
    exit_kind: str  # signal_exit, or the kind that ended the plan before
    already_ended: bool
    approvals_withdrawn: int
    closes_queued: int


def signal_exit(*, signal_id: int, by: Actor) -> SignalExitResult:
    signal = Signal.objects.filter(pk=signal_id).only("pk", "instrument_id", "status").first()
    if signal is None:
        raise DomainError.not_found()
    if signal.status != SignalStatus.PUBLISHED:
        raise DomainError.conflict(f"This signal is {signal.status}; only a published signal can exit.")
    with transaction.atomic():
        instrument_lock(signal.instrument_id)
        plan = SignalPlan.objects.select_for_update().filter(signal_id=signal_id).first()
        if plan is not None and plan.exit_kind:
            return SignalExitResult(signal_id, plan.exit_kind, True, 0, 0)
        state = PlanState.from_json(plan.state if plan else None)
        version = plans_version_raise([signal.instrument_id])[signal.instrument_id][1]
        SignalPlan.objects.update_or_create(
            signal_id=signal_id,
            defaults={
                "state": {**state.to_json(), "exit_kind": SIGNAL_EXIT},
                "exit_kind": SIGNAL_EXIT,
                "exit_quote": None,
                "exited_by": by.name,
                "book_version": version,
            },
        )
        withdrawn = approvals_withdraw(signal_ids=[signal_id], why="the strategy exited", by=by)
        queued = closes_claim(
            claim=Claim.SIGNAL_POSITIONS,
            requests=[CloseRequest(key=signal_id, reason=CloseReason.SIGNAL_EXIT)],
            by=by,
        )
        audit(
            by=by,
            action=AuditAction.SIGNAL_EXIT_REQUESTED,
            subject=signal,
            data={"approvals_withdrawn": withdrawn, "closes_queued": len(queued)},
        )
    return SignalExitResult(signal_id, SIGNAL_EXIT, False, withdrawn, len(queued))
