"""The breach rule and the judge, as properties (pure functions, no database)."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import assume, given
from hypothesis import strategies as st

from positions.rules import CLOSE, NONE, STALE, STOP, TARGET, WAIT, breach, judge, realized_pnl

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


def _judge(**overrides):
    arguments = {
        "side": "buy",
        "sl": Decimal("100"),
        "tp": Decimal("110"),
        "bid": Decimal("99"),
        "ask": Decimal("99.1"),
        "quote_ts": 1000.0,
        "previous": (Decimal("99.5"), Decimal("99.6")),
        "pending_since": None,
        "now": 1001.0,
        "tolerance": Decimal(0),
        "max_age_seconds": 10,
        "recheck_delay_seconds": 0,
        "max_jump": Decimal("0.02"),
    }
    arguments.update(overrides)
    return judge(**arguments)


@given(age=st.floats(min_value=10.001, max_value=1e6), bid=prices)
def test_a_stale_quote_never_closes(age, bid):
    verdict = _judge(bid=bid, ask=bid, quote_ts=1000.0, now=1000.0 + age)
    assert verdict.action == STALE


@given(jump=st.decimals(min_value=Decimal("0.021"), max_value=Decimal("0.9"), places=3))
def test_a_single_spike_never_closes_and_the_next_quote_confirms(jump):
    previous = Decimal("100.5")
    spike = (previous * (1 - jump)).quantize(Decimal("0.00001"))
    first = _judge(bid=spike, ask=spike, previous=(previous, previous))
    assert (first.action, first.level, first.spike) == (WAIT, STOP, True)
    # a second quote near the spike (not a spike itself) confirms it
    second = _judge(
        bid=spike,
        ask=spike,
        previous=(spike, spike),
        quote_ts=1000.5,
        now=1001.0,
        pending_since=(first.level, first.first_seen_ts),
    )
    assert second.action == CLOSE
    # a spike that reverts closes nothing
    reverted = _judge(bid=previous, ask=previous, previous=(spike, spike), quote_ts=1000.5, now=1001.0)
    assert reverted.action in (NONE, WAIT)
    assert reverted.action != CLOSE


@given(delay=st.integers(min_value=1, max_value=30), later=st.floats(min_value=0, max_value=60))
def test_the_recheck_delay_needs_a_newer_quote_still_beyond(delay, later):
    first = _judge(recheck_delay_seconds=delay)
    assert first.action == WAIT
    again = _judge(
        recheck_delay_seconds=delay, quote_ts=1000.0 + later, now=1000.0 + later, pending_since=(STOP, 1000.0)
    )
    assert again.action == (CLOSE if later >= delay else WAIT)


def test_a_gap_through_the_level_closes_like_a_touch():
    # from 100.5 straight to 95: a 5% gap, so it is confirmed by the next quote, then closes
    gap = _judge(bid=Decimal("95"), ask=Decimal("95.1"), previous=(Decimal("100.5"), Decimal("100.6")))
    assert gap.action == WAIT
    confirmed = _judge(
        bid=Decimal("95.2"),
        ask=Decimal("95.3"),
        previous=(Decimal("95"), Decimal("95.1")),
        pending_since=(STOP, 1000.0),
    )
    assert (confirmed.action, confirmed.level) == (CLOSE, STOP)


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
