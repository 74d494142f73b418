"""Test-breach judges the whole exit plan at its current state: the stored plan (the stop
as trailing and breakeven moved it, the partials already hit, an exit) and one synthetic
quote, walked as a sweep would walk it. Nothing is stored, audited, alerted or closed by
asking. Against real PostgreSQL and Redis; the plan states come from real sweeps."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import override_settings

from positions.choices import AlertKind, PositionStatus
from positions.models import Alert, CloseCommand, OpenPosition, SignalPlan
from positions.scanner import sweep
from positions.selectors import breach_test, plan_status
from positions.signal_exit import signal_exit
from signals_app.events import Actor
from signals_app.models import AuditEvent
from tests.factories import OwnerFactory, UserFactory, make_signal, open_book
from tests.positions.test_owner_api import PINNED, _breach, api_for, assert_error, breach_url
from tests.positions.test_scanner import put_quote

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_client")]


@pytest.fixture
def owner_api():
    return api_for(OwnerFactory())


@pytest.fixture(autouse=True)
def _pinned():
    with override_settings(**PINNED):
        yield


def _walk(*bids: str, symbol: str = "XAUUSD", spread: str = "0.30") -> None:
    """Real quotes of the owner's feed, each swept as it arrives."""
    for bid in bids:
        put_quote(symbol, bid, str(Decimal(bid) + Decimal(spread)))
        sweep()


def _stored(signal) -> tuple:
    plan = SignalPlan.objects.filter(signal_id=signal.pk).values_list(
        "state", "exit_kind", "exit_quote", "partials_hit", "updated_at"
    )
    return (
        list(plan),
        list(CloseCommand.objects.order_by("pk").values_list("pk", "status")),
        list(OpenPosition.objects.order_by("pk").values_list("pk", "status")),
        AuditEvent.objects.count(),
        Alert.objects.count(),
    )


@pytest.fixture
def trailing_buy():
    """A gold buy at 2650.50 (SL 2645, TP 2670) whose stop trails 3.0 behind the best bid."""
    signal = make_signal(
        side="buy", entry="2650.50", sl="2645.00", tp="2670.00", trailing={"distance_pips": "30"}
    )
    return signal, open_book(signal, 3)


def test_a_trailed_stop_is_judged_where_it_moved_not_at_the_stop_loss(owner_api, trailing_buy):
    # given: the market ran to 2656, so the stop trails at 2653
    signal, positions = trailing_buy
    _walk("2650.00", "2656.00")
    before = _stored(signal)
    assert SignalPlan.objects.get(signal_id=signal.pk).exit_kind == ""

    # when: the owner asks about a bid just under the trailed stop, far above the stop-loss
    crossed = _breach(owner_api, positions[0].pk, bid="2652.90", ask="2653.20")
    above = _breach(owner_api, positions[0].pk, bid="2653.10", ask="2653.40")
    higher = _breach(owner_api, positions[0].pk, bid="2660.00", ask="2660.30")

    # then: the trailing stop would close every position; nothing anywhere moved
    assert (crossed["breach_detected"], crossed["breach_type"], crossed["level"]) == (
        True,
        "trailing",
        "trailing",
    )
    assert (crossed["would_close"], crossed["open_positions_affected"]) == (True, 3)
    assert crossed["plan"] == {
        "exit_kind": "trailing",
        "ended": True,
        "effective_stop": "2653",
        "stop_set_by": "trailing",
        "stop_moved": False,
        "best": "2656",
        "partials_hit": [],
    }
    assert crossed["hidden_levels"] == {"sl": "2645", "tp": "2670"}
    assert (above["breach_detected"], above["would_close"], above["plan"]["ended"]) == (False, False, False)
    assert (above["plan"]["effective_stop"], above["plan"]["stop_set_by"]) == ("2653", "trailing")
    # a quote further in favour would pull the stop up behind it
    assert (higher["breach_type"], higher["plan"]["stop_moved"]) == (None, True)
    assert (higher["plan"]["effective_stop"], higher["plan"]["best"]) == ("2657", "2660")
    assert _stored(signal) == before


def test_before_any_quote_the_plan_is_its_levels(owner_api, trailing_buy):
    _, positions = trailing_buy

    under_entry = _breach(owner_api, positions[0].pk, bid="2650.00", ask="2650.30")
    in_favour = _breach(owner_api, positions[0].pk, bid="2652.00", ask="2652.30")
    stop_loss = _breach(owner_api, positions[0].pk, simulated_price="2644.90")

    # no favour yet, no trail: the stop is the stop-loss
    assert (under_entry["plan"]["effective_stop"], under_entry["plan"]["stop_set_by"]) == ("2645", "sl")
    assert (under_entry["plan"]["stop_moved"], under_entry["plan"]["best"]) == (False, "2650")
    # a first quote in favour starts the trail: 3.0 behind 2652 is tighter than the stop-loss
    assert (in_favour["plan"]["effective_stop"], in_favour["plan"]["stop_set_by"]) == ("2649", "trailing")
    assert in_favour["plan"]["stop_moved"] is True
    assert (stop_loss["breach_type"], stop_loss["level"], stop_loss["plan"]["stop_set_by"]) == (
        "sl",
        "stop_loss",
        "sl",
    )
    assert not SignalPlan.objects.exists()


def test_breakeven_moves_the_stop_to_entry_plus_offset(owner_api):
    # given: breakeven after 5.0 of favour, to entry + 0.2; the market reached 2656
    signal = make_signal(
        side="buy",
        entry="2650.50",
        sl="2645.00",
        tp="2670.00",
        breakeven={"trigger_pips": "50", "offset_pips": "2"},
    )
    (position, *_) = open_book(signal, 2)
    _walk("2651.00", "2656.00")

    # when
    at_entry = _breach(owner_api, position.pk, simulated_price="2650.60")
    above = _breach(owner_api, position.pk, simulated_price="2650.80")

    # then
    assert (at_entry["breach_type"], at_entry["level"], at_entry["open_positions_affected"]) == (
        "breakeven",
        "breakeven",
        2,
    )
    assert (at_entry["plan"]["effective_stop"], at_entry["plan"]["stop_set_by"]) == ("2650.7", "breakeven")
    assert above["would_close"] is False


def test_a_sell_trails_on_the_ask():
    signal = make_signal(
        symbol="EURUSD",
        side="sell",
        entry="1.08500",
        sl="1.09000",
        tp="1.08000",
        trailing={"distance_pips": "20"},
    )
    open_book(signal, 1)
    _walk("1.08480", "1.08280", symbol="EURUSD", spread="0.00020")  # best ask 1.08300: stop 1.08500

    # the bid under the stop says nothing for a sell; the ask at it closes
    assert breach_test(signal=signal, bid=Decimal("1.08490"), ask=Decimal("1.08499")).would_close is False
    crossed = breach_test(signal=signal, bid=Decimal("1.08480"), ask=Decimal("1.08500"))
    assert (crossed.breach_type, crossed.effective_stop, crossed.stop_set_by) == (
        "trailing",
        Decimal("1.08500"),
        "trailing",
    )


@pytest.fixture
def partial_buy():
    """Partials at 2660 (half) and 2665 (30%), two 0.10 lots and one 0.01 lot open."""
    signal = make_signal(
        side="buy",
        entry="2650.50",
        sl="2645.00",
        tp="2670.00",
        partial_take_profits=[{"price": "2660", "fraction": "0.5"}, {"price": "2665", "fraction": "0.3"}],
    )
    lots = open_book(signal, 2)
    small = open_book(signal, 1, volume="0.01")
    return signal, lots + small


def test_a_partial_take_profit_names_its_index_and_the_positions_it_would_cut(owner_api, partial_buy):
    signal, positions = partial_buy
    put_quote("XAUUSD", "2655.00", "2655.30")
    sweep()
    before = _stored(signal)

    first = _breach(owner_api, positions[0].pk, simulated_price="2660.00")
    both = _breach(owner_api, positions[0].pk, simulated_price="2666.00")
    target = _breach(owner_api, positions[0].pk, simulated_price="2670.00")

    # 0.01 lot x 0.5 rounds down to nothing: that position gets no partial close
    assert (first["breach_type"], first["partial_index"], first["partials_triggered"]) == (
        "partial_tp",
        0,
        [0],
    )
    assert (first["level"], first["would_close"], first["open_positions_affected"]) == ("partial_tp", True, 2)
    assert (first["plan"]["ended"], first["plan"]["partials_hit"]) == (False, [0])
    assert (both["partial_index"], both["partials_triggered"], both["plan"]["partials_hit"]) == (
        0,
        [0, 1],
        [0, 1],
    )
    assert both["open_positions_affected"] == 2
    # the target ends the plan: every open position closes, the small one too
    assert (target["breach_type"], target["partials_triggered"], target["open_positions_affected"]) == (
        "tp",
        [],
        3,
    )
    assert _stored(signal) == before


def test_a_partial_already_hit_is_not_hit_again(owner_api, partial_buy):
    # given: a sweep saw 2660.50: partial #0 is hit and its closes queued
    signal, positions = partial_buy
    _walk("2655.00", "2660.50")
    assert CloseCommand.objects.filter(partial_index=0).count() == 2

    # when
    again = _breach(owner_api, positions[0].pk, simulated_price="2661.00")
    status = plan_status(signal=signal)

    # then: no new crossing; the plan remembers the partial and the quote that hit it
    assert (again["breach_detected"], again["would_close"], again["plan"]["partials_hit"]) == (
        False,
        False,
        [0],
    )
    ((index, quote),) = status.partial_quotes
    assert (index, quote.bid, quote.ask) == (0, Decimal("2660.50"), Decimal("2660.80"))
    assert quote.at is not None


def test_an_ended_plan_says_so_whatever_the_price(owner_api, trailing_buy):
    signal, positions = trailing_buy
    OpenPosition.objects.filter(pk=positions[2].pk).update(status=PositionStatus.CLOSED_MANUAL)
    SignalPlan.objects.create(
        signal=signal, state={"exit_kind": "tp"} | _empty_state(), exit_kind="tp", exited_by="scanner"
    )

    answer = _breach(owner_api, positions[0].pk, simulated_price="2650.00")

    # no crossing by this quote, but the plan closes what is still open (standing orders)
    assert (answer["breach_detected"], answer["breach_type"]) == (False, None)
    assert (answer["would_close"], answer["level"], answer["open_positions_affected"]) == (
        True,
        "take_profit",
        2,
    )
    assert (answer["plan"]["exit_kind"], answer["plan"]["ended"]) == ("tp", True)


def test_after_the_strategys_exit(owner_api, trailing_buy):
    signal, positions = trailing_buy
    signal_exit(signal_id=signal.pk, by=Actor.system("tests"))

    answer = _breach(owner_api, positions[0].pk, simulated_price="2600.00")

    assert (answer["breach_detected"], answer["level"], answer["plan"]["exit_kind"]) == (
        False,
        "signal_exit",
        "signal_exit",
    )
    assert answer["open_positions_affected"] == 0  # all already closing


def _empty_state() -> dict:
    return {
        "last_seq": 0,
        "best": None,
        "moved_stop": None,
        "moved_by": "",
        "partials_hit": [],
        "pending": None,
    }


def test_an_atr_trail_without_bars_raises_no_alert_when_asked(owner_api):
    # The sweep alerts on a missing ATR; asking must not write that alert (or anything).
    signal = make_signal(
        side="buy",
        entry="2650.50",
        sl="2645.00",
        tp="2670.00",
        trailing={"distance_atr": "2", "atr_period": 14},
    )
    (position,) = open_book(signal, 1)

    answer = _breach(owner_api, position.pk, simulated_price="2655.00")

    assert (answer["plan"]["stop_set_by"], answer["plan"]["effective_stop"]) == ("sl", "2645")
    assert not Alert.objects.filter(kind=AlertKind.NO_ATR).exists()


def test_the_recheck_delay_does_not_hide_the_verdict(owner_api, trailing_buy):
    # The rule alone: the live monitor would wait for a second quote; the answer does not.
    _, positions = trailing_buy
    with override_settings(BREACH_RECHECK_DELAY_SECONDS=5):
        answer = _breach(owner_api, positions[0].pk, simulated_price="2644.00")
    assert (answer["breach_type"], answer["would_close"]) == ("sl", True)


def test_the_breach_endpoint_stays_behind_the_hidden_levels_permission(trailing_buy):
    _, positions = trailing_buy
    staff = UserFactory(is_staff=True)

    assert_error(
        api_for(staff).post(breach_url(positions[0].pk), {"simulated_price": "2650"}, format="json"),
        403,
        "forbidden",
    )


def test_the_schema_documents_the_plan_and_the_seed_keys(owner_api):
    components = owner_api.get("/api/v1/schema?format=json").json()["components"]["schemas"]

    output = components["BreachTestWithLevelsOutput"]
    assert {"breach_detected", "breach_type", "would_close", "position", "plan", "level"} <= set(
        output["properties"]
    )
    assert {"breach_detected", "breach_type", "would_close", "position"} <= set(output["required"])
    assert set(components["BreachPositionOutput"]["properties"]) == {
        "id",
        "instrument",
        "side",
        "entry_price",
        "remaining_volume",
    }
    plan = components["PlanAfterQuoteOutput"]["properties"]
    assert {
        "exit_kind",
        "ended",
        "effective_stop",
        "stop_set_by",
        "stop_moved",
        "best",
        "partials_hit",
    } == set(plan)
