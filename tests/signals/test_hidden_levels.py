"""The hidden-level schema and side rules, as pure functions."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signals_app.hidden_levels import (
    HiddenLevelsError,
    parse_hidden_levels,
)
from signals_app.level_sides import check_levels_against_entry
from signals_app.payload_guard import payload_problems


def test_parses_a_full_set_of_levels():
    levels = parse_hidden_levels(
        {
            "sl": "2645.00",
            "tp": 2670,
            "partial_take_profits": [{"price": "2660", "fraction": "0.5"}],
            "trailing": {"distance_pips": "20", "activation_pips": "10"},
            "breakeven": {"trigger_fraction": "0.5", "offset_pips": "1"},
            "max_holding_minutes": 240,
            "strategy": "fib618",
            "reason": "retest",
        }
    )
    assert levels.sl == Decimal("2645.00")
    assert levels.tp == Decimal("2670")
    assert levels.prices() == [Decimal("2645.00"), Decimal("2670"), Decimal("2660")]
    assert parse_hidden_levels(levels.to_dict()) == levels  # round trip


@pytest.mark.parametrize(
    ("owner_only", "field"),
    [
        ([], "owner_only"),
        ({}, "owner_only"),
        ({"sl": "-1"}, "sl"),
        ({"sl": "abc"}, "sl"),
        ({"sl": True}, "sl"),
        ({"sl": "NaN"}, "sl"),
        ({"sl": "1e400"}, "sl"),
        ({"tp": "1", "stop": "2"}, "owner_only"),
        (
            {"tp": "2", "partial_take_profits": [{"price": "1", "fraction": "1.5"}]},
            "partial_take_profits[0].fraction",
        ),
        ({"tp": "2", "partial_take_profits": "x"}, "partial_take_profits"),
        ({"tp": "2", "trailing": {"activation_pips": "1"}}, "trailing.distance_pips"),
        ({"tp": "2", "breakeven": {}}, "breakeven"),
        ({"sl": "2", "breakeven": {"trigger_fraction": "0.5"}}, "breakeven.trigger_fraction"),
        ({"tp": "2", "max_holding_minutes": 0}, "max_holding_minutes"),
        ({"tp": "2", "strategy": "x" * 501}, "strategy"),
    ],
)
def test_rejects_invalid_levels_naming_the_field(owner_only, field):
    with pytest.raises(HiddenLevelsError) as raised:
        parse_hidden_levels(owner_only)
    assert field in raised.value.errors


@pytest.mark.parametrize(
    ("owner_only", "field", "message"),
    [
        (
            {"tp": "2", "partial_take_profits": [{"price": "1"}]},
            "partial_take_profits[0]",
            "must be an object with price and fraction",
        ),
        (
            {"tp": "2", "partial_take_profits": [{"price": "1", "fraction": "0.1"}] * 6},
            "partial_take_profits",
            "must be a list of at most 5 items",
        ),
        (
            {
                "tp": "2",
                "partial_take_profits": [
                    {"price": "1", "fraction": "0.6"},
                    {"price": "1.5", "fraction": "0.4"},
                ],
            },
            "partial_take_profits",
            "fractions must add up to less than 1 (the rest closes at tp)",
        ),
        (
            {"tp": "2", "partial_take_profits": [{"price": "0", "fraction": "0.5"}]},
            "partial_take_profits[0].price",
            "must be a positive number",
        ),
        (
            {"tp": "2", "trailing": {"distance_pips": "5", "step_pips": "1"}},
            "trailing",
            "must be an object with distance_pips (or distance_atr, atr_period, atr_timeframe) "
            "and optional activation_pips",
        ),
        (
            {"tp": "2", "trailing": {"distance_pips": "5", "activation_pips": "-1"}},
            "trailing.activation_pips",
            "must be a positive number",
        ),
        (
            {"tp": "2", "breakeven": {"trigger_pips": "5", "lock_pips": "1"}},
            "breakeven",
            "must be an object with trigger_pips or trigger_fraction, and offset_pips",
        ),
        (
            {"tp": "2", "breakeven": {"trigger_pips": "5", "trigger_fraction": "0.5"}},
            "breakeven",
            "needs exactly one of trigger_pips and trigger_fraction",
        ),
        (
            {"tp": "2", "breakeven": {"trigger_fraction": "1"}},
            "breakeven.trigger_fraction",
            "must be between 0 and 1",
        ),
        (
            {"tp": "2", "breakeven": {"trigger_pips": "5", "offset_pips": "x"}},
            "breakeven.offset_pips",
            "must be a number or a decimal string, got 'x'",
        ),
        (
            {"tp": "2", "max_holding_minutes": True},
            "max_holding_minutes",
            "must be a whole number of minutes between 1 and 525600",
        ),
        (
            {"tp": "2", "max_holding_minutes": 525_601},
            "max_holding_minutes",
            "must be a whole number of minutes between 1 and 525600",
        ),
        ({"tp": "2", "reason": 5}, "reason", "must be text"),
        ({"tp": "0.00000000001"}, "tp", "has too many digits"),
        ({"tp": ["2"]}, "tp", "must be a number or a decimal string"),
    ],
)
def test_rejects_invalid_levels_saying_what_is_wrong(owner_only, field, message):
    with pytest.raises(HiddenLevelsError) as raised:
        parse_hidden_levels(owner_only)
    assert raised.value.errors == {field: message}


def test_reports_every_problem_in_schema_order():
    # The API and the admin list the errors in this order.
    with pytest.raises(HiddenLevelsError) as raised:
        parse_hidden_levels(
            {
                "stop": "1",
                "sl": "x",
                "partial_take_profits": [{"price": "1", "fraction": "1.5"}],
                "trailing": {},
                "reason": 5,
            }
        )
    assert list(raised.value.errors.items()) == [
        ("owner_only", "unknown keys: stop"),
        ("sl", "must be a number or a decimal string, got 'x'"),
        # an out-of-range fraction is also counted in the total
        ("partial_take_profits[0].fraction", "must be between 0 and 1"),
        ("partial_take_profits", "fractions must add up to less than 1 (the rest closes at tp)"),
        ("trailing.distance_pips", "is required"),
        ("reason", "must be text"),
    ]


@pytest.mark.parametrize(
    ("owner_only", "errors"),
    [
        # the missing exit is reported last
        ({"strategy": 5}, [("strategy", "must be text"), ("owner_only", "needs at least one of sl and tp")]),
        # a misspelt level is the likelier cause, so its message stays
        ({"stop": "1"}, [("owner_only", "unknown keys: stop")]),
        # a bad sl already says what is wrong
        ({"sl": "-1"}, [("sl", "must be a positive number")]),
    ],
)
def test_missing_exit_is_reported_only_when_nothing_explains_it(owner_only, errors):
    with pytest.raises(HiddenLevelsError) as raised:
        parse_hidden_levels(owner_only)
    assert list(raised.value.errors.items()) == errors


def test_zero_activation_and_offset_and_empty_partials_are_accepted():
    levels = parse_hidden_levels(
        {
            "tp": "2",
            "partial_take_profits": None,
            "trailing": {"distance_pips": "5", "activation_pips": "0"},
            "breakeven": {"trigger_pips": "3", "offset_pips": None},
        }
    )
    assert levels.partial_take_profits == ()
    assert levels.trailing is not None
    assert levels.trailing.activation_pips == 0
    assert levels.breakeven is not None
    assert levels.breakeven.offset_pips == 0


@pytest.mark.parametrize(
    ("side", "sl", "tp", "bad"),
    [
        ("buy", "101", "110", {"sl"}),
        ("buy", "90", "99", {"tp"}),
        ("buy", "100", "100", {"sl", "tp"}),
        ("sell", "99", "90", {"sl"}),
        ("sell", "110", "101", {"tp"}),
    ],
)
def test_levels_must_lie_on_the_right_side_of_entry(side, sl, tp, bad):
    levels = parse_hidden_levels({"sl": sl, "tp": tp})
    assert set(check_levels_against_entry(levels, side=side, entry_price=Decimal(100))) == bad


prices = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("100000"), places=2)


@given(entry=prices, below=prices, above=prices)
def test_side_rule_holds_for_any_prices(entry, below, above):
    sl, tp = min(below, above), max(below, above)
    levels = parse_hidden_levels({"sl": str(sl), "tp": str(tp)})
    buy_errors = check_levels_against_entry(levels, side="buy", entry_price=entry)
    assert ("sl" in buy_errors) == (not sl < entry)
    assert ("tp" in buy_errors) == (not tp > entry)
    mirrored = parse_hidden_levels({"sl": str(tp), "tp": str(sl)})
    sell_errors = check_levels_against_entry(mirrored, side="sell", entry_price=entry)
    assert ("sl" in sell_errors) == (not tp > entry)
    assert ("tp" in sell_errors) == (not sl < entry)


@pytest.mark.parametrize(
    "payload",
    [
        {"sl": 1},
        {"TP": 1},
        {"stop_loss": 1},
        {"takeProfit": 1},
        {"Take-Profit": 1},
        {"stop": 1},
        {"target": 1},
        {"tp2": 1},
        {"meta": {"nested": {"StopLoss": 1}}},
        {"levels": [{"target": 5}]},
    ],
)
def test_payload_may_not_name_a_level(payload):
    assert payload_problems(payload, hidden_prices=[])


@pytest.mark.parametrize(
    "payload",
    [
        {"note": "2645.00"},
        {"note": 2645},
        {"note": "watch 2645 closely"},
        {"deep": [{"x": "2670.0"}]},
    ],
)
def test_payload_may_not_hold_a_hidden_value(payload):
    assert payload_problems(payload, hidden_prices=[Decimal("2645.00"), Decimal("2670")])


def test_ordinary_payload_passes():
    payload = {"timeframe": "H1", "confidence": 0.7, "entry": "2650.50", "tags": ["gold", "breakout"]}
    assert payload_problems(payload, hidden_prices=[Decimal("2645"), Decimal("2670")]) == []


def test_payload_depth_is_limited():
    deep: dict = {"a": 1}
    for _ in range(10):
        deep = {"a": deep}
    assert any("nested too deeply" in problem for problem in payload_problems(deep, hidden_prices=[]))


@pytest.mark.parametrize(
    ("owner_only", "field"),
    [
        (
            {"tp": "2", "partial_take_profits": [{"price": None, "fraction": "0.5"}]},
            "partial_take_profits[0].price",
        ),
        (
            {"tp": "2", "partial_take_profits": [{"price": "1.5", "fraction": None}]},
            "partial_take_profits[0].fraction",
        ),
        ({"tp": "2", "trailing": {"distance_atr": None}}, "trailing.distance_atr"),
    ],
)
def test_a_null_part_of_the_plan_is_refused_not_dropped(owner_only, field):
    with pytest.raises(HiddenLevelsError) as refused:
        parse_hidden_levels(owner_only)
    assert refused.value.errors[field] == "is required"


def test_a_null_distance_that_may_be_absent_means_none():
    levels = parse_hidden_levels(
        {
            "tp": "2",
            "trailing": {"distance_pips": "10", "activation_pips": None},
            "breakeven": {"trigger_pips": "5", "offset_pips": None},
        }
    )
    assert levels.trailing.activation_pips == 0
    assert levels.breakeven.offset_pips == 0
