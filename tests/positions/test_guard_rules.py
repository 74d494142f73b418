"""The guards' arithmetic (positions.guards.rules): no database."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from positions.guards.rules import (
    Account,
    account_start,
    breach,
    daily_loss_percent,
    drawdown_percent,
    equity_step,
    rearmed,
)

T0 = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
DAY = date(2026, 11, 30)
JUMP = Decimal("0.20")
WINDOW = timedelta(seconds=120)


def step(account: Account, equity: str, *, seconds: int, day: date = DAY):
    return equity_step(
        account,
        Decimal(equity),
        now=T0 + timedelta(seconds=seconds),
        day=day,
        jump_fraction=JUMP,
        window=WINDOW,
    )


def start(equity: str = "10000") -> Account:
    return account_start(equity=Decimal(equity), now=T0, day=DAY)


def test_accepted_equity_moves_the_peak_up_never_down():
    account = step(start(), "10500", seconds=30).account
    assert account.peak == Decimal("10500")
    account = step(account, "10100", seconds=60).account
    assert (account.peak, account.last) == (Decimal("10500"), Decimal("10100"))
    assert drawdown_percent(account).quantize(Decimal("0.01")) == Decimal("3.81")


def test_a_jump_is_held_and_not_judged_until_the_next_heartbeat_confirms_it():
    held = step(start(), "7000", seconds=30)  # -30% > 20%
    assert not held.judge
    assert (held.account.last, held.account.held) == (Decimal("10000"), Decimal("7000"))
    confirmed = step(held.account, "6950", seconds=60)
    assert confirmed.judge
    assert confirmed.dropped is None
    assert (confirmed.account.last, confirmed.account.held) == (Decimal("6950"), None)


def test_a_jump_the_next_heartbeat_contradicts_is_dropped():
    held = step(start(), "7000", seconds=30)
    back = step(held.account, "9990", seconds=60)
    assert back.judge
    assert back.dropped == Decimal("7000")
    assert (back.account.last, back.account.peak) == (Decimal("9990"), Decimal("10000"))


def test_a_jump_up_that_is_dropped_never_raises_the_peak():
    held = step(start(), "15000", seconds=30)
    back = step(held.account, "10010", seconds=60)
    assert back.account.peak == Decimal("10010")


def test_a_confirmed_jump_up_raises_the_peak_to_the_higher_of_the_two():
    held = step(start(), "15000", seconds=30)
    confirmed = step(held.account, "14800", seconds=60)
    assert confirmed.account.peak == Decimal("15000")


def test_a_jump_from_both_the_held_and_the_last_equity_is_held_in_its_place():
    held = step(start(), "7000", seconds=30)
    again = step(held.account, "4000", seconds=60)
    assert not again.judge
    assert again.dropped == Decimal("7000")
    assert again.account.held == Decimal("4000")


def test_a_held_jump_older_than_the_window_is_no_confirmation():
    held = step(start(), "7000", seconds=30)
    late = step(held.account, "6990", seconds=30 + 121)
    assert not late.judge  # still a jump from the last accepted equity: held afresh
    assert late.dropped == Decimal("7000")
    assert late.account.held == Decimal("6990")


def test_the_day_start_is_the_first_accepted_equity_of_the_day():
    account = step(start(), "9500", seconds=30).account
    assert account.day_start == Decimal("10000")
    assert daily_loss_percent(account, day=DAY) == Decimal("5")
    tomorrow = DAY + timedelta(days=1)
    assert daily_loss_percent(account, day=tomorrow) == 0  # no equity yet on the new day
    next_day = step(account, "9400", seconds=86_400, day=tomorrow).account
    assert (next_day.day, next_day.day_start) == (tomorrow, Decimal("9400"))


def test_breach_drawdown_is_strictly_below_the_limit_and_daily_loss_at_it():
    at_limit = Account(
        peak=Decimal("10000"), day=DAY, day_start=Decimal("10000"), last=Decimal("9000"), last_at=T0
    )
    assert breach(at_limit, day=DAY, drawdown_limit=Decimal("10"), daily_loss_limit=None) is None
    below = Account(
        peak=Decimal("10000"), day=DAY, day_start=Decimal("9000"), last=Decimal("8999.99"), last_at=T0
    )
    found = breach(below, day=DAY, drawdown_limit=Decimal("10"), daily_loss_limit=None)
    assert found is not None
    assert found.limit == "drawdown"
    daily = breach(at_limit, day=DAY, drawdown_limit=None, daily_loss_limit=Decimal("10"))
    assert daily is not None
    assert daily.limit == "daily_loss"
    assert daily.percent == Decimal("10")
    assert breach(at_limit, day=DAY, drawdown_limit=None, daily_loss_limit=None) is None


def test_rearm_measures_from_the_last_equity():
    account = rearmed(step(start(), "9000", seconds=30).account, day=DAY)
    assert (account.peak, account.day_start, account.last) == (Decimal("9000"),) * 3
    assert breach(account, day=DAY, drawdown_limit=Decimal("5"), daily_loss_limit=Decimal("5")) is None


@given(
    equities=st.lists(
        st.decimals(min_value=Decimal("1"), max_value=Decimal("1000000"), places=2), min_size=1, max_size=30
    )
)
def test_the_peak_is_never_below_the_last_accepted_equity(equities):
    account = start()
    for index, equity in enumerate(equities):
        account = equity_step(
            account,
            equity,
            now=T0 + timedelta(seconds=30 * (index + 1)),
            day=DAY,
            jump_fraction=JUMP,
            window=WINDOW,
        ).account
        assert account.peak >= account.last
        assert Decimal(0) <= drawdown_percent(account) < 100
