"""The one way a close is queued: ``closes_claim``.

The scanner (the plans' exits, partial take-profits and time exits), the
strategy's exit signal, a client's risk guard (``positions.guards``) and the owner
(manual close) all call this claim; nothing else inserts a close command. One SQL
statement per call, however many positions:

1. ``wanted``: the caller's rows (a position, signal or client id, with the
   reason, the triggering quote, a note, and for a partial close its fraction
   of the original volume and its index in the plan; for a time exit the
   latest opening time that is due; a priority when rows name one position
   twice);
2. ``chosen``: per row, the positions it names (a probe of the key's index, never
   a scan of every position) in a claimable status whose client allows it, that
   have no active command (and, for a partial, have not had that partial), with
   the volume to close: the whole remainder, or the fraction of the original
   volume rounded down to the 0.01 lot step, at most the remainder; then one row
   per position, the first by priority among those with something to close (a
   partial that rounds to 0 closes nothing and leaves the next one its turn);
3. ``locked``: those positions locked in id order (``positions.locks``), each
   checked again as it is once locked (a transaction that held it may have
   changed it since the statement's snapshot): still in a claimable status, the
   volume to close from what it has left now;
4. ``commands`` / ``claimed``: one pending close command each (``ON CONFLICT
   DO NOTHING`` on the partial unique indexes of active commands and of
   partials: the database, not this code, makes it exactly one), and only the
   positions whose command went in move to ``closing``;
5. ``audited``: one ``position.close_requested`` audit event per command;
6. after the commit, the devices of the new commands are woken
   (``core.wake``): their EAs' waiting long-polls answer at once.

However many callers race, each position gets one active close command, and
each partial take-profit at most one executed close.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import Any

from django.db import connection, transaction

from core.wake import wake_devices, wake_devices_now
from positions.choices import CloseReason, PositionStatus
from positions.claim_apart import apart_end, apart_start, chunks_by_key
from positions.locks import POSITIONS_IN_ORDER
from positions.models import CloseCommand, OpenPosition
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit_insert_sql, audit_sql_params


@dataclass(frozen=True)
class ClaimScope:
    """Which positions a claim row names, and which of them may be claimed."""

    match: str  # the positions column that the row's key is compared with
    statuses: tuple[str, ...]
    auto_close_only: bool  # only clients whose auto-close flag is on (the canary rollout)


class Claim(Enum):
    # The owner's hand: these positions, open or with a failed close (a live trade at the
    # broker either way), whatever the client's auto-close flag says.
    POSITIONS = ClaimScope("p.id", (PositionStatus.OPEN, PositionStatus.CLOSE_FAILED), False)
    # A rule that fired for a signal: its open positions of clients with auto-close on.
    SIGNAL_POSITIONS = ClaimScope("p.signal_id", (PositionStatus.OPEN,), True)
    # The market guard in close mode: an instrument's open positions, as a rule of the
    # server's (the canary flag applies as to the plans' exits).
    INSTRUMENT_POSITIONS = ClaimScope("p.instrument_id", (PositionStatus.OPEN,), True)
    # A client's risk guard tripped (positions.guards): every live trade of the client, a
    # failed close included, whatever its auto-close flag (the guard protects the account).
    CLIENT_POSITIONS = ClaimScope("p.client_id", (PositionStatus.OPEN, PositionStatus.CLOSE_FAILED), False)
    # ... and while it stays tripped, what opens later (a fill acknowledged after the trip, a
    # position a failed partial close reopened); a failed close waits for the owner.
    CLIENT_OPEN_POSITIONS = ClaimScope("p.client_id", (PositionStatus.OPEN,), False)


@dataclass(frozen=True)
class CloseRequest:
    key: int  # a position id or a signal id, as the claim's scope says
    reason: CloseReason
    trigger_quote: dict[str, Any] | None = None
    note: str = ""
    fraction: Decimal | None = None  # of the original volume; None: the whole remainder
    partial_index: int | None = None  # which partial take-profit of the plan
    opened_before: datetime | None = None  # only positions opened at or before this
    priority: int = 0  # lower wins when two rows name one position


logger = logging.getLogger(__name__)

_CLAIM = """
WITH wanted(key, reason, trigger_quote, note, fraction, partial_index, opened_before, priority) AS (
    SELECT * FROM unnest(%(keys)s::bigint[], %(reasons)s::text[], %(quotes)s::jsonb[], %(notes)s::text[],
                         %(fractions)s::numeric[], %(partials)s::smallint[], %(opened_before)s::timestamptz[],
                         %(priorities)s::int[])
),
chosen AS (
    SELECT DISTINCT ON (k.id) k.*
      FROM wanted w
     CROSS JOIN LATERAL (
        SELECT p.id, p.device_id, w.reason, w.trigger_quote, w.note, w.partial_index, w.priority, w.fraction,
               {volume_of_w} AS volume
          FROM positions_openposition p
          JOIN signals_app_client c ON c.id = p.client_id
         WHERE {match} = w.key AND p.status = ANY(%(statuses)s)
           AND (c.auto_close_enabled OR NOT %(auto_close_only)s)
           AND (w.opened_before IS NULL OR p.opened_at <= w.opened_before)
           -- never claim a position whose command could not be inserted below
           AND NOT EXISTS (SELECT 1 FROM positions_closecommand a
                            WHERE a.position_id = p.id AND a.status IN ('pending', 'delivered'))
           AND (w.partial_index IS NULL
                OR NOT EXISTS (SELECT 1 FROM positions_closecommand d
                                WHERE d.position_id = p.id AND d.partial_index = w.partial_index
                                  AND d.status IN ('pending', 'delivered', 'executed')))
        -- a probe of the key's index per row asked for, never a scan of every position
        OFFSET 0
     ) k
     WHERE k.volume > 0
     ORDER BY k.id, k.priority, k.partial_index
),
-- Locked in id order. What was chosen from the statement's snapshot is checked again on
-- each row as it is once locked (a transaction that held it may have changed it): its
-- status, and the volume to close from what it has left now.
locked AS (
    SELECT s.id, p.device_id, s.reason, s.trigger_quote, s.note, s.partial_index,
           {volume_of_s} AS volume
      FROM positions_openposition p JOIN chosen s ON s.id = p.id
     WHERE p.status = ANY(%(statuses)s)
     {lock}
),
commands AS (
    INSERT INTO positions_closecommand
        (position_id, device_id, volume, reason, status, attempts, next_attempt_at,
         trigger_quote, partial_index, requested_by, note, created_at)
    SELECT id, device_id, volume, reason, 'pending', 0, now(), trigger_quote, partial_index,
           %(audit_actor)s, note, now()
      FROM locked
     WHERE volume > 0
    ON CONFLICT DO NOTHING
    RETURNING id, position_id, device_id, reason, trigger_quote, note, volume, partial_index
),
-- Only a position whose command went in moves to closing, never one without it (a
-- command committed while another transaction held the row is a conflict above).
claimed AS (
    UPDATE positions_openposition p
       SET status = 'closing', updated_at = now()
      FROM commands c
     WHERE p.id = c.position_id
),
{audited}
SELECT position_id, id, device_id FROM commands
"""

_AUDITED = audit_insert_sql(
    cte="audited",
    source="commands",
    subject=OpenPosition,
    subject_id="position_id",
    data=(
        "jsonb_build_object('command_id', id, 'reason', reason, 'volume', volume,"
        " 'partial_index', partial_index, 'trigger_quote', trigger_quote, 'note', note)"
    ),
)
# The volume a row closes of position p: the whole remainder, or the row's fraction of the
# original volume rounded down to the lot step, at most the remainder. Chosen from the
# snapshot, then again from the locked row.
_VOLUME = """CASE WHEN {row}.fraction IS NULL THEN p.remaining_volume
     ELSE LEAST(p.remaining_volume, floor(p.volume * {row}.fraction / %(lot_step)s) * %(lot_step)s)
END"""
_STATEMENTS = {
    claim: _CLAIM.format(
        match=claim.value.match,
        lock=POSITIONS_IN_ORDER,
        audited=_AUDITED,
        volume_of_w=_VOLUME.format(row="w"),
        volume_of_s=_VOLUME.format(row="s"),
    )
    for claim in Claim
}
NOTE_MAX_LENGTH = 2000
# A claim is split over connections only when each chunk has at least this many rows:
# below it, one statement costs less than the threads' hand-offs.
CLAIM_CHUNK_MIN_REQUESTS = 250
LOT_STEP = Decimal("0.01")  # a partial close is rounded down to this


def closes_claim(
    *,
    claim: Claim,
    requests: list[CloseRequest],
    by: Actor,
    connections: int = 1,
    meanwhile: Callable[[], object] | None = None,
) -> dict[int, int]:
    """Queue a close of the whole remaining volume of every position the requests
    name that may be claimed; return {position id: close command id} for those queued.

    With ``connections`` > 1 (the scanner's, ``SWEEP_CLAIM_CONNECTIONS``), a claim of
    at least twice ``CLAIM_CHUNK_MIN_REQUESTS`` requests (a mass breach) is split by key
    into up to that many chunks of consecutive keys (rows naming one key stay together,
    so the chunks name disjoint positions), claimed at once, each on a connection and in
    a transaction of its own (``positions.claim_apart``), all ended before this returns.
    Exactly-once is the database's either way (the guarded ``open → closing`` and the
    partial unique indexes). Each chunk commits as it ends, before the caller's
    transaction; if one fails (a lock held past ``CLAIM_LOCK_TIMEOUT_MS``, a lost
    connection), what the others committed stands and the rest is claimed in the caller's
    transaction, where a claim too small to split runs anyway.

    ``meanwhile`` (the scanner's save of its plans) runs in the caller's transaction,
    before a claim there (the lock order: plan rows before positions), or while the
    chunks run: they lock nothing it locks (positions, commands, devices' keys) and it
    nothing of theirs (instruments, plans, approvals), so neither waits on the other."""
    requests = sorted(requests, key=lambda request: request.key)
    chunks = chunks_by_key(requests, parts=connections, minimum=CLAIM_CHUNK_MIN_REQUESTS)
    if len(chunks) == 1:
        if meanwhile is not None:
            meanwhile()
        if not requests:
            return {}
        with transaction.atomic():
            queued = _claim(claim, requests, by=by)
    else:
        started = apart_start(partial(_claim, claim, by=by), chunks)
        try:
            if meanwhile is not None:
                meanwhile()
        except BaseException:
            # The caller's transaction will not commit; the chunks' have: their EAs hear
            # of their commands now (the commands stand either way).
            committed, _ = apart_end(started)
            wake_devices_now(device_id for rows in committed for _, _, device_id in rows)
            raise
        committed, failure = apart_end(started)
        queued = [row for rows in committed for row in rows]
        if failure is not None:
            # What the committed chunks claimed stands; the rest is claimed here, in the
            # caller's transaction, as a claim too small to split would be (the positions
            # already closing are skipped by the claim's own guards): the sweep ends as if
            # nothing had failed, or fails whole if this fails too.
            logger.warning("close claim: a chunk failed (%s); claiming the rest in one statement", failure)
            with transaction.atomic():
                queued += _claim(claim, requests, by=by)
    # After the commit: the devices' waiting EAs hear of their commands at once.
    wake_devices(device_id for _, _, device_id in queued)
    return {position_id: command_id for position_id, command_id, _ in queued}


def _claim(claim: Claim, requests: list[CloseRequest], *, by: Actor) -> list[tuple[int, int, int]]:
    scope = claim.value
    with connection.cursor() as cursor:
        cursor.execute(
            _STATEMENTS[claim],
            {
                "keys": [request.key for request in requests],
                "reasons": [CloseReason(request.reason).value for request in requests],
                "quotes": [
                    json.dumps(request.trigger_quote) if request.trigger_quote is not None else None
                    for request in requests
                ],
                "notes": [request.note[:NOTE_MAX_LENGTH] for request in requests],
                "fractions": [request.fraction for request in requests],
                "partials": [request.partial_index for request in requests],
                "opened_before": [request.opened_before for request in requests],
                "priorities": [request.priority for request in requests],
                "lot_step": LOT_STEP,
                "statuses": [str(status) for status in scope.statuses],
                "auto_close_only": scope.auto_close_only,
                **audit_sql_params(by=by, action=AuditAction.POSITION_CLOSE_REQUESTED),
            },
        )
        return cursor.fetchall()


def close_command_request(
    *,
    position: OpenPosition,
    reason: CloseReason,
    by: Actor,
    trigger_quote: dict[str, Any] | None = None,
    note: str = "",
) -> CloseCommand | None:
    """Queue a close of one position's remaining volume; None if it is not closable."""
    queued = closes_claim(
        claim=Claim.POSITIONS,
        requests=[CloseRequest(key=position.pk, reason=reason, trigger_quote=trigger_quote, note=note)],
        by=by,
    )
    position.refresh_from_db(fields=["status"])
    return CloseCommand.objects.get(pk=queued[position.pk]) if position.pk in queued else None


@dataclass(frozen=True)
class ManualCloseResult:
    commands: dict[int, int]  # position id -> the close command queued for it
    skipped: list[int]  # positions that are not open (already closing or closed)
    unknown: list[int]  # ids that name no position

    @property
    def queued(self) -> list[int]:
        return sorted(self.commands)


def positions_close_manual(
    *, position_ids: list[int], reason: str, note: str, by: Actor
) -> ManualCloseResult:
    """The owner closes positions by hand, through the same claim as everything else:
    a double click, or a breach at the same moment, still makes one close."""
    ids = sorted(set(position_ids))
    text = f"{reason}: {note}" if note else reason
    commands = closes_claim(
        claim=Claim.POSITIONS,
        requests=[CloseRequest(key=pk, reason=CloseReason.MANUAL, note=text) for pk in ids],
        by=by,
    )
    known = set(OpenPosition.objects.filter(pk__in=ids).values_list("pk", flat=True))
    return ManualCloseResult(
        commands=commands,
        skipped=sorted(known - set(commands)),
        unknown=sorted(set(ids) - known),
    )
