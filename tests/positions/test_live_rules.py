"""The live book's arithmetic (positions.live_rules): plain functions, no database."""

from __future__ import annotations

from decimal import Decimal as D

from positions.exit_plan import BREAKEVEN, SL, TP, TRAILING, ExitPlan, PlanState
from positions.live_rules import (
    BEYOND,
    CONFIRMING,
    HIT,
    NO_QUOTE,
    PARTIAL,
    STOP,
    TARGET,
    WATCHING,
    book_pnl,
    floating_pnl,
    pips_to,
    plan_view,
)

GOLD_PIP, JPY_PIP, EURUSD_PIP = D("0.1"), D("0.01"), D("0.0001")


def test_a_buy_is_valued_on_the_bid():
    # gold: 100 oz a lot; 0.10 lots bought at 2650.50, bid 2651.20 (the ask would say 11.00)
    pnl = floating_pnl(
        side="buy",
        entry=D("2650.50"),
        volume=D("0.10"),
        contract_size=D(100),
        bid=D("2651.20"),
        ask=D("2651.60"),
    )
    assert pnl == D("7.00")


def test_a_sell_is_valued_on_the_ask_in_the_quote_currency():
    # USDJPY: 100,000 a lot, P&L in yen; sold at 150.000, ask 149.800
    pnl = floating_pnl(
        side="sell",
        entry=D("150.000"),
        volume=D("0.10"),
        contract_size=D(100000),
        bid=D("149.780"),
        ask=D("149.800"),
    )
    assert pnl == D("2000")


def test_a_losing_sell():
    pnl = floating_pnl(
        side="sell",
        entry=D("1.08500"),
        volume=D("1.00"),
        contract_size=D(100000),
        bid=D("1.08600"),
        ask=D("1.08612"),
    )
    assert pnl == D("-112")


def test_a_book_summed_by_the_database_is_the_sum_of_its_positions():
    positions = [(D("2650.50"), D("0.10")), (D("2648.37"), D("0.33")), (D("2655.01"), D("1.07"))]
    for side in ("buy", "sell"):
        one_by_one = sum(
            floating_pnl(
                side=side,
                entry=entry,
                volume=volume,
                contract_size=D(100),
                bid=D("2651.20"),
                ask=D("2651.60"),
            )
            for entry, volume in positions
        )
        summed = book_pnl(
            side=side,
            volume=sum(volume for _, volume in positions),
            entry_volume=sum(entry * volume for entry, volume in positions),
            contract_size=D(100),
            bid=D("2651.20"),
            ask=D("2651.60"),
        )
        assert summed == one_by_one


def test_pips_to_a_level_by_side_and_pip_size():
    # a gold buy: stop below, target above (pip 0.1)
    assert pips_to(side="buy", kind=STOP, level=D("2645.00"), price=D("2651.20"), pip_size=GOLD_PIP) == D(
        "62.0"
    )
    assert pips_to(side="buy", kind=TARGET, level=D("2670.00"), price=D("2651.20"), pip_size=GOLD_PIP) == D(
        "188.0"
    )
    # a USDJPY sell: stop above, target below (pip 0.01)
    assert pips_to(side="sell", kind=STOP, level=D("150.500"), price=D("149.800"), pip_size=JPY_PIP) == D(
        "70.0"
    )
    assert pips_to(side="sell", kind=PARTIAL, level=D("149.000"), price=D("149.800"), pip_size=JPY_PIP) == D(
        "80.0"
    )
    # EURUSD to a tenth of a pip
    assert pips_to(side="buy", kind=STOP, level=D("1.08000"), price=D("1.08437"), pip_size=EURUSD_PIP) == D(
        "43.7"
    )
    # beyond the level: negative
    assert pips_to(side="buy", kind=STOP, level=D("2645.00"), price=D("2644.50"), pip_size=GOLD_PIP) == D(
        "-5.0"
    )


def _gold_buy(**levels) -> ExitPlan:
    return ExitPlan(side="buy", entry=D("2650.50"), sl=D("2645.00"), tp=D("2670.00"), **levels)


def test_every_level_of_a_running_plan_with_its_distance():
    plan = _gold_buy(partials=((D("2660.00"), D("0.5")), (D("2665.00"), D("0.25"))))

    view = plan_view(plan, PlanState(partials_hit=(0,)), price=D("2651.20"), pip_size=GOLD_PIP)

    assert view.ended == ""
    assert [(level.kind, level.label, level.pips, level.state) for level in view.levels] == [
        (STOP, "stop-loss", D("62.0"), WATCHING),
        (PARTIAL, "partial TP #0", None, HIT),
        (PARTIAL, "partial TP #1", D("138.0"), WATCHING),
        (TARGET, "take-profit", D("188.0"), WATCHING),
    ]
    assert [level.label for level in view.targets] == ["partial TP #1", "take-profit"]


def test_the_stop_as_trailing_moved_it():
    state = PlanState(best=D("2660.00"), moved_stop=D("2655.00"), moved_by=TRAILING)

    view = plan_view(_gold_buy(), state, price=D("2656.00"), pip_size=GOLD_PIP)

    assert (view.stop.label, view.stop.price, view.stop.pips) == ("trailing stop", D("2655.00"), D("10.0"))


def test_a_breakeven_stop_for_a_sell():
    plan = ExitPlan(side="sell", entry=D("150.000"), sl=D("150.500"), tp=D("149.000"))
    state = PlanState(moved_stop=D("149.980"), moved_by=BREAKEVEN)

    view = plan_view(plan, state, price=D("149.800"), pip_size=JPY_PIP)

    assert (view.stop.label, view.stop.pips) == ("breakeven stop", D("18.0"))


def test_a_price_beyond_a_level_and_a_crossing_under_recheck():
    beyond = plan_view(_gold_buy(), PlanState(), price=D("2644.00"), pip_size=GOLD_PIP)
    confirming = plan_view(_gold_buy(), PlanState(pending=(SL, 1.0)), price=D("2644.00"), pip_size=GOLD_PIP)
    target = plan_view(_gold_buy(), PlanState(pending=(TP, 1.0)), price=D("2671.00"), pip_size=GOLD_PIP)

    assert (beyond.stop.pips, beyond.stop.state) == (D("-10.0"), BEYOND)
    assert confirming.stop.state == CONFIRMING
    assert (target.targets[-1].pips, target.targets[-1].state) == (D("-10.0"), CONFIRMING)


def test_an_ended_plan_has_no_level_left():
    view = plan_view(_gold_buy(), PlanState(exit_kind=TP), price=D("2671.00"), pip_size=GOLD_PIP)

    assert (view.levels, view.ended, view.stop, view.targets) == ((), "take-profit", None, ())


def test_no_quote_gives_the_levels_without_distances():
    view = plan_view(_gold_buy(), PlanState(), price=None, pip_size=GOLD_PIP)

    assert [(level.price, level.pips, level.state) for level in view.levels] == [
        (D("2645.00"), None, NO_QUOTE),
        (D("2670.00"), None, NO_QUOTE),
    ]


def test_a_plan_with_only_a_target():
    plan = ExitPlan(side="buy", entry=D("2650.50"), tp=D("2670.00"))

    view = plan_view(plan, PlanState(), price=D("2651.20"), pip_size=GOLD_PIP)

    assert view.stop is None
    assert [level.pips for level in view.targets] == [D("188.0")]
