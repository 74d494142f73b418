"""The owner's monitor dashboard: ``monitor_status()`` as figures read at a glance, and
the data behind the two pictures that read faster than numbers (breaches and closes per
hour over the last day, the latest sweep times). monitoring.charts draws them.

Read-only. Figures come from ``monitor_status()``, so the dashboard and the monitor
status API never disagree; those it could not read (Redis down) say so, in red.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count
from django.db.models.functions import TruncHour
from django.urls import reverse

from core import formatting
from positions.choices import STOP_REASONS, TARGET_REASONS, CloseCommandStatus, PositionStatus
from positions.models import CloseCommand
from positions.sweep_history import sweep_durations
from signals_app.models import Instrument

REFRESH_SECONDS = 10
# monitor_status() computes avg/p95 over the latest 200 sweeps: the chart shows the same window.
SWEEP_CHART_SIZE = 200
HOURS_CHARTED = 24
# A breach is closed within a few EA polls when everything is healthy; beyond this the
# owner should look at the devices (the ack timeout is where a command is re-delivered).
LATENCY_WARN_SECONDS = 5.0
SUCCESS_RATE_WARN = 0.95
SUCCESS_RATE_BAD = 0.80

OK, WARN, BAD, IDLE = "ok", "warn", "bad", "idle"


@dataclass(frozen=True)
class Figure:
    key: str  # stable name, for the template's ids and for tests
    label: str
    value: str
    detail: str = ""
    state: str = OK
    url: str = ""


def _changelist(model: str, **filters: str) -> str:
    url = reverse(f"admin:{model}_changelist")
    return f"{url}?{urlencode(filters)}" if filters else url


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{formatting.age(seconds)} ago"


def _duration(milliseconds: float) -> str:
    return f"{milliseconds:.0f} ms" if milliseconds < 1000 else f"{milliseconds / 1000:.2f} s"


def last_sweep_age_seconds(status: dict, *, now: datetime) -> float | None:
    if not status["last_check"]:
        return None
    return (now - datetime.fromisoformat(status["last_check"])).total_seconds()


def figures(status: dict, *, now: datetime) -> list[Figure]:
    """Every figure of ``monitor_status()``, worded, with a state for its colour."""
    interval = settings.POSITION_MONITOR_INTERVAL_SECONDS
    beat_age = status["beat_heartbeat_age_seconds"]
    if status["unavailable"]:
        monitor, last_sweep, sweep_time, stale_quotes = (
            Figure(key, label, "unavailable", "kept in Redis, which is unreachable", BAD)
            for key, label in [
                ("monitor", "Monitor"),
                ("last_sweep", "Last sweep"),
                ("sweep_time", "Sweep time"),
                ("stale_quotes", "Stale quotes"),
            ]
        )
    else:
        monitor = _monitor_figure(status)
        sweep_age = last_sweep_age_seconds(status, now=now)
        last_sweep = Figure(
            "last_sweep",
            "Last sweep",
            _age(sweep_age),
            formatting.timestamp(status["last_check"]) if status["last_check"] else "the scanner has not run",
            OK if sweep_age is not None and sweep_age <= 3 * interval else BAD,
        )
        sweep_time = _sweep_time_figure(status, interval=interval)
        stale_quotes = Figure(
            "stale_quotes",
            "Stale quotes",
            str(len(status["stale_quotes"])),
            ", ".join(status["stale_quotes"])
            or f"every watched instrument quoted within {settings.QUOTE_MAX_AGE_SECONDS} s",
            BAD if status["stale_quotes"] else OK,
        )

    items = [
        _dry_run_marked(monitor, status),
        last_sweep,
        Figure(
            "beat",
            "Beat heartbeat",
            _age(beat_age),
            f"healthy up to {settings.HEALTH_BEAT_MAX_AGE_SECONDS} s",
            OK if beat_age is not None and beat_age <= settings.HEALTH_BEAT_MAX_AGE_SECONDS else BAD,
        ),
        Figure(
            "open_positions",
            "Open positions",
            str(status["open_positions_count"]),
            f"on {len(status['open_positions_by_instrument'])} instrument(s)",
            OK,
            _changelist("positions_openposition", status__exact=PositionStatus.OPEN),
        ),
        _closing_figure(status),
        Figure(
            "close_commands",
            "Close commands waiting",
            f"{status['pending_closes_count']} pending · {status['delivered_closes_count']} delivered",
            "delivered = leased to an EA, awaiting its acknowledgement",
            OK,
            _changelist("positions_closecommand", status__exact=CloseCommandStatus.PENDING),
        ),
        sweep_time,
        Figure(
            "breaches",
            "Breaches, last hour",
            _breaches_text(status["breaches_last_hour"]),
            "signals whose hidden level was crossed",
            OK,
            _changelist("positions_closecommand"),
        ),
        _success_rate_figure(status["close_success_rate_24h"]),
        _latency_figure(status["breach_to_close_latency_ms_median"]),
        Figure(
            "devices_offline",
            "Devices offline with open positions",
            str(status["devices_offline_with_open_positions"]),
            f"silent for more than {settings.DEVICE_OFFLINE_SECONDS} s",
            BAD if status["devices_offline_with_open_positions"] else OK,
            _changelist("ea_gateway_device"),
        ),
        stale_quotes,
        Figure(
            "open_alerts",
            "Open alerts",
            str(status["open_alerts"]),
            "unacknowledged",
            WARN if status["open_alerts"] else OK,
            _changelist("positions_alert", acknowledged="no"),
        ),
    ]
    return items


def _monitor_figure(status: dict) -> Figure:
    if status["monitor_running"]:
        monitor = Figure("monitor", "Monitor", "running", state=OK)
    elif not status["monitor_enabled"]:
        monitor = Figure("monitor", "Monitor", "disabled", "POSITION_MONITOR_ENABLED is off", WARN)
    else:
        monitor = Figure("monitor", "Monitor", "NOT running", "no recent sweep or no beat heartbeat", BAD)
    return monitor


def _dry_run_marked(monitor: Figure, status: dict) -> Figure:
    """A dry run (a setting) is said on the monitor figure, Redis down or not."""
    if not status["dry_run"]:
        return monitor
    return Figure(
        monitor.key,
        monitor.label,
        f"{monitor.value} (dry run)",
        "breaches are audited, nothing is closed",
        BAD if monitor.state == BAD else WARN,
    )


def _closing_figure(status: dict) -> Figure:
    closing, failed = status["closing_positions_count"], status["close_failed_positions_count"]
    return Figure(
        "closing_positions",
        "Positions closing",
        f"{closing} closing · {failed} close failed",
        "live at the broker, not watched by the scanner; close failed needs the desk",
        BAD if failed else OK,
        _changelist(
            "positions_openposition",
            status__exact=PositionStatus.CLOSE_FAILED if failed else PositionStatus.CLOSING,
        ),
    )


def _sweep_time_figure(status: dict, *, interval: int) -> Figure:
    average, p95 = status["avg_check_duration_ms"], status["p95_check_duration_ms"]
    if average is None:
        return Figure("sweep_time", "Sweep time", "no sweeps recorded", state=IDLE)
    # A sweep slower than the beat interval means sweeps queue up behind each other.
    state = BAD if p95 > 1000 * interval else WARN if p95 > 500 * interval else OK
    return Figure(
        "sweep_time",
        "Sweep time",
        f"avg {_duration(average)} · p95 {_duration(p95)}",
        f"latest {SWEEP_CHART_SIZE} sweeps; interval {interval} s",
        state,
    )


def _success_rate_figure(rate: float | None) -> Figure:
    if rate is None:
        return Figure("close_success", "Close success, 24 h", "no closes finished", state=IDLE)
    state = OK if rate >= SUCCESS_RATE_WARN else WARN if rate >= SUCCESS_RATE_BAD else BAD
    return Figure(
        "close_success",
        "Close success, 24 h",
        f"{100 * rate:.1f} %",
        "executed ÷ (executed + failed + expired)",
        state,
        _changelist("positions_closecommand"),
    )


def _latency_figure(median_ms: float | None) -> Figure:
    if median_ms is None:
        return Figure("latency", "Breach → close latency", "no breach closed yet", state=IDLE)
    return Figure(
        "latency",
        "Breach → close latency",
        f"median {_duration(median_ms)}",
        "triggering quote received → EA's close acknowledged",
        OK if median_ms <= 1000 * LATENCY_WARN_SECONDS else WARN,
    )


@dataclass(frozen=True)
class InstrumentRow:
    symbol: str
    open_positions: int
    stale: bool | None  # None: unknown, the quotes are in Redis, which is unreachable
    url: str


def open_positions_rows(status: dict) -> list[InstrumentRow]:
    by_symbol = status["open_positions_by_instrument"]
    ids = dict(Instrument.objects.filter(symbol__in=list(by_symbol)).values_list("symbol", "pk"))
    stale = None if status["stale_quotes"] is None else set(status["stale_quotes"])
    return [
        InstrumentRow(
            symbol=symbol,
            open_positions=count,
            stale=None if stale is None else symbol in stale,
            url=_changelist(
                "positions_openposition",
                instrument__id__exact=str(ids.get(symbol, "")),
                status__exact=PositionStatus.OPEN,
            ),
        )
        for symbol, count in by_symbol.items()
    ]


# --- the data behind the charts -------------------------------------------------------


@dataclass(frozen=True)
class HourActivity:
    start: datetime
    stop_loss: int = 0  # signals whose stop-loss was crossed (however many positions it closed)
    take_profit: int = 0
    executed: int = 0  # close commands the EA acknowledged as executed
    failed: int = 0  # failed at the broker or expired unacknowledged

    @property
    def breaches(self) -> int:
        return self.stop_loss + self.take_profit

    @property
    def closes(self) -> int:
        return self.executed + self.failed


def _breaches_text(breaches: dict[str, int]) -> str:
    """ "SL 2 · TP 1", with the plan's other kinds only when they happened."""
    labels = {
        "sl": "SL",
        "tp": "TP",
        "trailing": "trailing",
        "breakeven": "breakeven",
        "partial_tp": "partial TP",
    }
    shown = [
        f"{label} {breaches[key]}" for key, label in labels.items() if key in ("sl", "tp") or breaches[key]
    ]
    return " · ".join(shown)


def hourly_activity(*, now: datetime, hours: int = HOURS_CHARTED) -> list[HourActivity]:
    """Breaches (by the hour their close commands were created) and finished closes (by
    the hour they completed), one bucket per clock hour, the current hour last.

    A breach is a signal crossing a level, as monitor_status() counts it: one per signal
    and level in an hour, however many positions it closed. A close is one command."""
    first = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    breaches = (
        CloseCommand.objects.filter(created_at__gte=first, reason__in=[*STOP_REASONS, *TARGET_REASONS])
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour", "reason")
        .annotate(count=Count("position__signal_id", distinct=True))
        .order_by()
    )
    closes = (
        CloseCommand.objects.filter(
            completed_at__gte=first,
            status__in=[CloseCommandStatus.EXECUTED, CloseCommandStatus.FAILED, CloseCommandStatus.EXPIRED],
        )
        .annotate(hour=TruncHour("completed_at"))
        .values_list("hour", "status")
        .annotate(count=Count("pk"))
        .order_by()
    )
    counts: dict[datetime, dict[str, int]] = {}
    for hour, reason, count in breaches:
        bucket = counts.setdefault(hour, {})
        key = "stop_loss" if reason in STOP_REASONS else "take_profit"
        bucket[key] = bucket.get(key, 0) + count
    for hour, status, count in closes:
        bucket = counts.setdefault(hour, {})
        key = "executed" if status == CloseCommandStatus.EXECUTED else "failed"
        bucket[key] = bucket.get(key, 0) + count
    starts = [first + timedelta(hours=index) for index in range(hours)]
    return [HourActivity(start=start, **counts.get(start, {})) for start in starts]


def recent_sweep_durations_ms(*, limit: int = SWEEP_CHART_SIZE) -> list[float]:
    """The latest sweep times in milliseconds, oldest first (the scanner pushes newest first)."""
    return [1000 * seconds for seconds in reversed(sweep_durations(limit=limit))]
