"""The market guard against real PostgreSQL and Redis: quotes through the feed's ingest
(the Lua script flags them), sweeps called directly."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import override_settings

from positions.choices import AlertKind, CloseReason, PositionStatus
from positions.guard_status import instruments_guard_status
from positions.models import Alert, CloseCommand, OpenPosition
from positions.quote_path import path_judgeable, paths_read
from positions.quotes import Quote, quotes_ingest
from positions.scanner import sweep
from signals_app.models import AuditEvent, Instrument
from tests.factories import make_signal, open_book

pytestmark = pytest.mark.django_db

NORMAL_SPREAD = Decimal("0.30")


def feed(bid: str, ask: str | None = None, *, ts: float | None = None, symbol: str = "XAUUSD") -> None:
    bid_price = Decimal(bid)
    ask_price = Decimal(ask) if ask is not None else bid_price + NORMAL_SPREAD
    quotes_ingest(quotes=[Quote(symbol, bid_price, ask_price, time.time() if ts is None else ts)], source="t")


def settle(count: int = 12, bid: str = "2650.00") -> None:
    """A calm market: ``count`` quotes of the normal spread, a cent apart."""
    start = time.time() - count * 0.01
    for index in range(count):
        price = Decimal(bid) + Decimal("0.01") * (index % 2)
        feed(str(price), ts=start + index * 0.01)


def guard(**fields) -> Instrument:
    Instrument.objects.filter(symbol="XAUUSD").update(**fields)
    return Instrument.objects.get(symbol="XAUUSD")


def gold_status() -> dict:
    return next(row for row in instruments_guard_status() if row["instrument"] == "XAUUSD")


@pytest.fixture
def gold(redis_client):
    """A gold buy, stop 2645, target 2670, three open positions; a calm market at 2650."""
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    positions = open_book(signal, 3)
    settle()
    sweep()
    return signal, positions


def _statuses(signal) -> set[str]:
    return set(OpenPosition.objects.filter(signal=signal).values_list("status", flat=True))


def test_a_widened_spread_holds_the_instrument_then_the_next_normal_quote_ends_the_hold(gold):
    signal, _ = gold
    # given: a spread ten times the median, its bid under the stop
    feed("2644.00", "2647.00")

    report = sweep()

    # then: nothing judged, no close, an alert; the state says held and why
    assert not CloseCommand.objects.exists()
    assert _statuses(signal) == {PositionStatus.OPEN}
    assert report.outcomes["held"] == 1
    alert = Alert.objects.get(kind=AlertKind.MARKET_GUARD)
    assert alert.dedupe_key == "market_guard:XAUUSD"
    assert "breaches are not judged" in alert.message
    status = gold_status()
    assert (status["state"], status["mode"], status["spread"]) == ("held", "hold", "3.00")
    assert "spread" in status["reason"]
    # a sweep again while it lasts: still nothing, still one alert
    sweep()
    assert not CloseCommand.objects.exists()
    assert Alert.objects.filter(kind=AlertKind.MARKET_GUARD).count() == 1

    # when: the spread is back to normal
    feed("2650.00")
    sweep()

    # then: the hold ended; the wide quote was never judged (its bid crossed the stop)
    assert gold_status()["state"] == "normal"
    assert not CloseCommand.objects.exists()
    assert _statuses(signal) == {PositionStatus.OPEN}
    # and the next breach on a normal quote closes as ever
    feed("2644.90")
    sweep()
    assert set(CloseCommand.objects.values_list("reason", flat=True)) == {CloseReason.STOP_LOSS}


def test_a_gap_beyond_the_limit_holds_until_a_quote_that_does_not_gap(gold):
    signal, _ = gold
    guard(market_guard_gap_pips=Decimal("30"))  # 3.00 on gold (pip 0.1)
    # given: the mid gaps 10.00 (100 pips) down, through the stop, under the spike limit
    feed("2640.00")

    sweep()

    assert not CloseCommand.objects.exists()
    assert gold_status()["state"] == "held"
    assert "gapped" in Alert.objects.get(kind=AlertKind.MARKET_GUARD).message

    # when: the next quote stays there (no gap from the one before)
    feed("2640.10")
    sweep()

    # then: the hold is over and the stop is judged on the normal quote
    assert gold_status()["state"] == "normal"
    commands = CloseCommand.objects.all()
    assert commands.count() == 3
    assert {command.trigger_quote["bid"] for command in commands} == {"2640.10"}


def test_in_close_mode_an_abnormal_spread_closes_every_open_position_exactly_once(gold):
    signal, positions = gold
    other = make_signal(symbol="XAUUSD", side="sell", entry="2650.00", sl="2700.00", tp="2600.00")
    open_book(other, 2)
    euro = make_signal(symbol="EURUSD", side="buy", entry="1.08500", sl="1.05000", tp="1.12000")
    open_book(euro, 1)
    guard(market_guard_mode="close")
    # given: a wide spread, nowhere near any level
    feed("2649.00", "2652.00")

    report = sweep()
    again = sweep()

    # then: one close per open gold position, none for the euro
    assert (report.commands_created, again.commands_created) == (5, 0)
    commands = CloseCommand.objects.filter(position__instrument__symbol="XAUUSD")
    assert commands.count() == 5
    assert set(commands.values_list("reason", flat=True)) == {CloseReason.MARKET_GUARD}
    assert set(commands.values_list("requested_by", flat=True)) == {"market_guard"}
    assert not CloseCommand.objects.filter(position__signal=euro).exists()
    assert set(OpenPosition.objects.filter(instrument__symbol="XAUUSD").values_list("status", flat=True)) == {
        PositionStatus.CLOSING
    }
    assert gold_status()["state"] == "closing"
    assert "closing its open positions" in Alert.objects.get(kind=AlertKind.MARKET_GUARD).message


def test_in_close_mode_an_abnormal_quote_the_market_left_before_a_sweep_closes_nothing(gold):
    # given: one abnormal quote, normal again before any sweep looked (bad data, gone)
    signal, _ = gold
    guard(market_guard_mode="close")
    feed("2649.00", "2652.00")
    feed("2650.00")

    sweep()

    # then: no close on a market that is no longer abnormal (SPEC invariant 4), an alert
    assert not CloseCommand.objects.filter(reason=CloseReason.MARKET_GUARD).exists()
    assert Alert.objects.filter(kind=AlertKind.MARKET_GUARD).exists()


@override_settings(MARKET_GUARD_GAP_PIPS=Decimal("5"), SPIKE_MAX_JUMP_FRACTION=Decimal("0.02"))
def test_in_close_mode_an_obvious_spike_closes_nothing_until_the_next_quote_confirms_it(gold):
    # given: close mode, and a gap so large it is an obvious spike (beyond 2 %)
    signal, _ = gold
    guard(market_guard_mode="close")
    feed("2800.00")

    sweep()

    # then: held, not closed, while the spike waits for its confirmation
    assert not CloseCommand.objects.filter(reason=CloseReason.MARKET_GUARD).exists()

    # when: the next quote reverts it: nothing to close either
    feed("2650.00")
    sweep()
    assert not CloseCommand.objects.filter(reason=CloseReason.MARKET_GUARD).exists()


@override_settings(MARKET_GUARD_QUOTE_TIMEOUT_SECONDS=20)
def test_silence_in_close_mode_closes_and_in_hold_mode_is_the_stale_alert(gold):
    signal, _ = gold
    later = time.time() + 30

    # hold (the default): the stale-quote alert, no close
    sweep(now=later)
    assert not CloseCommand.objects.exists()
    assert Alert.objects.filter(kind=AlertKind.STALE_QUOTE, dedupe_key="stale:XAUUSD").exists()
    assert not Alert.objects.filter(kind=AlertKind.MARKET_GUARD).exists()

    # close: every open position, once
    guard(market_guard_mode="close")
    report = sweep(now=later)
    assert report.commands_created == 3
    assert sweep(now=later).commands_created == 0
    assert CloseCommand.objects.filter(reason=CloseReason.MARKET_GUARD).count() == 3


def test_an_instruments_own_timeout_overrides_the_setting(gold):
    guard(market_guard_mode="close", market_guard_quote_timeout_seconds=3600)

    assert sweep(now=time.time() + 600).commands_created == 0
    assert gold_status()["quote_timeout_seconds"] == 3600


def test_the_market_guard_off_judges_every_quote(gold):
    signal, _ = gold
    guard(market_guard_spread_factor=Decimal("0"))
    feed("2644.00", "2647.00")

    sweep()

    assert set(CloseCommand.objects.values_list("reason", flat=True)) == {CloseReason.STOP_LOSS}


def test_the_spread_median_is_the_windows_and_the_figures_are_real(gold):
    # given: the calm market's window (12 quotes of 0.30) and one wider quote
    feed("2650.00", "2650.50")
    status = gold_status()

    assert status["median_spread"] == "0.30"
    assert status["spread"] == "0.50"
    assert 0 <= status["last_quote_age_seconds"] < 5
    assert (status["state"], status["reason"], status["live_positions"]) == ("normal", "", 3)
    assert (status["spread_factor"], status["gap_pips"]) == ("5", "0")


def test_the_window_is_capped_and_a_spread_that_stays_wide_becomes_the_norm(gold):
    with override_settings(MARKET_GUARD_SPREAD_WINDOW=10):
        for index in range(10):
            feed("2650.00", "2653.00", ts=time.time() + index * 0.001)
    status = gold_status()
    assert status["median_spread"] == "3.00"
    assert status["state"] == "normal"


def test_flagged_quotes_are_kept_out_of_the_judged_path(gold):
    feed("2644.00", "2647.00")
    feed("2650.00")

    path = path_judgeable(paths_read(["XAUUSD"])["XAUUSD"])

    assert [str(quote.bid) for quote in path.quotes] == ["2650.00"]
    assert [(str(quote.bid), why) for quote, why in path.anomalies] == [("2644.00", "spread")]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("market_guard_spread_factor", Decimal("1")),
        ("market_guard_spread_factor", Decimal("0.5")),
        ("market_guard_spread_factor", Decimal("-2")),
        ("market_guard_gap_pips", Decimal("-1")),
        ("market_guard_quote_timeout_seconds", 0),
        ("market_guard_mode", "panic"),
    ],
)
def test_bad_market_guard_settings_are_refused(redis_client, field, value):
    instrument = Instrument.objects.get(symbol="XAUUSD")
    setattr(instrument, field, value)

    with pytest.raises(ValidationError) as refused:
        instrument.full_clean()
    assert field in refused.value.message_dict
    if field != "market_guard_mode":
        with pytest.raises(IntegrityError), transaction.atomic():
            Instrument.objects.filter(pk=instrument.pk).update(**{field: value})


def test_the_owner_sets_the_mode_in_the_console_audited(admin_client, redis_client):
    instrument = Instrument.objects.get(symbol="XAUUSD")
    form = {
        "symbol": "XAUUSD",
        "description": instrument.description,
        "digits": instrument.digits,
        "pip_size": instrument.pip_size,
        "contract_size": instrument.contract_size,
        "quote_currency": "USD",
        "active": "on",
        "market_guard_mode": "close",
        "market_guard_spread_factor": "3",
        "market_guard_gap_pips": "",
        "market_guard_quote_timeout_seconds": "",
    }

    response = admin_client.post(f"/admin/signals_app/instrument/{instrument.pk}/change/", form)
    refused = admin_client.post(
        f"/admin/signals_app/instrument/{instrument.pk}/change/", {**form, "market_guard_spread_factor": "1"}
    )

    assert response.status_code == 302
    instrument.refresh_from_db()
    assert (instrument.market_guard_mode, instrument.market_guard_spread_factor) == ("close", Decimal("3.00"))
    event = AuditEvent.objects.get(action="guards.settings_changed")
    changes = event.data["changes"]
    assert set(changes) == {"market_guard_mode", "market_guard_spread_factor"}
    assert changes["market_guard_mode"] == ["hold", "close"]
    assert changes["market_guard_spread_factor"][0] is None
    assert Decimal(changes["market_guard_spread_factor"][1]) == 3
    assert refused.status_code == 200
    assert "market_guard_spread_factor" in refused.context["adminform"].form.errors
    assert gold_status()["mode"] == "close"


def test_the_state_says_closing_while_guard_closes_run_and_held_on_a_stale_quote(gold):
    guard(market_guard_mode="close")
    feed("2649.00", "2652.00")
    sweep()
    feed("2650.00")  # the market is normal again; the closes are still out

    assert (gold_status()["state"], gold_status()["reason"]) == (
        "closing",
        "market guard closes still running",
    )

    guard(market_guard_mode="hold")
    CloseCommand.objects.update(status="executed")
    OpenPosition.objects.update(status=PositionStatus.OPEN)
    with override_settings(QUOTE_MAX_AGE_SECONDS=1):
        time.sleep(1.1)
        status = gold_status()
    assert (status["state"], status["reason"]) == ("held", "stale quote: older than QUOTE_MAX_AGE_SECONDS")


def test_an_instrument_nobody_trades_is_normal_without_quotes(redis_client):
    status = gold_status()

    assert (status["state"], status["spread"], status["median_spread"], status["last_quote_age_seconds"]) == (
        "normal",
        None,
        None,
        None,
    )
