"""A signal's chart: the effective stop's history folded from what the sweeps recorded,
and the drawing (pure: bars and levels in, SVG out), read back as XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from positions.bars import Bar, Timeframe
from positions.exit_plan import ExitPlan
from positions.signal_chart import (
    LEVELS_CHANGED,
    MAX_CANDLES,
    STOP_MOVED,
    Level,
    Mark,
    SignalChart,
    StopEvent,
    StopStep,
    default_timeframe,
    plan_levels,
    stop_steps,
)
from positions.signal_chart_svg import signal_chart_svg

SVG = "{http://www.w3.org/2000/svg}"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
D = Decimal


def minute(n: float) -> datetime:
    return T0 + timedelta(minutes=n)


def bar(n: int, open_: str, high: str, low: str, close: str) -> Bar:
    return Bar(minute(n), D(open_), D(high), D(low), D(close), 4)


BARS = [
    bar(0, "1.10000", "1.10050", "1.09800", "1.10040"),  # up; its low is the stop-loss
    bar(1, "1.10040", "1.10100", "1.10020", "1.10090"),  # up
    bar(2, "1.10090", "1.10600", "1.10030", "1.10050"),  # down; its high is the take-profit
    bar(3, "1.10050", "1.10060", "1.09950", "1.09960"),  # down
    bar(4, "1.09960", "1.10010", "1.09940", "1.10000"),  # up
]
BUY_PLAN = ExitPlan(
    side="buy",
    entry=D("1.10000"),
    sl=D("1.09800"),
    tp=D("1.10600"),
    partials=((D("1.10300"), D("0.25")),),
)


def chart(**overrides) -> SignalChart:
    values = {
        "symbol": "EURUSD",
        "digits": 5,
        "side": "buy",
        "timeframe": Timeframe.M1,
        "since": T0,
        "until": minute(5),
        "bars": BARS,
        "truncated": False,
        "levels": plan_levels(BUY_PLAN),
        "stop_steps": [
            StopStep(T0, D("1.09800"), "sl"),
            StopStep(minute(2.5), D("1.09900"), "trailing"),
            StopStep(minute(3.5), None, ""),
        ],
        "fills": [Mark(minute(0.5), "buy", 3, D("1.10010"), D("0.30"))],
        "closes": [Mark(minute(3.4), "trailing", 2, D("1.09950"), D("0.20"))],
    }
    return SignalChart(**{**values, **overrides})


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314  (our own output; well-formed XML, or this raises)


def by_class(root: ET.Element, tag: str, css_class: str) -> list[ET.Element]:
    return [node for node in root.iter(f"{SVG}{tag}") if css_class in (node.get("class") or "").split()]


def level_y(root: ET.Element, kind: str) -> float:
    (group,) = by_class(root, "g", f"level-{kind}")
    line = group.find(f"{SVG}line")
    assert line.get("y1") == line.get("y2")
    return float(line.get("y1"))


# --- the drawing ------------------------------------------------------------------------


def test_one_body_and_one_wick_per_candle_green_up_red_down():
    root = parse(signal_chart_svg(chart()))

    assert len(by_class(root, "rect", "candle-body")) == 5
    assert len(by_class(root, "line", "wick")) == 5
    assert len(by_class(root, "g", "up")) == 3
    assert len(by_class(root, "g", "down")) == 2
    assert {node.find(f"{SVG}rect").get("fill") for node in by_class(root, "g", "up")} == {"#2f855a"}
    assert {node.find(f"{SVG}rect").get("fill") for node in by_class(root, "g", "down")} == {"#ba2121"}
    # left to right in time, none overlapping
    xs = [float(rect.get("x")) for rect in by_class(root, "rect", "candle-body")]
    assert xs == sorted(xs)
    assert len(set(xs)) == 5


def test_the_level_lines_sit_at_their_prices():
    root = parse(signal_chart_svg(chart()))
    wicks = by_class(root, "line", "wick")

    # the stop-loss is bar 0's low, the take-profit bar 2's high: the same y as those wick ends
    assert level_y(root, "sl") == pytest.approx(float(wicks[0].get("y2")), abs=0.05)
    assert level_y(root, "tp") == pytest.approx(float(wicks[2].get("y1")), abs=0.05)
    # a buy: target above the partial above the entry above the stop (y grows downwards)
    assert level_y(root, "tp") < level_y(root, "partial") < level_y(root, "entry") < level_y(root, "sl")
    labels = [node.text for node in by_class(root, "text", "level-label")]
    assert sorted(labels) == sorted(
        ["Entry 1.10000", "Stop-loss 1.09800", "Take-profit 1.10600", "Partial TP #0 (25%) 1.10300"]
    )


def test_fills_and_closes_are_marked_at_their_price_with_a_tooltip():
    root = parse(signal_chart_svg(chart()))

    (fill,) = by_class(root, "path", "fill-marker")
    assert "fill-buy" in fill.get("class")
    _, x, y, *_ = fill.get("d").split()
    assert float(y) == pytest.approx(
        level_y(root, "entry") - (level_y(root, "sl") - level_y(root, "entry")) * 10 / 200, abs=0.1
    )  # 1.10010: 10 points above the entry, the stop 200 points below it
    assert fill.find(f"{SVG}title").text.startswith("3 buy fill(s) at 1.10010 (mean), 0.30 lots")
    (close,) = by_class(root, "path", "close-marker")
    assert "2 close(s): Hidden trailing stop hit, at 1.09950" in close.find(f"{SVG}title").text
    sell = parse(signal_chart_svg(chart(fills=[Mark(minute(1), "sell", 1, D("1.10050"), D("0.10"))])))
    (marker,) = by_class(sell, "path", "fill-marker")
    assert "fill-sell" in marker.get("class")
    assert " -10 " in marker.get("d")  # ▼: drawn above the price, tip down


def test_the_effective_stop_is_a_step_line_that_ends_with_the_plan():
    root = parse(signal_chart_svg(chart()))

    paths = by_class(root, "path", "effective-stop")
    assert len(paths) == 2  # 1.09800 then 1.09900; nothing after the plan ended
    first, second = (path.get("d").split() for path in paths)
    assert float(first[2]) == pytest.approx(level_y(root, "sl"), abs=0.05)
    assert first[5] == "V"
    assert float(first[6]) == pytest.approx(float(second[2]))
    assert float(second[2]) < float(first[2])  # tighter: nearer the market, higher for a buy
    assert "Effective stop 1.09900 (trailing)" in paths[1].find(f"{SVG}title").text


def test_axes_legend_and_an_accessible_title():
    svg = signal_chart_svg(chart())
    root = parse(svg)

    assert root.get("role") == "img"
    assert root.get("viewBox") == "0 0 1200 520"
    assert root.get("width") == "100%"
    assert root.get("aria-labelledby") == "signal-chart-title signal-chart-desc"
    assert root.find(f"{SVG}title").text.startswith("EURUSD buy: 5 M1 candles of the owner's bid")
    assert "Stop-loss 1.09800" in root.find(f"{SVG}desc").text
    assert next(node.text for node in by_class(root, "text", "time-tick")) == "02 Mar 10:00"
    prices = [node.text for node in by_class(root, "text", "price-tick")]
    assert len(prices) >= 3
    assert all(len(text.split(".")[1]) == 5 for text in prices)
    legend = " ".join(node.text for node in root.iter(f"{SVG}text") if node.text)
    for entry in ("up candle", "down candle", "entry", "stop-loss", "take-profit", "effective stop", "close"):
        assert entry in legend


def test_values_are_escaped():
    odd_close = Mark(minute(1), "<x>", 1, D("1.1"), D("1"))
    root = parse(signal_chart_svg(chart(symbol="<b>&X", closes=[odd_close])))

    assert root.find(f"{SVG}title").text.startswith("<b>&X buy")  # text, not markup
    assert not list(root.iter(f"{SVG}b"))


# --- the effective stop's history -------------------------------------------------------


def moved(at: datetime, stop: str, by: str = "trailing") -> StopEvent:
    return StopEvent(at, STOP_MOVED, {"new_stop": D(stop), "moved_by": by})


def edited(at: datetime, old_sl: str | None, new_sl: str | None) -> StopEvent:
    return StopEvent(at, LEVELS_CHANGED, {"old": {"sl": old_sl}, "new": {"sl": new_sl}})


def test_the_stop_starts_at_the_stop_loss_and_follows_each_recorded_move():
    steps = stop_steps(
        BUY_PLAN,
        since=T0,
        events=[moved(minute(3), "1.09950"), moved(minute(1), "1.09900", "breakeven")],
    )

    assert steps == [
        StopStep(T0, D("1.09800"), "sl"),
        StopStep(minute(1), D("1.09900"), "breakeven"),
        StopStep(minute(3), D("1.09950"), "trailing"),
    ]


def test_an_edited_stop_loss_counts_from_its_edit_and_a_looser_one_does_not_undo_a_move():
    plan = ExitPlan(side="sell", entry=D("1.10000"), sl=D("1.10150"))  # the levels as they are now

    steps = stop_steps(
        plan,
        since=T0,
        events=[
            edited(minute(1), "1.10200", "1.10150"),  # tighter (a sell's stop comes down)
            moved(minute(2), "1.10100"),
            edited(minute(3), "1.10150", "1.10180"),  # looser than the trailing stop: no change
        ],
    )

    assert steps == [
        StopStep(T0, D("1.10200"), "sl"),
        StopStep(minute(1), D("1.10150"), "sl"),
        StopStep(minute(2), D("1.10100"), "trailing"),
    ]


def test_events_before_the_window_set_where_the_stop_starts():
    steps = stop_steps(BUY_PLAN, since=T0, events=[moved(T0 - timedelta(hours=1), "1.09900")])

    assert steps == [StopStep(T0, D("1.09900"), "trailing")]
    assert stop_steps(ExitPlan(side="buy", entry=D("1.1")), since=T0, events=[]) == []  # no stop at all


def test_the_default_timeframe_is_the_shortest_that_shows_the_whole_life():
    assert default_timeframe(timedelta(minutes=30)) == Timeframe.M1
    assert default_timeframe(timedelta(minutes=MAX_CANDLES)) == Timeframe.M5
    assert default_timeframe(timedelta(days=4)) == Timeframe.H1
    assert default_timeframe(timedelta(days=5000)) == Timeframe.D1


def test_levels_are_named_with_their_partials_share():
    assert plan_levels(BUY_PLAN) == [
        Level("entry", "Entry", D("1.10000")),
        Level("sl", "Stop-loss", D("1.09800")),
        Level("tp", "Take-profit", D("1.10600")),
        Level("partial", "Partial TP #0 (25%)", D("1.10300")),
    ]
