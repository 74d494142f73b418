"""A sweep worker's book: per instrument, the plans it watches, decoded once and kept
in process memory, with their levels ordered so a sweep finds the plans a path of
quotes can change by range, never by walking them all.

What is cached, and why it is never stale where it matters:

- the decoded plan of each signal (``owner_only`` decrypted and parsed), keyed by
  the signal's ``updated_at`` (an edit of the levels changes it);
- each plan's stored state (``SignalPlan``), with the instrument's
  ``plans_version`` it was saved at.

Every writer of either (a publication, an edit of the levels, a sweep saving
plans, the strategy's exit) raises ``Instrument.plans_version`` in its own
transaction. A sweep reads it under the instrument's sweep lock: unchanged, the
book is exact; changed by someone else, the book re-reads the instrument's
members (one query, nothing decrypted) and decrypts only what moved. A new
member through a late fill is found by its dirty mark (``positions.plan_store``);
every book is re-read at least every ``REFRESH_SECONDS`` all the same (the
safety net for a mark lost with Redis). Plaintext lives in this process only;
new Fernet keys mean a restart, which empties it.

The index (``positions.plan_index``) orders each side's plans by the prices that
would change them; plans under a recheck delay and ATR trailing stops (their
distance moves with every bar) are walked every sweep.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal

from django.db import connection

from positions.plan_index import Extremes, SideIndex
from positions.plan_store import EMPTY, SavedPlans, StoredPlan, plans_read
from positions.watched import (
    ExitedSignal,
    WatchedSignal,
    exited_read,
    levels_read,
    trailing_distance,
    watched_signal,
)
from signals_app.hidden_levels import HiddenLevels
from signals_app.models import MAX_TTL_MINUTES, Instrument, Signal

REFRESH_SECONDS = 60

# Signals with live positions (a loose index scan of position_live_by_instrument) and
# published signals of the instrument still in their TTL, with what a book needs to
# know without decrypting anything.
_MEMBERS = """
WITH RECURSIVE walk AS (
    (SELECT signal_id FROM positions_openposition
      WHERE instrument_id = %(instrument)s AND status IN ('open', 'closing')
      ORDER BY signal_id LIMIT 1)
    UNION ALL
    SELECT (SELECT p.signal_id FROM positions_openposition p
             WHERE p.instrument_id = %(instrument)s AND p.status IN ('open', 'closing')
               AND p.signal_id > walk.signal_id
             ORDER BY p.signal_id LIMIT 1)
      FROM walk WHERE walk.signal_id IS NOT NULL
), members AS (
    SELECT signal_id AS id, true AS live FROM walk WHERE signal_id IS NOT NULL
    UNION
    SELECT id, false FROM signals_app_signal
     WHERE instrument_id = %(instrument)s AND status = 'published' AND published_at > %(oldest)s
       AND published_at + ttl_minutes * interval '1 minute' > %(now)s
)
SELECT s.id, bool_or(m.live), s.side, s.entry_price, s.published_at, s.ttl_minutes, s.updated_at,
       coalesce(sp.exit_kind, ''), coalesce(sp.book_version, -1)
  FROM members m
  JOIN signals_app_signal s ON s.id = m.id
  LEFT JOIN positions_signalplan sp ON sp.signal_id = s.id
 GROUP BY s.id, sp.signal_id
"""


@dataclass
class Entry:
    """One running plan: decoded once, its state as last saved."""

    signal: WatchedSignal
    levels: HiddenLevels
    levels_at: datetime  # Signal.updated_at when decoded
    stored: StoredPlan
    stored_version: int  # SignalPlan.book_version; -1 without a row
    watched_until: float  # end of the TTL; a live position keeps it watched after
    live: bool

    @property
    def atr_trailing(self) -> bool:
        return self.levels.trailing is not None and self.levels.trailing.distance_pips is None

    def watched(self, now: float) -> bool:
        return self.live or now < self.watched_until


@dataclass
class Book:
    instrument_id: int
    symbol: str
    pip_size: Decimal
    version: int | None = None  # None: re-read on the next sweep
    refreshed_at: float = 0.0
    running: dict[int, Entry] = field(default_factory=dict)
    ended: dict[int, ExitedSignal] = field(default_factory=dict)
    sides: dict[str, SideIndex] = field(default_factory=dict)
    always: set[int] = field(default_factory=set)  # walked every sweep
    timed: set[int] = field(default_factory=set)  # plans with a time exit (max_holding_minutes)
    _watched: set[int] | None = None  # kept until the first TTL of an unfilled signal runs out
    _watched_until: float = 0.0

    ttl_ends_at: float = math.inf  # when the first TTL of a plan watched for its TTL alone runs out

    def mark_live(self, signal_ids: set[int]) -> None:
        """Plans with a position just filled or reopened (their dirty marks): watched past
        their TTL. A re-read when the TTL runs out would say so too; this is at once."""
        for signal_id in signal_ids & self.running.keys():
            self.running[signal_id].live = True
            self._watched = None

    def watched(self, now: float) -> set[int]:
        """The running plans watched at ``now``: within their TTL or with live positions.
        Recounted only when a TTL runs out or the book changed, not on every sweep."""
        if self._watched is None or now >= self._watched_until:
            self._watched = {i for i, entry in self.running.items() if entry.watched(now)}
            ttls = [e.watched_until for i, e in self.running.items() if i in self._watched and not e.live]
            self._watched_until = min(ttls, default=math.inf)
        return self._watched

    def index(self, entry: Entry) -> None:
        signal_id = entry.signal.signal_id
        self._watched = None
        if entry.signal.plan.max_holding_minutes:
            self.timed.add(signal_id)
        side = entry.signal.plan.side
        self.sides.setdefault(side, SideIndex(side)).put(
            signal_id,
            entry.signal.plan,
            entry.stored.state,
            best_moves_stop=entry.signal.plan.moves_stop and not entry.atr_trailing,
        )
        if entry.stored.state.pending is not None or entry.atr_trailing:
            self.always.add(signal_id)
        else:
            self.always.discard(signal_id)

    def unindex(self, signal_id: int) -> None:
        for side in self.sides.values():
            side.drop(signal_id)
        self.always.discard(signal_id)
        self.timed.discard(signal_id)
        self._watched = None

    def reached(self, path: Extremes | None) -> list[Entry]:
        """The running plans the path may change, in signal order."""
        found = set(self.always)
        if path is not None:
            for side in self.sides.values():
                found |= side.reached(path)
        return [self.running[signal_id] for signal_id in sorted(found) if signal_id in self.running]

    def with_distance(self, entry: Entry, memo: dict) -> WatchedSignal:
        """The entry's signal with its ATR trailing distance as of now (once per sweep)."""
        if not entry.atr_trailing:
            return entry.signal
        trailing = entry.levels.trailing
        key = (trailing.atr_period, trailing.atr_timeframe, trailing.distance_atr)
        if key not in memo:
            memo[key] = trailing_distance(
                entry.levels, instrument_id=self.instrument_id, pip_size=self.pip_size
            )
        return replace(entry.signal, plan=replace(entry.signal.plan, trailing_distance=memo[key]))

    def saved(self, signal_id: int, stored: StoredPlan, version: int) -> None:
        """After the commit: a plan this worker saved."""
        entry = self.running.get(signal_id)
        if entry is None:
            return
        if stored.exit_kind:
            self.unindex(signal_id)
            del self.running[signal_id]
            if entry.live:
                self.ended[signal_id] = ExitedSignal(
                    signal_id, self.instrument_id, stored.exit_kind, stored.exit_quote
                )
            return
        entry.stored, entry.stored_version = stored, version
        self.index(entry)


def instruments_named(symbols: set[str] | None) -> dict[int, str]:
    """{id: symbol} of every instrument, or of those named."""
    rows = Instrument.objects.all() if symbols is None else Instrument.objects.filter(symbol__in=symbols)
    return dict(rows.values_list("pk", "symbol"))


def instruments_versions(instrument_ids: set[int]) -> list[tuple]:
    """Read under the sweep locks: every writer of what the books hold raises the version.
    Each row: (id, symbol, pip size, plans_version, then the market guard's mode and quote
    timeout, which ``positions.market_guard`` reads from the same row)."""
    return list(
        Instrument.objects.filter(pk__in=instrument_ids)
        .order_by("pk")
        .values_list(
            "pk",
            "symbol",
            "pip_size",
            "plans_version",
            "market_guard_mode",
            "market_guard_quote_timeout_seconds",
        )
    )


# One per worker process: {instrument id: Book}.
_BOOKS: dict[int, Book] = {}


def books_current(instruments: list[tuple], *, now: datetime, stale: set[int]) -> list[Book]:
    """The book of each (id, symbol, pip size, plans_version), re-read where it moved.
    Call under the instruments' sweep locks; ``stale`` are instruments to re-read anyway."""
    books = []
    clock = time.monotonic()
    for instrument_id, symbol, pip_size, version, *_ in instruments:
        book = _BOOKS.get(instrument_id)
        if book is None or book.pip_size != pip_size or book.symbol != symbol:
            book = _BOOKS[instrument_id] = Book(instrument_id, symbol, pip_size)
        if (
            book.version != version
            or instrument_id in stale
            or clock - book.refreshed_at > REFRESH_SECONDS
            # A TTL ran out: whether that signal still has live positions (filled within
            # its TTL, say) is read again, never assumed from the last read.
            or now.timestamp() >= book.ttl_ends_at
        ):
            _refresh(book, now=now)
            book.version, book.refreshed_at = version, clock
        books.append(book)
    return books


def books_known(now: float, instrument_ids: set[int]) -> set[int]:
    """Every signal the books of these instruments watch at ``now`` (running or ended)."""
    books = [_BOOKS[i] for i in instrument_ids if i in _BOOKS]
    return {signal_id for book in books for signal_id in (*book.watched(now), *book.ended)}


def books_saved(saved: dict[int, SavedPlans], books: list[Book]) -> None:
    """After a sweep's commit: the plans it saved. A version that had moved before this save
    (a publication or an edit committed meanwhile) re-reads the book next time."""
    for book in books:
        plans = saved.get(book.instrument_id)
        if plans is None:
            continue
        exact = book.version is not None and plans.before == book.version
        for signal_id, stored in plans.plans.items():
            book.saved(signal_id, stored, plans.version)
        book.version = plans.version if exact else None


def books_unknown_here(unknown: set[int], locked: set[int]) -> dict[int, int]:
    """Dirty signals (a fill, a reopen) of the locked instruments that no book watches:
    {signal id: instrument id}. A late fill made such a signal a member again, so its
    instrument's book is re-read now."""
    if not unknown:
        return {}
    rows = Signal.objects.filter(pk__in=unknown, instrument_id__in=locked)
    return dict(rows.values_list("pk", "instrument_id"))


def books_forget(instrument_ids: set[int]) -> None:
    """A sweep that did not commit: its books are re-read next time."""
    for instrument_id in instrument_ids:
        if instrument_id in _BOOKS:
            _BOOKS[instrument_id].version = None


def books_clear() -> None:
    _BOOKS.clear()


def _refresh(book: Book, *, now: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            _MEMBERS,
            {
                "instrument": book.instrument_id,
                "oldest": now - timedelta(minutes=MAX_TTL_MINUTES),
                "now": now,
            },
        )
        rows = cursor.fetchall()
    old_running, old_ended = book.running, book.ended
    running = {row[0]: row for row in rows if not row[7]}
    # An ended plan matters while it has live positions: they are closed by its kind.
    ended = [row[0] for row in rows if row[7] and row[1]]
    levels = levels_read(
        [i for i, row in running.items() if i not in old_running or old_running[i].levels_at != row[6]]
    )
    stale_states = {
        i for i, row in running.items() if i not in old_running or old_running[i].stored_version != row[8]
    }
    stored = plans_read(sorted(stale_states))
    book.running, book.sides, book.always, book.timed = {}, {}, set(), set()
    book.ended = {i: old_ended[i] for i in ended if i in old_ended}
    book.ended.update(exited_read([i for i in ended if i not in old_ended]))
    for signal_id, (_, live, side, entry_price, published_at, ttl, updated_at, _, version) in running.items():
        previous = old_running.get(signal_id)
        if signal_id in levels:
            parsed = levels[signal_id]
            if parsed is None:
                continue  # unreadable: levels_read alerted
            signal = watched_signal(
                signal_id,
                instrument_id=book.instrument_id,
                symbol=book.symbol,
                pip_size=book.pip_size,
                side=side,
                entry=entry_price,
                published_at=published_at,
                levels=parsed,
            )
        else:
            parsed, signal = previous.levels, previous.signal
        entry = Entry(
            signal=signal,
            levels=parsed,
            levels_at=updated_at,
            stored=stored.get(signal_id, EMPTY) if signal_id in stale_states else previous.stored,
            stored_version=version,
            watched_until=(published_at + timedelta(minutes=ttl)).timestamp() if published_at else 0.0,
            live=live,
        )
        book.running[signal_id] = entry
        book.index(entry)
    book.ttl_ends_at = min(
        (entry.watched_until for entry in book.running.values() if not entry.live), default=math.inf
    )
