"""What the exit plans say to close now, as the rows of one close claim
(``positions.closes``): the scanner's step 5.

An exit or a partial reached in this sweep is sent for every open position of
its signal; after that it is a standing order, sent again only for a signal
with a position claimable again (``dirty``: a fill, a reopen; see
``positions.plan_store``) or, now and then, for all (``recheck_all``). A time
exit is sent always: the index on (signal, opened_at) finds only the positions
that are due.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import connection

from positions.choices import CloseReason
from positions.closes import CloseRequest
from positions.exit_plan import BREAKEVEN, PARTIAL_TP, SIGNAL_EXIT, SL, TP, TRAILING
from positions.plan_book import Book, Entry
from positions.plan_store import PlanChange, partials_after, plan_exit_event, stored_quote
from positions.watched import ExitedSignal

# Exit kinds (positions.exit_plan) as close reasons.
REASON_FOR_KIND = {
    SL: CloseReason.STOP_LOSS,
    TP: CloseReason.TAKE_PROFIT,
    TRAILING: CloseReason.TRAILING,
    BREAKEVEN: CloseReason.BREAKEVEN,
    SIGNAL_EXIT: CloseReason.SIGNAL_EXIT,
}
PARTIAL_PRIORITY = 10  # an exit or a time exit closes the whole position first

_HELD_BACK_BY_CANARY = """
SELECT p.signal_id, count(*) FROM positions_openposition p
  JOIN signals_app_client c ON c.id = p.client_id
 WHERE p.signal_id = ANY(%s) AND p.status = 'open' AND NOT c.auto_close_enabled
 GROUP BY p.signal_id
"""


def standing_orders(
    *,
    now: datetime,
    changes: list[PlanChange],
    entries: list[Entry],
    exited: list[ExitedSignal],
    dirty: set[int],
    recheck_all: bool,
) -> list[CloseRequest]:
    """Step 5: what the plans say to close now, as rows of one claim. ``entries``: the
    watched plans that changed, have a time exit or are ``dirty`` (all, with
    ``recheck_all``); the others have nothing new to send. Nothing here reads what this
    sweep saves: the partials hit are the book's (exact under the instrument's lock) with
    this sweep's changes, so the claim may run while the plans are saved.

    An exit or a partial reached in this sweep is sent for every open position; after
    that, only for a signal with a position claimable again (``dirty``: a fill, a reopen)
    or, now and then, for all (``recheck_all``). A time exit is sent always: the index on
    (signal, opened_at) finds only the positions that are due.
    """
    by_signal = {change.signal_id: change for change in changes}
    requests = [
        CloseRequest(key=e.signal_id, reason=REASON_FOR_KIND[e.exit_kind], trigger_quote=e.exit_quote)
        for e in exited
        if e.signal_id in dirty or recheck_all
    ]
    # A partial reached in this sweep (not any change: a trailing stop moves on most sweeps).
    reached = {
        change.signal_id for change in changes if any(event.kind == PARTIAL_TP for event in change.events)
    }
    for entry in entries:
        signal = entry.signal
        change = by_signal.get(signal.signal_id)
        exit_event = plan_exit_event(change.events) if change else None
        if exit_event is not None:
            requests.append(
                CloseRequest(
                    key=signal.signal_id,
                    reason=REASON_FOR_KIND[exit_event.kind],
                    trigger_quote=exit_event.quote.as_json(signal.symbol),
                )
            )
            continue
        if signal.plan.max_holding_minutes:
            requests.append(
                CloseRequest(
                    key=signal.signal_id,
                    reason=CloseReason.TIME,
                    opened_before=now - timedelta(minutes=signal.plan.max_holding_minutes),
                    priority=1,
                )
            )
        resend = signal.signal_id in dirty or signal.signal_id in reached or recheck_all
        hit = (
            partials_after(entry.stored, change.events, signal.symbol)
            if change
            else entry.stored.partials_hit
        )
        for index, quote in sorted((int(i), q) for i, q in hit.items()) if resend else ():
            if index >= len(signal.plan.partials):
                continue  # the owner removed that partial after it was hit
            requests.append(
                CloseRequest(
                    key=signal.signal_id,
                    reason=CloseReason.PARTIAL_TP,
                    trigger_quote=stored_quote(quote),
                    fraction=signal.plan.partials[index][1],
                    partial_index=index,
                    priority=PARTIAL_PRIORITY + index,
                )
            )
    return requests


def signals_with_orders(
    books: list[Book], changed: set[int], dirty: set[int], *, now: float, recheck_all: bool
) -> list[Entry]:
    """The watched plans whose standing orders a sweep sends: those that changed, those
    with a time exit, the dirty ones, or (the safety net) all."""
    entries = []
    for book in books:
        watched = book.watched(now)
        wanted = watched if recheck_all else (changed | book.timed | dirty) & watched
        entries += [book.running[signal_id] for signal_id in sorted(wanted)]
    return entries


def held_back_by_canary(signal_ids: list[int]) -> dict[int, int]:
    """Per ended signal, its open positions that stay open: clients with auto-close off."""
    with connection.cursor() as cursor:
        cursor.execute(_HELD_BACK_BY_CANARY, [signal_ids])
        return dict(cursor.fetchall())
