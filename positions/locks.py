"""The lock order, in one place (as Saleor's ``lock_objects.py``).

A transaction that locks rows of several kinds takes them in this order, and
rows of one kind in ascending id, so two transactions never wait on each other
in a circle:

0. a client's exposure lock (``positions.exposure``: the EA poll), a
   transaction-scoped advisory lock taken before any row;
1. an instrument's sweep lock: a transaction-scoped advisory lock, *tried* by
   sweeps (a sweep skips an instrument another sweep holds, it never waits) and
   waited for only by the strategy's exit;
2. the signal's plan row (``SignalPlan``: sweeps, the strategy's exit), then the
   instrument's row (``Instrument.plans_version``, renewed by a sweep that saved
   plans, the strategy's exit, a publication or an edit of levels: they wait at
   most one sweep);
3. approval rows (a fill report; the withdrawal when a plan ends, which skips
   rows a fill holds);
4. a client's guard accounts, in device id order, then its guard row
   (``positions.guards``: a heartbeat locks its account and trips the guard; a re-arm
   locks every account of the client, then the guard);
5. position rows;
6. close-command rows.

The set-based close claim (``positions.closes``) locks its positions in SQL with
``POSITIONS_IN_ORDER``; everything else goes through the helpers below.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection

from positions.models import CloseCommand, OpenPosition
from signals_app.models import Approval

SWEEP_LOCK_NAMESPACE = 73110  # first key of the advisory locks: "this is the scanner's"
EXPOSURE_LOCK_NAMESPACE = 73111  # "this is a client's exposure (the EA poll's)"

# The claim's locking step: its candidate positions, locked in id order before they change.
POSITIONS_IN_ORDER = "ORDER BY p.id FOR UPDATE OF p"


def instruments_try_lock(instrument_ids: Iterable[int]) -> set[int]:
    """Try the sweep lock of each instrument (until the transaction ends); return
    those this transaction now holds. Never waits."""
    ordered = sorted(set(instrument_ids))
    if not ordered:
        return set()
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT id, pg_try_advisory_xact_lock(%s, id::int) FROM unnest(%s::bigint[]) AS id ORDER BY id",
            [SWEEP_LOCK_NAMESPACE, ordered],
        )
        return {instrument_id for instrument_id, locked in cursor.fetchall() if locked}


def client_exposure_lock(client_id: int) -> None:
    """Wait for the client's exposure lock (until the transaction ends): one poll of the
    client at a time counts and hands out approvals against its limits."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [EXPOSURE_LOCK_NAMESPACE, client_id])


def instrument_lock(instrument_id: int) -> None:
    """Wait for the instrument's sweep lock (until the transaction ends): for a writer that
    must not race a sweep of that instrument (the strategy's exit). Sweeps only try it."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [SWEEP_LOCK_NAMESPACE, instrument_id])


def approval_lock(*, approval_id: int, client_id: int) -> Approval | None:
    """The client's approval, locked (with its signal read alongside), or None."""
    return (
        Approval.objects.select_for_update(of=("self",))
        .select_related("signal__instrument")
        .filter(pk=approval_id, client_id=client_id)
        .first()
    )


def position_lock(position_id: int) -> OpenPosition:
    return (
        OpenPosition.objects.select_for_update(of=("self",)).select_related("instrument").get(pk=position_id)
    )


def positions_lock(
    position_ids: Iterable[int], *, skip_locked: bool = False, **filters
) -> list[OpenPosition]:
    """Lock the positions (those matching ``filters``) in id order; with ``skip_locked``
    leave out the ones another transaction holds."""
    return list(
        OpenPosition.objects.select_for_update(skip_locked=skip_locked)
        .filter(pk__in=sorted(set(position_ids)), **filters)
        .order_by("pk")
    )


def close_command_lock(command_id: int) -> CloseCommand:
    return CloseCommand.objects.select_for_update().get(pk=command_id)


def close_commands_lock(
    command_ids: Iterable[int], *, skip_locked: bool = False, **filters
) -> list[CloseCommand]:
    return list(
        CloseCommand.objects.select_for_update(skip_locked=skip_locked, of=("self",))
        .filter(pk__in=sorted(set(command_ids)), **filters)
        .order_by("pk")
    )
