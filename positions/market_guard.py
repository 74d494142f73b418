"""The market guard: per instrument, an abnormal market either holds the breach
judgment there (``hold``, the default) or closes every open position there
(``close``), as the owner chose (``Instrument.market_guard_mode``).

Abnormal is one of:

- a spread wider than ``market_guard_spread_factor`` times the median of the
  instrument's recent spreads (the last MARKET_GUARD_SPREAD_WINDOW fresh quotes);
- a gap: the mid price moved more than ``market_guard_gap_pips`` (the
  instrument's pip size) since the previous quote;
- silence: no quote for ``market_guard_quote_timeout_seconds`` while the
  instrument is watched (it has live positions or signals open for entries).

Empty thresholds take the global settings (MARKET_GUARD_*); 0 turns a check off.

1. Quote ingest (``positions.quotes``, inside the one Lua script that stores a
   batch, no extra round trip) flags each fresh quote that is abnormal, in the
   quote path and in the held latest quote, and keeps the spread window.
2. A sweep (``positions.scanner``) reads, per instrument it locked, the latest
   quote (read anyway) and the guard's mode and timeout (read with the
   instruments' versions): ``sweep_verdict``. An instrument whose latest quote
   is abnormal, or silent past its timeout, is *held*: its path is neither
   judged nor consumed (the quotes wait for the hold to end). A flagged quote
   is never judged (``positions.quote_path``), held or not.
3. In close mode any abnormal quote (the latest, or one in the path since the
   last look) or the silence sends every open position of the instrument to
   the one close claim (``Claim.INSTRUMENT_POSITIONS``, reason
   ``market_guard``): the claim takes only ``open`` positions and the database
   allows one active close per position, so however many sweeps see the
   anomaly each position gets one close.
4. After the commit: an alert per abnormal instrument (silence in hold mode is
   the stale-quote alert: one alert, not two).

A hold ends by itself with the first normal quote: a spread back within the
factor, a mid that did not gap from the quote before, fresh. The next sweep
judges the path then, leaving out the flagged quotes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from django.conf import settings

from positions.alerts import alert_raise
from positions.choices import AlertKind, CloseReason
from positions.closes import Claim, CloseRequest, closes_claim
from positions.quote_path import JudgeablePath
from positions.quotes import Quote
from signals_app.choices import MarketGuardMode
from signals_app.events import Actor

NORMAL, HELD, CLOSING = "normal", "held", "closing"
GUARD = Actor.system("market_guard")


@dataclass(frozen=True)
class GuardConfig:
    mode: str
    quote_timeout: int  # seconds

    @classmethod
    def of(cls, *, mode: str, quote_timeout: int | None) -> GuardConfig:
        if quote_timeout is None:
            quote_timeout = settings.MARKET_GUARD_QUOTE_TIMEOUT_SECONDS
        return cls(mode=mode, quote_timeout=quote_timeout)


def quote_age(quote: Quote, now: float) -> float:
    """From the earlier of the quote's own time and its arrival (as the stale rule)."""
    return now - min(quote.ts, quote.received_at or quote.ts)


def abnormal(quote: Quote | None, config: GuardConfig, *, now: float) -> str:
    """Why the market is abnormal as of the latest quote ("" if it is not)."""
    if quote is None:
        return "no quote at all"
    if (age := quote_age(quote, now)) > config.quote_timeout:
        return f"no quote for {int(age)} s"
    if quote.anomaly:
        return describe(quote.anomaly)
    return ""


def describe(anomaly: str) -> str:
    return {
        "spread": "spread wider than its limit times the recent median",
        "gap": "price gapped beyond its limit since the previous quote",
    }.get(anomaly, "spread wider than its limit and a gap")


@dataclass
class Verdict:
    """One sweep's market guard: held instruments (symbol -> why), silences (the
    stale-quote alert's part), instruments to close (symbol -> (why, trigger quote))."""

    held: dict[str, str] = field(default_factory=dict)
    silent: dict[str, str] = field(default_factory=dict)
    closes: dict[str, tuple[str, dict | None]] = field(default_factory=dict)
    abnormal: dict[str, str] = field(default_factory=dict)  # spread or gap, for the alert


def sweep_verdict(
    paths: dict[str, JudgeablePath], latest: dict[str, Quote], guards: dict[str, GuardConfig], *, now: float
) -> Verdict:
    """Step 2 and what step 3 must close, for the instruments of ``paths``."""
    verdict = Verdict()
    for symbol, path in paths.items():
        config = guards.get(symbol)
        if config is None:
            continue
        quote = latest.get(symbol)
        why = abnormal(quote, config, now=now) if quote is not None else ""
        if why:
            verdict.held[symbol] = why
            if quote.anomaly:
                verdict.abnormal[symbol] = why
            else:
                verdict.silent[symbol] = why
        elif path.anomalies:
            verdict.abnormal[symbol] = describe(path.anomalies[-1][1])
        # Close mode closes on what the market is now, never on bad data (SPEC invariant 4):
        # the latest quote abnormal or silence; not a flagged quote the market has since left,
        # nor an obvious spike (SPIKE_MAX_JUMP_FRACTION: a gap that size is held, then judged
        # on the quotes after it), nor the "gap" of the quote that reverted one.
        bad_data = path.held_spike or path.last_spike or bool(path.dropped_spikes)
        if config.mode == MarketGuardMode.CLOSE and why and not bad_data:
            verdict.closes[symbol] = (why, quote.as_json())
    return verdict


def guard_closes(verdict: Verdict, instrument_ids: dict[str, int]) -> int:
    """Step 3: one claim for every instrument to close; the number of closes queued."""
    requests = [
        CloseRequest(
            key=instrument_ids[symbol],
            reason=CloseReason.MARKET_GUARD,
            trigger_quote=trigger,
            note=f"market guard: {why}",
        )
        for symbol, (why, trigger) in sorted(verdict.closes.items())
        if symbol in instrument_ids
    ]
    return len(closes_claim(claim=Claim.INSTRUMENT_POSITIONS, requests=requests, by=GUARD))


def guard_alerts(verdict: Verdict, instrument_ids: dict[str, int]) -> None:
    """Step 4, after the commit."""
    for symbol, why in sorted(verdict.abnormal.items()):
        action = "closing its open positions" if symbol in verdict.closes else "breaches are not judged"
        alert_raise(
            kind=AlertKind.MARKET_GUARD,
            dedupe_key=f"market_guard:{symbol}",
            message=f"{symbol}: {why}; {action}.",
            instrument_id=instrument_ids.get(symbol),
        )
    for symbol, why in sorted(verdict.silent.items()):
        if symbol in verdict.closes:
            alert_raise(
                kind=AlertKind.MARKET_GUARD,
                dedupe_key=f"market_guard:{symbol}",
                message=f"{symbol}: {why}; closing its open positions.",
                instrument_id=instrument_ids.get(symbol),
            )


def median(spreads: list[Decimal]) -> Decimal | None:
    """The lower median (the one the ingest compares with), or None for no spreads."""
    if not spreads:
        return None
    ordered = sorted(spreads)
    return ordered[(len(ordered) - 1) // 2]
