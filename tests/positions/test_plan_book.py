"""A sweep worker's book (positions.plan_book): what it keeps in memory is never what
decides wrongly — the range index never misses a plan a path changes, and every
writer of what the book holds (an edit, another worker's sweep, a late fill) is seen
by the next sweep."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from positions.choices import CloseReason
from positions.exit_plan import PathQuote, PlanState, plan_advance
from positions.models import CloseCommand, OpenPosition, SignalPlan
from positions.plan_book import Book, Entry
from positions.plan_index import Extremes
from positions.plan_store import EMPTY, StoredPlan
from positions.quotes import Quote, quote_store
from positions.scanner import sweep
from positions.watched import watched_signal
from signals_app.choices import ApprovalStatus
from signals_app.events import Actor
from signals_app.hidden_levels import parse_hidden_levels
from signals_app.models import Approval, Instrument, Signal
from signals_app.services import signal_update_hidden_levels
from tests.factories import make_signal, open_book, report_fill
from tests.helpers import REPO_ROOT, process_environment

PIP = Decimal("0.0001")
ENTRY = Decimal("1.10000")
OWNER = Actor.system("tests")


def put_quote(symbol: str, bid: str, ask: str) -> None:
    now = time.time()
    quote_store(Quote(symbol, Decimal(bid), Decimal(ask), now), received_at=now)


# --- the index never misses ---------------------------------------------------


@st.composite
def plans(draw, signal_id: int):
    side = draw(st.sampled_from(["buy", "sell"]))
    sign = 1 if side == "buy" else -1
    pips = st.integers(min_value=1, max_value=60)
    levels: dict = {}
    if draw(st.booleans()):
        levels["sl"] = str(ENTRY - sign * draw(pips) * PIP)
    if draw(st.booleans()):
        levels["tp"] = str(ENTRY + sign * draw(pips) * PIP)
    partials = sorted(set(draw(st.lists(pips, max_size=2))))
    if partials:
        levels["partial_take_profits"] = [
            {"price": str(ENTRY + sign * p * PIP), "fraction": "0.2"} for p in partials
        ]
    if draw(st.booleans()):
        levels["trailing"] = {"distance_pips": draw(pips), "activation_pips": draw(st.integers(0, 20))}
    if draw(st.booleans()):
        levels["breakeven"] = {"trigger_pips": draw(pips), "offset_pips": draw(st.integers(0, 5))}
    if "sl" not in levels and "tp" not in levels:
        levels["sl"] = str(ENTRY - sign * 10 * PIP)
    parsed = parse_hidden_levels(levels)
    signal = watched_signal(
        signal_id,
        instrument_id=1,
        symbol="EURUSD",
        pip_size=PIP,
        side=side,
        entry=ENTRY,
        published_at=None,
        levels=parsed,
    )
    return signal, parsed


def paths(first_seq: int):
    moves = st.lists(st.integers(min_value=-80, max_value=80), min_size=1, max_size=6)
    return moves.map(
        lambda offsets: [
            PathQuote(
                seq=first_seq + i,
                bid=ENTRY + offset * PIP,
                ask=ENTRY + (offset + 2) * PIP,
                ts=1_000.0 + first_seq + i,
                received_at=1_000.0 + first_seq + i,
            )
            for i, offset in enumerate(offsets)
        ]
    )


def _changed(before: PlanState, after: PlanState) -> bool:
    return replace(before, last_seq=0) != replace(after, last_seq=0)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_index_offers_every_plan_a_path_would_change(data):
    # given: a book of a few plans, each in a state some earlier quotes left it in
    delay = data.draw(st.sampled_from([0, 0, 2]))
    book = Book(1, "EURUSD", PIP)
    states = {}
    for signal_id in range(1, data.draw(st.integers(1, 5)) + 1):
        signal, levels = data.draw(plans(signal_id))
        state, _ = plan_advance(signal.plan, PlanState(), data.draw(paths(1)), recheck_delay_seconds=delay)
        if state.exit_kind:
            continue  # an ended plan leaves the running book
        entry = Entry(signal, levels, datetime.now(UTC), StoredPlan(state, "", None, {}), 0, math.inf, True)
        book.running[signal_id] = entry
        book.index(entry)
        states[signal_id] = state

    # when: the next quotes come, twice (the book updated in between as a sweep does)
    for round_seq in (100, 200):
        path = data.draw(paths(round_seq))
        offered = {entry.signal.signal_id for entry in book.reached(Extremes.of(path))}
        for signal_id, entry in list(book.running.items()):
            after, _ = plan_advance(entry.signal.plan, states[signal_id], path, recheck_delay_seconds=delay)
            # then: a plan the path changes is always among those offered
            if _changed(states[signal_id], after):
                assert signal_id in offered
                states[signal_id] = after
                book.saved(signal_id, StoredPlan(after, after.exit_kind, None, {}), 1)


def test_an_atr_trailing_stop_is_walked_every_sweep():
    levels = parse_hidden_levels(
        {"sl": "1.09000", "trailing": {"distance_atr": "2", "atr_period": 14, "atr_timeframe": "M1"}}
    )
    signal = watched_signal(
        7,
        instrument_id=1,
        symbol="EURUSD",
        pip_size=PIP,
        side="buy",
        entry=ENTRY,
        published_at=None,
        levels=levels,
    )
    book = Book(1, "EURUSD", PIP)
    entry = Entry(signal, levels, datetime.now(UTC), EMPTY, -1, math.inf, True)
    book.running[7] = entry
    book.index(entry)
    quiet = [PathQuote(1, ENTRY, ENTRY + 2 * PIP, 1.0, 1.0)]

    assert book.reached(Extremes.of(quiet)) == [entry]


# --- what other writers change is seen by the next sweep -----------------------


@pytest.mark.django_db
def test_moved_levels_are_judged_by_the_next_sweep(redis_client):
    signal = make_signal(symbol="EURUSD", side="buy", entry="1.10000", sl="1.09000", tp="1.11000")
    open_book(signal, 2)
    put_quote("EURUSD", "1.09500", "1.09510")
    assert sweep().commands_created == 0  # the book now holds the old levels

    signal_update_hidden_levels(signal=signal, owner_only={"sl": "1.09600", "tp": "1.11000"}, by=OWNER)
    put_quote("EURUSD", "1.09590", "1.09600")

    assert sweep().commands_created == 2
    assert set(CloseCommand.objects.values_list("reason", flat=True)) == {CloseReason.STOP_LOSS}


@pytest.mark.django_db(transaction=True)
def test_a_stop_moved_by_another_worker_is_honoured(redis_client, tmp_path):
    # given: this worker's book holds a trailing plan that has not moved yet
    signal = make_signal(
        symbol="EURUSD",
        side="buy",
        entry="1.10000",
        sl="1.09000",
        tp="1.12000",
        trailing={"distance_pips": 20, "activation_pips": 0},
    )
    open_book(signal, 3)
    put_quote("EURUSD", "1.10000", "1.10010")
    assert sweep().commands_created == 0

    # when: another worker process sweeps a rally that trails the stop to 1.10800
    put_quote("EURUSD", "1.11000", "1.11010")
    other = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from positions.scanner import sweep; sweep()"],
        cwd=REPO_ROOT,
        env=process_environment(DJANGO_SETTINGS_MODULE="config.settings"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert other.returncode == 0, other.stderr[-2000:]
    assert SignalPlan.objects.get(signal=signal).exit_kind == ""

    # then: a dip to the moved stop (far above the original 1.09000) closes here
    put_quote("EURUSD", "1.10790", "1.10800")
    report = sweep()

    assert report.commands_created == 3
    assert set(CloseCommand.objects.values_list("reason", flat=True)) == {CloseReason.TRAILING}


@pytest.mark.django_db
def test_a_late_fill_after_the_ttl_is_watched_at_once(redis_client):
    # given: a signal whose TTL is over, with no position, so no book holds it
    signal = make_signal(
        symbol="EURUSD", side="buy", entry="1.10000", sl="1.09000", tp="1.11000", ttl_minutes=5
    )
    ticket = open_book(signal, 1)[0]
    OpenPosition.objects.filter(pk=ticket.pk).delete()
    Signal.objects.filter(pk=signal.pk).update(published_at=timezone.now() - timedelta(minutes=30))
    Approval.objects.filter(pk=ticket.approval_id).update(status=ApprovalStatus.APPROVED)
    put_quote("EURUSD", "1.09500", "1.09510")
    assert sweep().signals == 0

    # when: the EA reports the fill it made in time, late
    result = report_fill(
        approval_id=ticket.approval_id,
        client_id=ticket.client_id,
        device_id=ticket.device_id,
        price="1.09990",
    )
    put_quote("EURUSD", "1.08990", "1.09000")
    report = sweep()

    # then: its plan is watched again, and the stop closes it
    assert report.signals == 1
    assert CloseCommand.objects.get(position_id=result.position_id).reason == CloseReason.STOP_LOSS


@pytest.mark.django_db
def test_a_fill_within_the_ttl_is_still_watched_after_the_ttl(redis_client):
    # given: a signal with a 5-minute TTL, swept while it had no position
    signal = make_signal(
        symbol="EURUSD", side="buy", entry="1.10000", sl="1.09000", tp="1.11000", ttl_minutes=5
    )
    ticket = open_book(signal, 1)[0]
    OpenPosition.objects.filter(pk=ticket.pk).delete()
    Approval.objects.filter(pk=ticket.approval_id).update(status=ApprovalStatus.APPROVED)
    put_quote("EURUSD", "1.09500", "1.09510")
    sweep()

    # when: the EA fills within the TTL, a sweep runs, and the stop is crossed after the TTL
    result = report_fill(
        approval_id=ticket.approval_id,
        client_id=ticket.client_id,
        device_id=ticket.device_id,
        price="1.09990",
    )
    sweep()
    later = time.time() + 6 * 60
    quote_store(Quote("EURUSD", Decimal("1.08990"), Decimal("1.09000"), later), received_at=later)
    report = sweep(now=later)

    # then: the live position's plan is still watched, and closed at its stop
    assert report.signals == 1
    assert CloseCommand.objects.get(position_id=result.position_id).reason == CloseReason.STOP_LOSS


@pytest.mark.django_db
def test_a_sweep_of_one_instrument_leaves_other_instruments_marks(redis_client):
    # given: a GBPUSD signal whose plan ended, a late client's approval still fillable
    gbp = make_signal(symbol="GBPUSD", side="buy", entry="1.26500", sl="1.26000", tp="1.27000")
    open_book(gbp, 1)
    late = open_book(gbp, 1)[0]
    OpenPosition.objects.filter(pk=late.pk).delete()
    Approval.objects.filter(pk=late.approval_id).update(status=ApprovalStatus.APPROVED)
    eur = make_signal(symbol="EURUSD", side="buy", entry="1.10000", sl="1.09000", tp="1.11000")
    open_book(eur, 1)
    put_quote("GBPUSD", "1.25990", "1.26000")
    put_quote("EURUSD", "1.09500", "1.09510")
    assert sweep().commands_created == 1

    # when: the late fill comes, and a sweep of EURUSD only runs before GBPUSD's
    result = report_fill(
        approval_id=late.approval_id, client_id=late.client_id, device_id=late.device_id, price="1.26010"
    )
    sweep(symbols={"EURUSD"})
    sweep(symbols={"GBPUSD"})

    # then: GBPUSD's sweep still sends the ended plan's close for the new position
    assert CloseCommand.objects.get(position_id=result.position_id).reason == CloseReason.STOP_LOSS


@pytest.mark.django_db
def test_saving_an_instrument_never_writes_an_older_plans_version_back(redis_client):
    instrument = Instrument.objects.get(symbol="EURUSD")  # read, as the admin's form does
    signal_update_hidden_levels(
        signal=make_signal(symbol="EURUSD", side="buy", entry="1.10000", sl="1.09000", tp="1.11000"),
        owner_only={"sl": "1.09500", "tp": "1.11000"},
        by=OWNER,
    )
    renewed = Instrument.objects.get(pk=instrument.pk).plans_version

    instrument.description = "Euro / US dollar"
    instrument.save()

    assert Instrument.objects.get(pk=instrument.pk).plans_version == renewed != instrument.plans_version
    assert Instrument.objects.get(pk=instrument.pk).description == "Euro / US dollar"
