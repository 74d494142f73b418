"""The dashboard's two charts, drawn on the server as inline SVG so the page needs no
JavaScript library and no CDN: breaches and closes per hour (``activity_chart_svg``) and
the latest sweep times (``sweep_chart_svg``).

Drawing only: monitoring.dashboard reads the data, this turns it into markup. Every
value goes in through ``format_html``, so the output is escaped and safe to render.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core.chart_axis import nice_step
from monitoring.dashboard import HourActivity

WIDTH, HEIGHT = 720, 210
LEFT, RIGHT, TOP, BOTTOM = 46, 84, 12, 30
COLOURS = {
    "stop_loss": "#ba2121",
    "take_profit": "#2f855a",
    "executed": "#417690",
    "failed": "#d69e2e",
    "sweep": "#417690",
    "slow": "#ba2121",
}


def _join(pieces: Iterable[SafeString]) -> SafeString:
    return format_html_join("", "{}", ((piece,) for piece in pieces))


def _number(value: float) -> str:
    return f"{value:.1f}"


def _axis(peak: float, *, integer: bool) -> list[float]:
    """Gridline values from 0 to just above ``peak``, at most five of them."""
    step = nice_step(peak / 4, integer=integer)
    top = step * max(1, math.ceil(peak / step))
    return [step * index for index in range(round(top / step) + 1)]


def _label(value: float) -> str:
    return f"{value:g}"


def _frame(*, title: str, ticks: list[float], body: SafeString, x_labels: SafeString) -> SafeString:
    top_value = ticks[-1] or 1
    grid = _join(
        format_html(
            '<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid"/>'
            '<text x="{}" y="{}" text-anchor="end" class="tick">{}</text>',
            LEFT,
            WIDTH - RIGHT,
            _number(_y(tick, top_value)),
            _number(_y(tick, top_value)),
            LEFT - 6,
            _number(_y(tick, top_value) + 4),
            _label(tick),
        )
        for tick in ticks
    )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" role="img" class="chart">'
        "<title>{}</title>{}{}{}</svg>",
        WIDTH,
        HEIGHT,
        title,
        grid,
        body,
        x_labels,
    )


def _y(value: float, top_value: float) -> float:
    plot_height = HEIGHT - TOP - BOTTOM
    return TOP + plot_height * (1 - value / top_value)


def _rect(*, x: float, y_low: float, y_high: float, width: float, colour: str, tip: str) -> SafeString:
    return format_html(
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
        _number(x),
        _number(y_high),
        _number(width),
        _number(max(y_low - y_high, 0.5)),
        colour,
        tip,
    )


def activity_chart_svg(activity: list[HourActivity]) -> SafeString:
    """Per hour, two stacked bars: breaches (stop-loss, take-profit) and finished closes
    (executed, failed or expired)."""
    peak = max([max(hour.breaches, hour.closes) for hour in activity] + [1])
    ticks = _axis(peak, integer=True)
    top_value = ticks[-1]
    group = (WIDTH - LEFT - RIGHT) / len(activity)
    bar = group * 0.36
    pieces: list[SafeString] = []
    labels: list[SafeString] = []
    for index, hour in enumerate(activity):
        span = f"{hour.start:%H:%M} to {hour.start + timedelta(hours=1):%H:%M} UTC"
        breaches = (
            ("stop_loss", hour.stop_loss, "stop-loss breaches"),
            ("take_profit", hour.take_profit, "take-profit breaches"),
        )
        closes = (
            ("executed", hour.executed, "closes executed"),
            ("failed", hour.failed, "closes failed or expired"),
        )
        for offset, stack in ((0.12, breaches), (0.52, closes)):
            x = LEFT + index * group + group * offset
            base = 0
            for key, count, what in stack:
                if count:
                    pieces.append(
                        _rect(
                            x=x,
                            y_low=_y(base, top_value),
                            y_high=_y(base + count, top_value),
                            width=bar,
                            colour=COLOURS[key],
                            tip=f"{span}: {count} {what}",
                        )
                    )
                base += count
        if index % 3 == 0 or index == len(activity) - 1:
            labels.append(
                format_html(
                    '<text x="{}" y="{}" text-anchor="middle" class="tick">{}</text>',
                    _number(LEFT + (index + 0.5) * group),
                    HEIGHT - BOTTOM + 18,
                    f"{hour.start:%H}h",
                )
            )
    total_breaches = sum(hour.breaches for hour in activity)
    total_closes = sum(hour.closes for hour in activity)
    return _frame(
        title=(
            f"Breaches and closes per hour, last {len(activity)} h: "
            f"{total_breaches} breaches, {total_closes} closes finished"
        ),
        ticks=ticks,
        body=_join(pieces),
        x_labels=_join(labels),
    )


def sweep_chart_svg(
    durations_ms: list[float], *, average_ms: float | None, p95_ms: float | None
) -> SafeString:
    """One bar per sweep, oldest on the left; bars slower than the beat interval in red,
    with the average and p95 as dashed lines."""
    interval_ms = 1000 * settings.POSITION_MONITOR_INTERVAL_SECONDS
    peak = max([*durations_ms, p95_ms or 0, average_ms or 0, 0.001])
    ticks = _axis(peak, integer=False)
    top_value = ticks[-1]
    slot = (WIDTH - LEFT - RIGHT) / max(len(durations_ms), 1)
    bars = _join(
        _rect(
            x=LEFT + index * slot + slot * 0.1,
            y_low=_y(0, top_value),
            y_high=_y(duration, top_value),
            width=slot * 0.8,
            colour=COLOURS["slow" if duration > interval_ms else "sweep"],
            tip=f"sweep {index + 1} of {len(durations_ms)}: {duration:.2f} ms",
        )
        for index, duration in enumerate(durations_ms)
    )
    markers: list[SafeString] = []
    label_above = HEIGHT  # where the last marker's label went: the next one keeps clear of it
    for name, value in (("avg", average_ms), ("p95", p95_ms)):
        if value is None:
            continue
        line_y = _y(value, top_value)
        label_y = min(line_y + 4, label_above - 14)
        label_above = label_y
        markers.append(
            format_html(
                '<line x1="{}" x2="{}" y1="{}" y2="{}" class="marker"/>'
                '<text x="{}" y="{}" class="tick">{} {}</text>',
                LEFT,
                WIDTH - RIGHT,
                _number(line_y),
                _number(line_y),
                WIDTH - RIGHT + 4,
                _number(label_y),
                name,
                _label(round(value, 2)),
            )
        )
    lines = _join(markers)
    x_labels = format_html(
        '<text x="{}" y="{}" class="tick">{}</text>'
        '<text x="{}" y="{}" text-anchor="end" class="tick">{}</text>',
        LEFT,
        HEIGHT - BOTTOM + 18,
        f"oldest of {len(durations_ms)}",
        WIDTH - RIGHT,
        HEIGHT - BOTTOM + 18,
        "newest",
    )
    return _frame(
        title=f"Latest {len(durations_ms)} sweep durations in milliseconds",
        ticks=ticks,
        body=format_html("{}{}", bars, lines),
        x_labels=x_labels,
    )
