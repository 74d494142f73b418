"""The breach scanner: every watched signal's exit plan against every quote of the
owner's feed since the last look, set-based.

Its cost grows with watched signals and with breaches, never with open
positions: plans are per signal, and positions are only touched by the one
claim that closes what a plan says to close.

A sweep:

1. finds the watched signals (``positions.watched``: within their TTL or with
   live positions, plan not ended) through a loose index scan, and decrypts
   each one's plan once;
2. in one transaction, tries each instrument's sweep lock (``positions.locks``)
   and skips instruments another sweep holds: concurrent sweeps partition the
   work instead of doing it twice;
3. reads each locked instrument's quote path (``positions.quote_path``: every
   fresh quote since the last look, spikes confirmed or dropped); a quote
   older than QUOTE_MAX_AGE_SECONDS by now counts for nothing and alerts;
4. walks each plan through the path (``positions.exit_plan.plan_advance``:
   stop, target, partials, trailing and breakeven, quote by quote) from its
   stored state (``positions.plan_store``), and saves and audits what changed;
5. closes what the plans say, in one claim (``positions.closes.closes_claim``,
   the same the owner's manual close uses): every open position of an ended
   plan, each partial take-profit once per position, positions held past
   ``max_holding_minutes`` (``positions.standing_orders``). Standing orders:
   a position filled or reopened later is closed by the next sweep.
   Exactly-once comes from the database (guarded ``open → closing``, partial
   unique indexes);
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
from django.db import connection, transaction

from core.redis import get_redis
from positions import metrics
from positions.alerts import alert_raise
from positions.choices import AlertKind
from positions.closes import Claim, closes_claim
from positions.exit_plan import PARTIAL_TP, PLAN_UNWALKABLE, STOP_MOVED, PathQuote, PlanState, plan_advance
from positions.locks import instruments_try_lock
from positions.plan_store import (
    EMPTY,
    PlanChange,
    plans_lock,
    plans_recheck_all_due,
    plans_restore_dirty,
    plans_save,
    plans_take_dirty,
)
from positions.quote_path import JudgeablePath, path_judgeable, paths_read, paths_trim
from positions.quotes import quotes_latest
from positions.standing_orders import REASON_FOR_KIND, standing_orders
from positions.sweep_history import SweepSummary, sweep_record
from positions.watched import (
    WatchedSignal,
    exited_signals,
    signals_to_watch,
    unwalkable,
    watched_signals,
)
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit
from signals_app.models import Signal

logger = logging.getLogger(__name__)

DRY_RUN_SEEN_KEY = "veilstop:breach-dry-run:{signal}:{kind}"
SCANNER = Actor.system("scanner")


_HELD_BACK_BY_CANARY = """
SELECT p.signal_id, count(*) FROM positions_openposition p
  JOIN signals_app_client c ON c.id = p.client_id
 WHERE p.signal_id = ANY(%s) AND p.status = 'open' AND NOT c.auto_close_enabled
 GROUP BY p.signal_id
"""


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
    symbols: dict[int, str] = field(default_factory=dict)  # instrument id -> symbol


def sweep(*, symbols: set[str] | None = None, now: float | None = None) -> SweepReport:
    """One pass of the monitor, over every instrument or only ``symbols``."""
    started = time.perf_counter()
    report = SweepReport(dry_run=settings.POSITION_MONITOR_DRY_RUN)
    if not settings.POSITION_MONITOR_ENABLED:
        return report
    work = _Sweep(now=time.time() if now is None else now, report=report)
    to_watch = signals_to_watch(now=_at(work.now))
    watched = watched_signals(to_watch.running, symbols) if to_watch.running else []
    exited = exited_signals(to_watch.ended, symbols=symbols) if to_watch.ended else []
    instrument_ids = {signal.instrument_id for signal in watched}
    work.symbols = {signal.instrument_id: signal.symbol for signal in watched}
    taken: set[int] = set()
    try:
        with transaction.atomic():
            locked = instruments_try_lock(instrument_ids | {signal.instrument_id for signal in exited})
            report.skipped_locked_instruments = len(instrument_ids - locked)
            mine = [signal for signal in watched if signal.instrument_id in locked]
            exited = [signal for signal in exited if signal.instrument_id in locked]
            report.signals = len(mine)
            _judge(work, mine)
            if not report.dry_run:
                plans_save(work.changes, by=SCANNER)
                # Taken before the claim: a position marked after this is seen by the claim
                # or marks again for the next sweep.
                taken = plans_take_dirty([s.signal_id for s in mine] + [s.signal_id for s in exited])
                requests = standing_orders(
                    now=_at(work.now),
                    changes=work.changes,
                    mine=mine,
                    exited=exited,
                    dirty=taken,
                    recheck_all=_recheck_all(symbols),
                )
                report.commands_created = len(
                    closes_claim(claim=Claim.SIGNAL_POSITIONS, requests=requests, by=SCANNER)
                )
            ended = [change.signal_id for change in work.changes if change.state.exit_kind]
            held_back = _held_back_by_canary(ended) if ended else {}
    except BaseException:
        plans_restore_dirty(taken)
        raise
    paths_trim(work.consumed)
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


def _judge(work: _Sweep, mine: list[WatchedSignal]) -> None:
    """Steps 3 and 4: each locked instrument's path through each of its plans."""
    symbols = sorted({signal.symbol for signal in mine})
    paths: dict[str, JudgeablePath] = {
        symbol: path_judgeable(entries) for symbol, entries in paths_read(symbols).items()
    }
    latest = quotes_latest(symbols)
    max_age = settings.QUOTE_MAX_AGE_SECONDS
    for symbol, path in paths.items():
        if path.consumed_seq is not None:
            work.consumed[symbol] = path.consumed_seq
        if path.dropped_spikes or path.held_spike:
            work.spikes.add(symbol)
        quote = latest.get(symbol)
        if quote is None:
            work.stale[symbol] = "no quote at all"
        elif (age := work.now - min(quote.ts, quote.received_at or quote.ts)) > max_age:
            work.stale[symbol] = f"latest quote is {int(age)} s old"
    stored = plans_lock(signal.signal_id for signal in mine)
    for symbol, path in paths.items():
        late = sum(1 for quote in path.quotes if not _fresh(work, quote))
        if late and symbol not in work.stale:
            # Fresh on arrival, stale by the time a sweep got to them (workers behind):
            # never a close on stale data, but never silently either.
            work.stale[symbol] = f"{late} quote(s) aged past QUOTE_MAX_AGE_SECONDS before a sweep judged them"
    for signal in mine:
        path = paths[signal.symbol]
        fresh = [q for q in path.quotes if q.received_at >= signal.published_at and _fresh(work, q)]
        before = stored.get(signal.signal_id, EMPTY)
        try:
            state, events = plan_advance(
                signal.plan, before.state, fresh, recheck_delay_seconds=settings.BREACH_RECHECK_DELAY_SECONDS
            )
        except PLAN_UNWALKABLE as error:
            # One plan that cannot be walked (state from older levels, say) must not stop the
            # others: it is left as it was and the owner told.
            logger.exception("scanner: the plan of signal %s could not be walked", signal.signal_id)
            unwalkable(signal.signal_id, type(error).__name__)
            continue
        if signal.symbol in work.stale and not fresh:
            work.report.outcomes["stale" if signal.symbol in latest else "no_quote"] += 1
        elif state.exit_kind:
            work.report.outcomes["close"] += 1
        elif state.pending:
            work.report.outcomes["wait"] += 1
        else:
            work.report.outcomes["none"] += 1
        if _changed(before.state, state):
            work.changes.append(PlanChange(signal.signal_id, signal.symbol, before, state, events))


def _changed(before: PlanState, after: PlanState) -> bool:
    """Anything but the read position changed. Re-reading quotes that changed nothing
    changes nothing again, so an unchanged plan is not written."""
    return replace(before, last_seq=0) != replace(after, last_seq=0)


def _recheck_all(symbols: set[str] | None) -> bool:
    return symbols is None and plans_recheck_all_due()


def _held_back_by_canary(signal_ids: list[int]) -> dict[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(_HELD_BACK_BY_CANARY, [signal_ids])
        return dict(cursor.fetchall())


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
