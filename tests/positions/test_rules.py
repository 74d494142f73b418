"""The breach rule and P&L, as properties (pure functions, no database). Staleness, spikes and
the recheck delay are the quote path's and the plan walk's (test_exit_plan, test_scanner)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import assume, given
from hypothesis import strategies as st

from positions.rules import STOP, TARGET, breach, realized_pnl

prices = st.decimals(min_value=Decimal("1.00000"), max_value=Decimal("100000"), places=5)
small = st.decimals(min_value=Decimal("0"), max_value=Decimal("5"), places=5)


@given(sl=prices, tp=prices, bid=prices, spread=small, tolerance=small)
def test_a_buy_is_judged_on_the_bid_only(sl, tp, bid, spread, tolerance):
    assume(sl < tp)
    ask_a, ask_b = bid + spread, bid + spread * 3
    first = breach(side="buy", sl=sl, tp=tp, bid=bid, ask=ask_a, tolerance=tolerance)
    second = breach(side="buy", sl=sl, tp=tp, bid=bid, ask=ask_b, tolerance=tolerance)
    assert first == second  # the ask never matters to a buy
    expected = STOP if bid <= sl - tolerance else TARGET if bid >= tp + tolerance else None
    assert first == expected


@given(sl=prices, tp=prices, ask=prices, spread=small, tolerance=small)
def test_a_sell_is_judged_on_the_ask_only(sl, tp, ask, spread, tolerance):
    assume(tp < sl)
    first = breach(side="sell", sl=sl, tp=tp, bid=ask - spread, ask=ask, tolerance=tolerance)
    second = breach(side="sell", sl=sl, tp=tp, bid=ask - spread * 3, ask=ask, tolerance=tolerance)
    assert first == second
    expected = STOP if ask >= sl + tolerance else TARGET if ask <= tp - tolerance else None
    assert first == expected


@given(
    level=prices,
    tolerance=small,
    inside=st.decimals(min_value=Decimal("0.00001"), max_value=Decimal(1), places=5),
)
def test_tolerance_holds_back_a_touch_of_the_level(level, tolerance, inside):
    assume(tolerance > 0)
    touch = level - tolerance + inside  # not yet far enough beyond the stop
    assume(touch > level - tolerance)
    assert breach(side="buy", sl=level, tp=None, bid=touch, ask=touch, tolerance=tolerance) is None
    beyond = level - tolerance
    assert breach(side="buy", sl=level, tp=None, bid=beyond, ask=beyond, tolerance=tolerance) == STOP


def test_realized_pnl_uses_side_and_contract_size():
    assert realized_pnl(
        side="buy",
        entry_price=Decimal("2650.60"),
        close_price=Decimal("2644.80"),
        volume=Decimal("0.10"),
        contract_size=Decimal(100),
    ) == Decimal("-58.0000")
    assert realized_pnl(
        side="sell",
        entry_price=Decimal("1.08500"),
        close_price=Decimal("1.08000"),
        volume=Decimal("1"),
        contract_size=Decimal(100000),
    ) == Decimal("500.00000")
