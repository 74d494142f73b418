"""A signal's chart drawn on the server as inline SVG, as the dashboard's charts are
(``monitoring.charts``): no JavaScript library, no CDN. Drawing only: ``positions.signal_chart``
reads the data (it reveals hidden levels: the owner's page only).

Candles stand side by side as MetaTrader draws them (a gap in the feed takes no room);
anything with a time (a fill, a close, a move of the stop) sits inside its candle at its
share of the bar's length. Every value goes in through ``format_html``, so the output is
escaped and safe to render. Prices are written at the instrument's digits.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from core import formatting
from core.chart_axis import nice_step
from positions.bars import Bar, Timeframe
from positions.signal_chart import Level, Mark, SignalChart, StopStep, close_reason_label

WIDTH, HEIGHT = 1200, 520
LEFT, RIGHT, TOP, BOTTOM = 78, 190, 40, 42
PLOT_RIGHT, PLOT_BOTTOM = WIDTH - RIGHT, HEIGHT - BOTTOM
COLOURS = {
    "up": "#2f855a",
    "down": "#ba2121",
    "entry": "#417690",
    "sl": "#ba2121",
    "tp": "#2f855a",
    "partial": "#68a37f",
    "stop": "#d69e2e",
    "fill": "#2b6cb0",
    "close": "#6b46c1",
}
LEVEL_DASH = {"entry": "6 3", "sl": "", "tp": "", "partial": "2 3"}
LABEL_GAP = 13  # px between two level labels
TIME_LABELS = 8


def _join(pieces: Iterable[SafeString]) -> SafeString:
    return format_html_join("", "{}", ((piece,) for piece in pieces))


def _n(value: float) -> str:
    return f"{value:.1f}"


def _utc(moment: datetime, timeframe: Timeframe) -> str:
    return f"{moment:%Y-%m-%d}" if timeframe == Timeframe.D1 else f"{moment:%Y-%m-%d %H:%M} UTC"


class _Scale:
    """Where a price and a moment go on the plot."""

    def __init__(self, chart: SignalChart) -> None:
        self.bars = chart.bars
        self.starts = [bar.start for bar in chart.bars]
        self.seconds = chart.timeframe.seconds
        self.slot = (PLOT_RIGHT - LEFT) / len(chart.bars)
        prices = [price for bar in chart.bars for price in (bar.high, bar.low)]
        prices += [level.price for level in chart.levels]
        prices += [step.price for step in chart.stop_steps if step.price is not None]
        prices += [mark.price for mark in (*chart.fills, *chart.closes)]
        low, high = float(min(prices)), float(max(prices))
        pad = (high - low) * 0.05 or abs(high) * 0.001 or 1.0
        self.low, self.high = low - pad, high + pad

    def y(self, price: Decimal | float) -> float:
        return TOP + (PLOT_BOTTOM - TOP) * (self.high - float(price)) / (self.high - self.low)

    def x_of_bar(self, index: int) -> float:
        return LEFT + (index + 0.5) * self.slot

    def x(self, moment: datetime) -> float:
        index = bisect_right(self.starts, moment) - 1
        if index < 0:
            return LEFT
        share = min(max((moment - self.starts[index]).total_seconds() / self.seconds, 0.0), 1.0)
        return LEFT + (index + share) * self.slot


def signal_chart_svg(chart: SignalChart) -> SafeString:
    """The chart as one ``<svg>``: candles, level lines, the effective stop as a step line,
    fill and close markers, both axes, a legend, and a title and description for screen
    readers. ``chart.bars`` must not be empty (the page says so instead)."""
    scale = _Scale(chart)
    price = _price_text(chart.digits)
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" width="100%" role="img" '
        'class="signal-chart" aria-labelledby="signal-chart-title signal-chart-desc">'
        '<title id="signal-chart-title">{}</title><desc id="signal-chart-desc">{}</desc>'
        "{}{}{}{}{}{}{}{}</svg>",
        WIDTH,
        HEIGHT,
        _title(chart),
        _description(chart, price),
        _price_axis(scale, price),
        _time_axis(scale, chart.timeframe),
        _join(_candle(scale, index, bar, chart.timeframe, price) for index, bar in enumerate(chart.bars)),
        _levels(scale, chart.levels, price),
        _stop_line(scale, chart.stop_steps, chart.until, price),
        _join(_fill_marker(scale, mark, price) for mark in chart.fills),
        _join(_close_marker(scale, mark, price) for mark in chart.closes),
        _legend(),
    )


def _price_text(digits: int):
    return lambda value: formatting.price(Decimal(value), digits)


def _title(chart: SignalChart) -> str:
    return (
        f"{chart.symbol} {chart.side}: {len(chart.bars)} {chart.timeframe} candles of the owner's bid "
        f"from {_utc(chart.bars[0].start, chart.timeframe)} to {_utc(chart.bars[-1].start, chart.timeframe)}"
    )


def _description(chart: SignalChart, price) -> str:
    parts = [f"{level.label} {price(level.price)}" for level in chart.levels]
    moved = [step for step in chart.stop_steps if step.price is not None]
    if len(moved) > 1:
        parts.append(f"effective stop moved {len(moved) - 1} time(s), last to {price(moved[-1].price)}")
    parts.append(f"{sum(mark.count for mark in chart.fills)} fill(s)")
    parts.append(f"{sum(mark.count for mark in chart.closes)} close(s) executed")
    return "; ".join(parts) + "."


def _price_axis(scale: _Scale, price) -> SafeString:
    step = nice_step((scale.high - scale.low) / 6, integer=False)
    first = math.ceil(scale.low / step)
    ticks = [index * step for index in range(first, math.floor(scale.high / step) + 1)]
    return _join(
        format_html(
            '<line x1="{}" x2="{}" y1="{}" y2="{}" class="grid" stroke="#ddd" stroke-width="0.5"/>'
            '<text x="{}" y="{}" text-anchor="end" class="tick price-tick" font-size="11">{}</text>',
            LEFT,
            PLOT_RIGHT,
            _n(scale.y(tick)),
            _n(scale.y(tick)),
            LEFT - 6,
            _n(scale.y(tick) + 4),
            price(repr(tick)),
        )
        for tick in ticks
    )


def _time_axis(scale: _Scale, timeframe: Timeframe) -> SafeString:
    every = max(1, math.ceil(len(scale.bars) / TIME_LABELS))
    labels: list[tuple[float, str]] = []
    previous_day = None
    for index in range(0, len(scale.bars), every):
        start = scale.bars[index].start
        text = f"{start:%d %b}" if timeframe == Timeframe.D1 else f"{start:%H:%M}"
        if start.date() != previous_day and timeframe != Timeframe.D1:
            text = f"{start:%d %b} {text}"  # the date where the day changes
        previous_day = start.date()
        labels.append((scale.x_of_bar(index), text))
    ticks = _join(
        format_html(
            '<line x1="{x}" x2="{x}" y1="{y}" y2="{tick}" stroke="#999"/>'
            '<text x="{x}" y="{text_y}" text-anchor="middle" class="tick time-tick" font-size="11">{}</text>',
            text,
            x=_n(x),
            y=PLOT_BOTTOM,
            tick=PLOT_BOTTOM + 4,
            text_y=PLOT_BOTTOM + 17,
        )
        for x, text in labels
    )
    return format_html(
        '<line x1="{}" x2="{}" y1="{y}" y2="{y}" stroke="#999"/>{}'
        '<text x="{}" y="{}" text-anchor="end" class="tick" font-size="11">time (UTC)</text>',
        LEFT,
        PLOT_RIGHT,
        ticks,
        PLOT_RIGHT,
        HEIGHT - 6,
        y=PLOT_BOTTOM,
    )


def _candle(scale: _Scale, index: int, bar: Bar, timeframe: Timeframe, price) -> SafeString:
    x = scale.x_of_bar(index)
    up = bar.close >= bar.open
    colour = COLOURS["up" if up else "down"]
    body_top, body_bottom = scale.y(max(bar.open, bar.close)), scale.y(min(bar.open, bar.close))
    width = max(scale.slot * 0.7, 1.0)
    tip = (
        f"{_utc(bar.start, timeframe)}: open {price(bar.open)}, high {price(bar.high)}, "
        f"low {price(bar.low)}, close {price(bar.close)}"
    )
    return format_html(
        '<g class="candle {}"><title>{}</title>'
        '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" class="wick"/>'
        '<rect x="{}" y="{}" width="{}" height="{}" fill="{}" class="candle-body"/></g>',
        "up" if up else "down",
        tip,
        _n(x),
        _n(x),
        _n(scale.y(bar.high)),
        _n(scale.y(bar.low)),
        colour,
        _n(x - width / 2),
        _n(body_top),
        _n(width),
        _n(max(body_bottom - body_top, 1.0)),
        colour,
    )


def _levels(scale: _Scale, levels: list[Level], price) -> SafeString:
    placed = sorted(((scale.y(level.price), level) for level in levels), key=lambda item: item[0])
    label_y: list[float] = []
    for line_y, _ in placed:  # labels keep clear of each other, lines stay where they belong
        label_y.append(max(line_y + 4, label_y[-1] + LABEL_GAP) if label_y else line_y + 4)
    overflow = (label_y[-1] - (PLOT_BOTTOM + 4)) if label_y else 0
    if overflow > 0:
        label_y = [value - overflow for value in label_y]
    return _join(
        format_html(
            '<g class="level level-{}"><title>{}: {}</title>'
            '<line x1="{}" x2="{}" y1="{}" y2="{}" stroke="{}" stroke-width="1.2" stroke-dasharray="{}"/>'
            '<text x="{}" y="{}" fill="{}" font-size="11" class="level-label">{} {}</text></g>',
            level.kind,
            level.label,
            price(level.price),
            LEFT,
            PLOT_RIGHT,
            _n(line_y),
            _n(line_y),
            COLOURS[level.kind],
            LEVEL_DASH[level.kind],
            PLOT_RIGHT + 6,
            _n(text_y),
            COLOURS[level.kind],
            level.label,
            price(level.price),
        )
        for (line_y, level), text_y in zip(placed, label_y, strict=True)
    )


def _stop_line(scale: _Scale, steps: list[StopStep], until: datetime, price) -> SafeString:
    """One step path per stretch with a stop; a title per level it held."""
    pieces: list[SafeString] = []
    for index, step in enumerate(steps):
        following = steps[index + 1] if index + 1 < len(steps) else None
        if step.price is None:
            continue
        end = following.at if following else until
        x1, x2, y = scale.x(step.at), scale.x(end), scale.y(step.price)
        rise = ""
        if following is not None and following.price is not None:
            rise = f" V {_n(scale.y(following.price))}"
        by = "stop-loss" if step.set_by == "sl" else step.set_by
        pieces.append(
            format_html(
                '<path d="M {} {} H {}{}" fill="none" stroke="{}" stroke-width="2" class="effective-stop">'
                "<title>Effective stop {} ({}) from {}</title></path>",
                _n(x1),
                _n(y),
                _n(x2),
                rise,
                COLOURS["stop"],
                price(step.price),
                by,
                f"{step.at:%Y-%m-%d %H:%M:%S} UTC",
            )
        )
    return _join(pieces)


def _fill_marker(scale: _Scale, mark: Mark, price) -> SafeString:
    x, y = scale.x(mark.at), scale.y(mark.price)
    # ▲ under the price for a buy, ▼ over it for a sell: the tip touches the fill price.
    shape = (
        f"M {_n(x)} {_n(y)} l -6 10 h 12 z" if mark.kind == "buy" else f"M {_n(x)} {_n(y)} l -6 -10 h 12 z"
    )
    return format_html(
        '<path d="{}" fill="{}" stroke="#fff" stroke-width="0.8" class="fill-marker fill-{}">'
        "<title>{} {} fill(s) at {} (mean), {} lots, from {}</title></path>",
        shape,
        COLOURS["fill"],
        mark.kind,
        mark.count,
        mark.kind,
        price(mark.price),
        formatting.volume(mark.volume),
        _utc(mark.at, Timeframe.M1),
    )


def _close_marker(scale: _Scale, mark: Mark, price) -> SafeString:
    x, y = scale.x(mark.at), scale.y(mark.price)
    return format_html(
        '<path d="M {} {} l 6 6 l -6 6 l -6 -6 z" fill="{}" stroke="#fff" stroke-width="0.8" '
        'class="close-marker"><title>{} close(s): {}, at {} (mean), {} lots, from {}</title></path>',
        _n(x),
        _n(y - 6),
        COLOURS["close"],
        mark.count,
        close_reason_label(mark.kind),
        price(mark.price),
        formatting.volume(mark.volume),
        _utc(mark.at, Timeframe.M1),
    )


_SWATCHES = {
    "rect": '<rect x="{x}" y="10" width="8" height="12" fill="{colour}"/>',
    "line": '<line x1="{x}" x2="{end}" y1="16" y2="16" stroke="{colour}" stroke-width="2" '
    'stroke-dasharray="{dash}"/>',
    "tri": '<path d="M {middle} 10 l -5 10 h 10 z" fill="{colour}"/>',
    "diamond": '<path d="M {middle} 10 l 6 6 l -6 6 l -6 -6 z" fill="{colour}"/>',
}
_LEGEND = (
    ("rect", "up", "up candle"),
    ("rect", "down", "down candle"),
    ("line", "entry", "entry"),
    ("line", "sl", "stop-loss"),
    ("line", "tp", "take-profit"),
    ("line", "partial", "partial TP"),
    ("line", "stop", "effective stop"),
    ("tri", "fill", "fill (▲ buy, ▼ sell)"),
    ("diamond", "close", "close"),
)


def _legend() -> SafeString:
    pieces = []
    x = LEFT
    for shape, key, text in _LEGEND:
        swatch = format_html(
            _SWATCHES[shape], x=x, end=x + 12, middle=x + 5, colour=COLOURS[key], dash=LEVEL_DASH.get(key, "")
        )
        pieces.append(format_html('{}<text x="{}" y="20" font-size="11">{}</text>', swatch, x + 16, text))
        x += 22 + 6.2 * len(text)
    return format_html('<g class="legend">{}</g>', _join(pieces))
