"""The breach scanner: every watched signal's exit plan against every quote of the
owner's feed since the last look, set-based.

Its cost grows with breaches, not with watched signals or open positions:
plans are per signal and kept decoded by each worker, ordered by the prices
that would change them; positions are only touched by the one claim that
closes what a plan says to close.

A sweep:

1. tries each instrument's sweep lock (``positions.locks``) and skips
   instruments another sweep holds: concurrent sweeps partition the work
   instead of doing it twice;
2. under the locks, takes each instrument's book (``positions.plan_book``: the
   watched signals — within their TTL or with live positions, plan not ended —
   decrypted once per worker and re-read only where ``plans_version`` moved);
3. reads each locked instrument's quote path (``positions.quote_path``: every
   fresh quote since the last look, spikes confirmed or dropped); a quote
   older than QUOTE_MAX_AGE_SECONDS by now counts for nothing and alerts; an
   instrument the market guard holds (``positions.market_guard``) is not judged
   and keeps its path, and in close mode its open positions are claimed;
4. asks the book which plans the path's lowest and highest prices can change
   (by range), walks only those (``positions.exit_plan.plan_advance``: stop,
   target, partials, trailing and breakeven, quote by quote) from their stored
   state (``positions.plan_store``);
5. saves and audits what changed and, meanwhile, closes what the plans say in
   one claim (``positions.closes.closes_claim``, the owner's manual close's
   too): every open position of an ended plan, each partial take-profit once
   per position, positions held past ``max_holding_minutes``
   (``positions.standing_orders``). Standing orders: a position filled or
   reopened later is closed by the next sweep. Exactly-once comes from the
   database (guarded ``open → closing``, partial unique indexes);
6. after the commit: trims the consumed paths, raises alerts (stale quotes,
   spikes, auto-close off), records metrics and the sweep.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction

from core.collector import collector_paused
from core.redis import get_redis
from positions import metrics
from positions.alerts import alert_raise
from positions.choices import AlertKind
from positions.closes import Claim, closes_claim
from positions.exit_plan import PARTIAL_TP, PLAN_UNWALKABLE, STOP_MOVED, PathQuote, PlanState, plan_advance
from positions.locks import instruments_try_lock
from positions.market_guard import GuardConfig, Verdict, guard_alerts, guard_closes, sweep_verdict
from positions.plan_book import (
    Book,
    books_current,
    books_forget,
    books_known,
    books_saved,
    books_unknown_here,
    instruments_named,
    instruments_versions,
)
from positions.plan_index import Extremes
from positions.plan_store import (
    PlanChange,
    SavedPlans,
    StoredPlan,
    plans_dirty,
    plans_recheck_all_due,
    plans_restore_dirty,
    plans_save,
    plans_take_dirty,
)
from positions.quote_path import JudgeablePath, path_judgeable, paths_read, paths_trim
from positions.quotes import quotes_latest
from positions.standing_orders import (
    REASON_FOR_KIND,
    held_back_by_canary,
    signals_with_orders,
    standing_orders,
)
from positions.sweep_history import SweepSummary, sweep_record
from positions.watched import WatchedSignal, unwalkable
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit
from signals_app.models import Signal

logger = logging.getLogger(__name__)

DRY_RUN_SEEN_KEY = "veilstop:breach-dry-run:{signal}:{kind}"
SCANNER = Actor.system("scanner")
SIGNALS = Claim.SIGNAL_POSITIONS


@dataclass
class SweepReport:
    signals: int = 0
    skipped_locked_instruments: int = 0
    outcomes: Tally = field(default_factory=Tally)
    breached_signals: int = 0
    commands_created: int = 0
    dry_run: bool = False
    seconds: float = 0.0


@dataclass
class _Sweep:
    now: float
    report: SweepReport
    changes: list[PlanChange] = field(default_factory=list)
    consumed: dict[str, int] = field(default_factory=dict)
    stale: dict[str, str] = field(default_factory=dict)  # symbol -> what is wrong with its quotes
    spikes: set[str] = field(default_factory=set)
    guards: dict[str, GuardConfig] = field(default_factory=dict)
    guard: Verdict = field(default_factory=Verdict)


@collector_paused()
def sweep(*, symbols: set[str] | None = None, now: float | None = None) -> SweepReport:
    """One pass of the monitor, over every instrument or only ``symbols``."""
    started = time.perf_counter()
    report = SweepReport(dry_run=settings.POSITION_MONITOR_DRY_RUN)
    if not settings.POSITION_MONITOR_ENABLED:
        return report
    work = _Sweep(now=time.time() if now is None else now, report=report)
    instruments = instruments_named(symbols)
    ids = {symbol: pk for pk, symbol in instruments.items()}
    locked: set[int] = set()
    taken: set[int] = set()
    saved: dict[int, SavedPlans] = {}
    try:
        with transaction.atomic():
            locked = instruments_try_lock(instruments)
            report.skipped_locked_instruments = len(set(instruments) - locked)
            dirty = plans_dirty()
            unknown = books_unknown_here(dirty - books_known(work.now, locked), locked) if dirty else {}
            rows = instruments_versions(locked)
            work.guards = {row[1]: GuardConfig.of(mode=row[4], quote_timeout=row[5]) for row in rows}
            books = books_current(rows, now=_at(work.now), stale=set(unknown.values()))
            exited = [exited for book in books for exited in book.ended.values()]
            report.signals = sum(len(book.watched(work.now)) for book in books)
            _judge(work, books)
            if not report.dry_run:
                # Taken before the claim: a position marked after this is seen by the claim
                # or marks again for the next sweep. Marks of signals of these instruments
                # that no book watches even after a re-read (nothing live) are dropped.
                held = books_known(work.now, locked) if dirty else set()
                taken = plans_take_dirty(dirty & (held | set(unknown)))
                for book in books:
                    book.mark_live(taken)
                recheck_all = symbols is None and plans_recheck_all_due()
                changed = {change.signal_id for change in work.changes}
                entries = signals_with_orders(books, changed, taken, now=work.now, recheck_all=recheck_all)
                requests = standing_orders(
                    now=_at(work.now),
                    changes=work.changes,
                    entries=entries,
                    exited=exited,
                    dirty=taken,
                    recheck_all=recheck_all,
                )
                queued = closes_claim(
                    claim=SIGNALS,
                    requests=requests,
                    by=SCANNER,
                    connections=settings.SWEEP_CLAIM_CONNECTIONS,
                    meanwhile=lambda: saved.update(plans_save(work.changes, by=SCANNER)),
                )
                report.commands_created = len(queued) + guard_closes(work.guard, ids)
            ended = [change.signal_id for change in work.changes if change.state.exit_kind]
            held_back = held_back_by_canary(ended) if ended else {}
    except BaseException:
        plans_restore_dirty(taken)
        books_forget(locked)
        raise
    books_saved(saved, books)
    paths_trim(work.consumed)
    guard_alerts(work.guard, ids)
    _after_sweep(work, held_back)
    report.seconds = time.perf_counter() - started
    _record_sweep(report)
    return report


def _at(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, tz=UTC)


def _fresh(work: _Sweep, quote: PathQuote) -> bool:
    """A quote counts only while it is fresh: its age runs from the earlier of its own
    time and its arrival, so a feed clock running ahead cannot keep it fresh."""
    return work.now - min(quote.ts, quote.received_at) <= settings.QUOTE_MAX_AGE_SECONDS


def _judge(work: _Sweep, books: list[Book]) -> None:
    """Steps 3 and 4: each locked instrument's path through the plans it may change."""
    # Only instruments with a plan to walk: an instrument nobody trades raises no stale alert.
    books = [book for book in books if book.watched(work.now)]
    symbols = sorted(book.symbol for book in books)
    paths: dict[str, JudgeablePath] = {
        symbol: path_judgeable(entries) for symbol, entries in paths_read(symbols).items()
    }
    latest = quotes_latest(symbols)
    max_age = settings.QUOTE_MAX_AGE_SECONDS
    work.guard = guard = sweep_verdict(paths, latest, work.guards, now=work.now)
    for symbol, path in paths.items():
        if symbol in guard.held:  # judged, with the quotes kept, once the hold ends
            if symbol in guard.silent:
                work.stale.setdefault(symbol, guard.silent[symbol] + " (market guard)")
            continue
        if path.consumed_seq is not None:
            work.consumed[symbol] = path.consumed_seq
        if path.dropped_spikes or path.held_spike:
            work.spikes.add(symbol)
        quote = latest.get(symbol)
        if quote is None:
            work.stale[symbol] = "no quote at all"
        elif (age := work.now - min(quote.ts, quote.received_at or quote.ts)) > max_age:
            work.stale[symbol] = f"latest quote is {int(age)} s old"
        late = sum(1 for quote in path.quotes if not _fresh(work, quote))
        if late and symbol not in work.stale:
            # Fresh on arrival, stale by the time a sweep got to them (workers behind):
            # never a close on stale data, but never silently either.
            work.stale[symbol] = f"{late} quote(s) aged past QUOTE_MAX_AGE_SECONDS before a sweep judged them"
    for book in books:
        path = paths[book.symbol]
        fresh = [] if book.symbol in guard.held else [q for q in path.quotes if _fresh(work, q)]
        watched = book.watched(work.now)
        reached = [e for e in book.reached(Extremes.of(fresh)) if e.signal.signal_id in watched]
        # The plans the path cannot change: nothing to walk, counted as the path says.
        if book.symbol in guard.held:
            outcome = "held"
        elif book.symbol in work.stale and not fresh:
            outcome = "stale" if book.symbol in latest else "no_quote"
        else:
            outcome = "none"
        work.report.outcomes[outcome] += len(watched) - len(reached)
        atr_memo: dict = {}
        for entry in reached:
            _walk(work, book.with_distance(entry, atr_memo), entry.stored, fresh, latest)


def _walk(
    work: _Sweep, signal: WatchedSignal, before: StoredPlan, fresh: list[PathQuote], latest: dict
) -> None:
    quotes = [q for q in fresh if q.received_at >= signal.published_at]
    try:
        state, events = plan_advance(
            signal.plan, before.state, quotes, recheck_delay_seconds=settings.BREACH_RECHECK_DELAY_SECONDS
        )
    except PLAN_UNWALKABLE as error:
        # One plan that cannot be walked (state from older levels, say) must not stop the
        # others: it is left as it was and the owner told.
        logger.exception("scanner: the plan of signal %s could not be walked", signal.signal_id)
        unwalkable(signal.signal_id, type(error).__name__)
        return
    if signal.symbol in work.stale and not quotes:
        work.report.outcomes["stale" if signal.symbol in latest else "no_quote"] += 1
    elif state.exit_kind:
        work.report.outcomes["close"] += 1
    elif state.pending:
        work.report.outcomes["wait"] += 1
    else:
        work.report.outcomes["none"] += 1
    if _changed(before.state, state):
        work.changes.append(
            PlanChange(signal.signal_id, signal.instrument_id, signal.symbol, before, state, events)
        )


def _changed(before: PlanState, after: PlanState) -> bool:
    """Anything but the read position changed. Re-reading quotes that changed nothing
    changes nothing again, so an unchanged plan is not written."""
    return replace(before, last_seq=0) != replace(after, last_seq=0)


def _after_sweep(work: _Sweep, held_back: dict[int, int]) -> None:
    """Alerts, metrics and logs: after the commit, never inside it."""
    report = work.report
    redis = get_redis()
    for outcome, count in report.outcomes.items():
        metrics.CHECKS.labels(status=outcome).inc(count)
    for change in work.changes:
        for event in change.events:
            if event.kind == STOP_MOVED:
                continue
            metrics.BREACHES.labels(type=event.kind).inc()
            if event.kind != PARTIAL_TP:
                report.breached_signals += 1
            # Once per signal and kind, not once per sweep.
            if report.dry_run and redis.set(
                DRY_RUN_SEEN_KEY.format(signal=change.signal_id, kind=event.kind), 1, nx=True, ex=86400
            ):
                logger.info(
                    "dry run: signal %s reached its %s; no close commands", change.signal_id, event.kind
                )
                audit(
                    by=SCANNER,
                    action=AuditAction.SIGNAL_BREACH_DRY_RUN,
                    subject=Signal(pk=change.signal_id),
                    data={
                        "level": REASON_FOR_KIND.get(event.kind, event.kind),
                        "trigger_quote": event.quote.as_json(change.symbol),
                    },
                )
        if held_back.get(change.signal_id):
            alert_raise(
                kind=AlertKind.AUTO_CLOSE_DISABLED,
                dedupe_key=f"canary:{change.signal_id}",
                message=(
                    f"Signal #{change.signal_id} reached its exit; {held_back[change.signal_id]} position(s) "
                    "of clients with auto-close off stay open."
                ),
            )
    for symbol in sorted(work.spikes):
        alert_raise(
            kind=AlertKind.SPIKE,
            dedupe_key=f"spike:{symbol}",
            message=f"{symbol}: a quote jumped beyond the spike limit; the next one must confirm it.",
        )
    for symbol, state in sorted(work.stale.items()):
        alert_raise(
            kind=AlertKind.STALE_QUOTE,
            dedupe_key=f"stale:{symbol}",
            message=f"{symbol}: {state}; breaches are not judged.",
        )
    if report.commands_created:
        logger.info(
            "scanner: %s plan exit(s), %s close command(s) queued",
            report.breached_signals,
            report.commands_created,
        )


def _record_sweep(report: SweepReport) -> None:
    """Metrics, and the dashboard's view of the monitor (in Redis: no table write per sweep)."""
    metrics.SWEEP_DURATION.observe(report.seconds)
    sweep_record(
        SweepSummary(
            at=time.time(),
            seconds=report.seconds,
            signals=report.signals,
            commands=report.commands_created,
            dry_run=report.dry_run,
        )
    )
