"""The breach scanner: hidden levels against the owner's latest quotes, set-based.

Its cost grows with active signals and breached positions, never with open
positions: levels are per signal, so positions are only touched by the one
statement that closes a breached signal's positions.

A sweep:

1. finds the signals with open positions by a loose index scan over the
   partial index ``position_open_by_signal`` (one probe per distinct signal),
   and their hidden levels (``positions.watched``);
2. in one transaction, tries each instrument's sweep lock (``positions.locks``,
   a transaction-scoped advisory lock) and skips instruments another sweep holds:
   concurrent sweeps partition the work instead of doing it twice;
3. decrypts each remaining signal's hidden levels once;
4. reads every needed instrument's latest quote and the pending-breach marks in
   two Redis round trips;
5. judges each signal (``positions.rules.judge``: side of the book, tolerance,
   staleness, spike guard, recheck delay);
6. for confirmed breaches, one close claim (``positions.closes.closes_claim``,
   the same the owner's manual close uses) moves all their open positions (of
   clients with auto-close on) to ``closing``, inserts one close command each
   and their audit records, in one statement. Exactly-once comes from the
   database: the guarded ``open → closing`` update and the partial unique index
   on active close commands;
7. raises alerts (stale quotes, spikes, auto-close off) and records metrics.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from core.redis import get_redis
from positions import metrics
from positions.alerts import alert_raise
from positions.choices import AlertKind, CloseReason
from positions.closes import Claim, CloseRequest, closes_claim
from positions.locks import instruments_try_lock
from positions.quotes import Quote, quotes_latest
from positions.rules import CLOSE, NONE, STALE, STOP, WAIT, judge
from positions.sweep_history import SweepSummary, sweep_record
from positions.watched import WatchedSignal, signals_with_open_positions, watched_signals
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit
from signals_app.models import Signal

logger = logging.getLogger(__name__)

PENDING_KEY = "veilstop:breach-pending"  # signal id -> "level|first_seen_ts"
DRY_RUN_SEEN_KEY = "veilstop:breach-dry-run:{signal}:{level}"
SCANNER = Actor.system("scanner")
REASON_FOR_LEVEL = {STOP: CloseReason.STOP_LOSS, "take_profit": CloseReason.TAKE_PROFIT}

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


def _pending_marks() -> dict[int, tuple[str, float]]:
    marks = {}
    for signal_id, value in get_redis().hgetall(PENDING_KEY).items():
        level, _, first_seen = value.decode().partition("|")
        marks[int(signal_id)] = (level, float(first_seen))
    return marks


def sweep(*, symbols: set[str] | None = None, now: float | None = None) -> SweepReport:
    """One pass of the monitor, over every instrument or only ``symbols``."""
    started = time.perf_counter()
    report = SweepReport(dry_run=settings.POSITION_MONITOR_DRY_RUN)
    if not settings.POSITION_MONITOR_ENABLED:
        return report
    now = time.time() if now is None else now
    signal_ids = signals_with_open_positions()
    watched = watched_signals(signal_ids, symbols) if signal_ids else []
    if not watched:
        report.seconds = time.perf_counter() - started
        _record_sweep(report)
        return report

    quotes = quotes_latest(sorted({signal.symbol for signal in watched}))
    with transaction.atomic():
        locked = instruments_try_lock(signal.instrument_id for signal in watched)
        marks = _pending_marks()  # read under the lock: no other sweep rewrites them meanwhile
        report.skipped_locked_instruments = len({s.instrument_id for s in watched} - locked)
        mine = [signal for signal in watched if signal.instrument_id in locked]
        report.signals = len(mine)
        judgement = _judge_all(mine, quotes, marks, now, report)
        breached_ids = [signal.signal_id for signal, _, _ in judgement.to_close]
        if breached_ids and not report.dry_run:
            report.commands_created = _close_breached(judgement.to_close, quotes)
        held_back = _held_back_by_canary(breached_ids) if breached_ids else {}
    _after_sweep(judgement, held_back, quotes, report)
    report.seconds = time.perf_counter() - started
    _record_sweep(report)
    return report


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


@dataclass
class _Judgement:
    to_close: list[tuple[WatchedSignal, str, float]]
    waiting: dict[int, str]  # signal id -> pending mark
    settled: list[int]  # signals whose pending mark is void
    stale: set[str]  # symbols
    spikes: set[str]  # symbols


def _judge_all(watched, quotes, marks, now, report) -> _Judgement:
    to_close: list[tuple[WatchedSignal, str, float]] = []
    waiting: dict[int, str] = {}
    settled: list[int] = []
    stale: set[str] = set()
    spikes: set[str] = set()
    for signal in watched:
        quote = quotes.get(signal.symbol)
        if quote is None:
            report.outcomes["no_quote"] += 1
            stale.add(signal.symbol)
            continue
        verdict = judge(
            side=signal.side,
            sl=signal.sl,
            tp=signal.tp,
            bid=quote.bid,
            ask=quote.ask,
            quote_ts=quote.ts,
            received_at=quote.received_at,
            previous=quote.previous[:2] if quote.previous else None,
            pending_since=marks.get(signal.signal_id),
            now=now,
            tolerance=signal.tolerance,
            max_age_seconds=settings.QUOTE_MAX_AGE_SECONDS,
            recheck_delay_seconds=settings.BREACH_RECHECK_DELAY_SECONDS,
            max_jump=settings.SPIKE_MAX_JUMP_FRACTION,
        )
        report.outcomes[verdict.action] += 1
        if verdict.action == CLOSE:
            to_close.append((signal, verdict.level, verdict.first_seen_ts))
        elif verdict.action == WAIT:
            waiting[signal.signal_id] = f"{verdict.level}|{verdict.first_seen_ts!r}"
            if verdict.spike:
                spikes.add(signal.symbol)
        elif verdict.action == STALE:
            stale.add(signal.symbol)
            if signal.signal_id in marks:  # a breach seen before an outage proves nothing after it
                settled.append(signal.signal_id)
        elif verdict.action == NONE and signal.signal_id in marks:
            settled.append(signal.signal_id)
    return _Judgement(to_close, waiting, settled, stale, spikes)


def _trigger_quote(quote: Quote, first_seen_ts: float) -> dict:
    return {**quote.as_json(), "first_seen_ts": first_seen_ts}


def _close_breached(to_close, quotes) -> int:
    """One claim for every breached signal's positions (``positions.closes``)."""
    queued = closes_claim(
        claim=Claim.SIGNAL_POSITIONS,
        requests=[
            CloseRequest(
                key=signal.signal_id,
                reason=REASON_FOR_LEVEL[level],
                trigger_quote=_trigger_quote(quotes[signal.symbol], first_seen),
            )
            for signal, level, first_seen in to_close
        ],
        by=SCANNER,
    )
    return len(queued)


def _held_back_by_canary(signal_ids: list[int]) -> dict[int, int]:
    with connection.cursor() as cursor:
        cursor.execute(_HELD_BACK_BY_CANARY, [signal_ids])
        return dict(cursor.fetchall())


def _after_sweep(judgement: _Judgement, held_back: dict[int, int], quotes, report: SweepReport) -> None:
    """Redis marks, alerts, metrics and logs: after the commit, never inside it."""
    to_close, waiting, settled = judgement.to_close, judgement.waiting, judgement.settled
    redis = get_redis()
    pipeline = redis.pipeline(transaction=False)
    if waiting:
        pipeline.hset(PENDING_KEY, mapping=waiting)
    done = settled + [signal.signal_id for signal, _, _ in to_close]
    if done:
        pipeline.hdel(PENDING_KEY, *done)
    pipeline.execute()

    report.breached_signals = len(to_close)
    for outcome, count in report.outcomes.items():
        metrics.CHECKS.labels(status=outcome).inc(count)
    for signal, level, _ in to_close:
        metrics.BREACHES.labels(type="sl" if level == STOP else "tp").inc()
        # Once per signal and level, not once per sweep.
        if report.dry_run and redis.set(
            DRY_RUN_SEEN_KEY.format(signal=signal.signal_id, level=level), 1, nx=True, ex=86400
        ):
            logger.info("dry run: signal %s breached its %s; no close commands", signal.signal_id, level)
            audit(
                by=SCANNER,
                action=AuditAction.SIGNAL_BREACH_DRY_RUN,
                subject=Signal(pk=signal.signal_id),
                data={
                    "level": level,
                    "trigger_quote": _trigger_quote(quotes[signal.symbol], 0.0),
                },
            )
        if held_back.get(signal.signal_id):
            alert_raise(
                kind=AlertKind.AUTO_CLOSE_DISABLED,
                dedupe_key=f"canary:{signal.signal_id}",
                message=(
                    f"Signal #{signal.signal_id} breached; {held_back[signal.signal_id]} position(s) of "
                    "clients "
                    "with auto-close off stay open."
                ),
                instrument_id=signal.instrument_id,
            )
    for symbol in sorted(judgement.spikes):
        alert_raise(
            kind=AlertKind.SPIKE,
            dedupe_key=f"spike:{symbol}:{quotes[symbol].ts!r}",
            message=f"{symbol}: a quote jumped beyond the spike limit; closes wait for a confirming quote.",
        )
    for symbol in sorted(judgement.stale):
        quote = quotes.get(symbol)
        state = f"latest quote is {int(time.time() - quote.ts)} s old" if quote else "no quote at all"
        alert_raise(
            kind=AlertKind.STALE_QUOTE,
            dedupe_key=f"stale:{symbol}",
            message=f"{symbol}: {state}; breaches are not judged.",
        )
    if report.commands_created:
        logger.info(
            "scanner: %s breached signal(s), %s close command(s) queued",
            report.breached_signals,
            report.commands_created,
        )
