"""The breach scanner, called directly against real PostgreSQL and Redis."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from positions.choices import AlertKind, CloseCommandStatus, CloseReason, PositionStatus
from positions.close_delivery import close_commands_deliver
from positions.models import Alert, CloseCommand, OpenPosition
from positions.plan_book import books_clear
from positions.plan_store import plans_recheck_all_due
from positions.quotes import Quote, quote_store
from positions.scanner import sweep
from positions.timeouts import close_commands_timeout
from signals_app.models import AuditEvent
from tests.factories import make_signal, open_book

pytestmark = pytest.mark.django_db


def put_quote(symbol: str, bid: str, ask: str, ts: float | None = None) -> None:
    now = time.time()
    quote_store(Quote(symbol, Decimal(bid), Decimal(ask), now if ts is None else ts), received_at=now)


@pytest.fixture
def gold(redis_client):
    """A gold buy at 2650.50, SL 2645, TP 2670, with 5 open positions; the market at 2650."""
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    positions = open_book(signal, 5)
    put_quote("XAUUSD", "2650.00", "2650.30", time.time() - 1)
    return signal, positions


def test_a_crossed_stop_closes_every_position_of_the_signal_once(gold):
    signal, positions = gold
    bystander = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2600.00", tp="2700.00")
    open_book(bystander, 3)
    put_quote("XAUUSD", "2644.90", "2645.30")

    report = sweep()
    again = sweep()

    assert (report.commands_created, again.commands_created) == (5, 0)
    commands = CloseCommand.objects.filter(position__signal=signal)
    assert commands.count() == 5
    assert {command.reason for command in commands} == {CloseReason.STOP_LOSS}
    assert {command.status for command in commands} == {CloseCommandStatus.PENDING}
    assert commands.first().trigger_quote["bid"] == "2644.90"
    assert set(OpenPosition.objects.filter(signal=signal).values_list("status", flat=True)) == {"closing"}
    assert set(OpenPosition.objects.filter(signal=bystander).values_list("status", flat=True)) == {"open"}
    audited = AuditEvent.objects.filter(action="position.close_requested", actor="scanner")
    assert sorted(audited.values_list("subject_id", flat=True)) == sorted(p.pk for p in positions)
    assert audited.first().data["trigger_quote"]["bid"] == "2644.90"


def test_a_buy_ignores_the_ask_and_a_sell_ignores_the_bid(redis_client):
    buy = make_signal(symbol="EURUSD", side="buy", entry="1.08500", sl="1.08000", tp="1.09000")
    sell = make_signal(symbol="EURUSD", side="sell", entry="1.08500", sl="1.09000", tp="1.08000")
    open_book(buy, 2)
    open_book(sell, 2)
    put_quote("EURUSD", "1.08990", "1.09010")  # ask over the sell's SL; bid under the buy's TP

    sweep()

    assert not CloseCommand.objects.filter(position__signal=buy).exists()
    assert set(CloseCommand.objects.filter(position__signal=sell).values_list("reason", flat=True)) == {
        "stop_loss"
    }


def test_take_profit_closes_with_its_reason(gold):
    signal, _ = gold
    put_quote("XAUUSD", "2670.10", "2670.40")
    sweep()
    assert set(CloseCommand.objects.values_list("reason", flat=True)) == {CloseReason.TAKE_PROFIT}


def test_a_stale_quote_closes_nothing_and_alerts(gold):
    put_quote("XAUUSD", "2600.00", "2600.30", time.time() - 3600)  # ignored: older than the stored one
    put_quote("XAUUSD", "2600.00", "2600.30", time.time() - 0.5)
    with override_settings(QUOTE_MAX_AGE_SECONDS=10):
        sweep(now=time.time() + 30)

    assert not CloseCommand.objects.exists()
    alert = Alert.objects.get(kind=AlertKind.STALE_QUOTE)
    assert "XAUUSD" in alert.message
    sweep(now=time.time() + 31)
    assert Alert.objects.get(kind=AlertKind.STALE_QUOTE).occurrences == 2


def test_a_spike_waits_for_a_confirming_quote(gold):
    put_quote("XAUUSD", "2500.00", "2500.30")  # -5.6% in one tick

    sweep()
    assert not CloseCommand.objects.exists()
    assert Alert.objects.filter(kind=AlertKind.SPIKE).exists()

    put_quote("XAUUSD", "2500.50", "2500.80")
    sweep()
    assert CloseCommand.objects.count() == 5


def test_a_spike_that_reverts_closes_nothing(gold):
    put_quote("XAUUSD", "2500.00", "2500.30")
    sweep()
    put_quote("XAUUSD", "2650.00", "2650.30")
    sweep()
    assert not CloseCommand.objects.exists()


@override_settings(BREACH_RECHECK_DELAY_SECONDS=2)
def test_the_recheck_delay_needs_the_breach_to_hold(gold):
    now = time.time()
    put_quote("XAUUSD", "2644.00", "2644.30", now)
    sweep(now=now)
    put_quote("XAUUSD", "2644.10", "2644.40", now + 1)
    sweep(now=now + 1)
    assert not CloseCommand.objects.exists()
    put_quote("XAUUSD", "2644.20", "2644.50", now + 2)
    sweep(now=now + 2)
    assert CloseCommand.objects.count() == 5


@override_settings(BREACH_PRICE_TOLERANCE_PIPS=Decimal(5))  # gold pip 0.1: 0.50 beyond the level
def test_tolerance_in_pips(gold):
    put_quote("XAUUSD", "2644.60", "2644.90")
    sweep()
    assert not CloseCommand.objects.exists()
    put_quote("XAUUSD", "2644.50", "2644.80")
    sweep()
    assert CloseCommand.objects.count() == 5


def test_canary_clients_with_auto_close_off_are_left_and_reported(gold):
    signal, _ = gold
    open_book(signal, 2, auto_close=False)
    put_quote("XAUUSD", "2644.00", "2644.30")

    report = sweep()

    assert report.commands_created == 5
    assert OpenPosition.objects.filter(signal=signal, status="open").count() == 2
    assert "2 position(s)" in Alert.objects.get(kind=AlertKind.AUTO_CLOSE_DISABLED).message


@override_settings(POSITION_MONITOR_DRY_RUN=True)
def test_dry_run_audits_once_and_closes_nothing(gold):
    signal, _ = gold
    put_quote("XAUUSD", "2644.00", "2644.30")
    sweep()
    sweep()
    assert not CloseCommand.objects.exists()
    event = AuditEvent.objects.get(action="signal.breach_dry_run")
    assert (event.subject_id, event.data["level"]) == (signal.pk, "stop_loss")


@override_settings(POSITION_MONITOR_ENABLED=False)
def test_a_disabled_monitor_does_nothing(gold):
    put_quote("XAUUSD", "2644.00", "2644.30")
    assert sweep().signals == 0
    assert not CloseCommand.objects.exists()


def test_sweep_queries_do_not_grow_with_open_positions(redis_client):
    small = make_signal(symbol="EURUSD", side="buy", entry="1.08500", sl="1.08000", tp="1.09000")
    big = make_signal(symbol="GBPUSD", side="buy", entry="1.26500", sl="1.26000", tp="1.27000")
    open_book(small, 2)
    open_book(big, 100)
    put_quote("EURUSD", "1.08400", "1.08410")
    put_quote("GBPUSD", "1.26400", "1.26410")

    def queries(**kwargs) -> int:
        with CaptureQueriesContext(connection) as context:
            sweep(**kwargs)
        return len(context)

    plans_recheck_all_due()  # the once-a-minute safety net, taken: not part of what is counted
    # A worker's first sweep reads its books (a fixed number of queries per instrument)...
    cold_100 = queries()
    books_clear()
    open_book(big, 300)
    cold_400 = queries()
    # ... after that, a sweep that changes nothing reads the sweep locks and the versions.
    warm = queries()
    put_quote("EURUSD", "1.07990", "1.08000")
    put_quote("GBPUSD", "1.25990", "1.26000")
    with CaptureQueriesContext(connection) as breached:
        report = sweep()

    assert cold_100 == cold_400
    assert warm <= 6
    # Walking the plans, saving them and one claim: none per position.
    assert len(breached) <= warm + 12
    assert report.commands_created == 402


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_sweeps_over_1000_breached_positions_make_1000_commands(redis_client):
    signals = [
        make_signal(symbol=symbol, side="buy", entry="1.08500", sl="1.08000", tp="1.09000")
        for symbol in ("EURUSD", "AUDUSD", "NZDUSD", "USDCAD")
    ]
    for signal in signals:
        open_book(signal, 250)
    for signal in signals:
        put_quote(signal.instrument.symbol, "1.07900", "1.07910")
    barrier = threading.Barrier(2)
    reports = []

    def run() -> None:
        try:
            barrier.wait()
            reports.append(sweep())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(report.commands_created for report in reports) == 1000
    assert CloseCommand.objects.count() == 1000
    assert CloseCommand.objects.values("position").distinct().count() == 1000


def test_stale_commands_are_redelivered_with_the_same_id_then_expire(gold, settings):
    signal, positions = gold
    settings.CLOSE_MAX_ATTEMPTS = 2
    put_quote("XAUUSD", "2644.00", "2644.30")
    sweep()
    device_id = positions[0].device_id
    (command,) = close_commands_deliver(device_id=device_id, limit=10)

    later = timezone.now() + timedelta(seconds=settings.CLOSE_ACK_TIMEOUT_SECONDS + 1)
    first = close_commands_timeout(now=later)
    assert first.redelivered == 5 - 4  # only the one delivered command had a lease
    command.refresh_from_db()
    assert (command.status, command.attempts) == (CloseCommandStatus.PENDING, 1)
    again = close_commands_deliver(device_id=device_id, limit=10, now=later + timedelta(seconds=5))
    assert [c.pk for c in again] == [command.pk]  # the same command id, delivered again

    final = close_commands_timeout(now=later + timedelta(seconds=settings.CLOSE_ACK_TIMEOUT_SECONDS + 10))

    assert final.expired == 1
    command.refresh_from_db()
    assert command.status == CloseCommandStatus.EXPIRED
    assert OpenPosition.objects.get(pk=command.position_id).status == PositionStatus.CLOSE_FAILED
    assert Alert.objects.filter(kind=AlertKind.CLOSE_FAILED, position_id=command.position_id).exists()
    assert AuditEvent.objects.filter(action="close_command.expired", subject_id=command.pk).exists()


def test_pending_commands_of_an_offline_device_alert_the_owner(gold):
    put_quote("XAUUSD", "2644.00", "2644.30")
    sweep()
    report = close_commands_timeout()
    assert report.offline_alerts == 5  # never-seen devices, each with a waiting close
    assert close_commands_timeout().offline_alerts == 0  # the open alerts are counted, not repeated
    assert Alert.objects.filter(kind=AlertKind.DEVICE_OFFLINE).count() == 5


def test_a_missing_quote_alerts_and_closes_nothing(redis_client):
    signal = make_signal(symbol="USDJPY", side="buy", entry="150.000", sl="149.000", tp="151.000")
    open_book(signal, 2)

    report = sweep()

    assert report.outcomes["no_quote"] == 1
    assert not CloseCommand.objects.exists()
    assert "no quote at all" in Alert.objects.get(kind=AlertKind.STALE_QUOTE).message


def test_an_unreadable_signal_is_alerted_and_the_rest_still_watched(gold):
    from django.test import override_settings as override

    signal, _ = gold
    other_key = "another-key-that-the-broken-signal-was-written-with-0001"
    with override(FERNET_KEYS=[other_key]):
        broken = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2640.00", tp="2680.00")
    open_book(broken, 2)
    put_quote("XAUUSD", "2644.00", "2644.30")

    report = sweep()

    assert report.commands_created == 5  # the readable signal's positions
    alert = Alert.objects.get(kind=AlertKind.UNREADABLE_LEVELS)
    assert f"#{broken.pk}" in alert.message
    assert "2640" not in alert.message


def test_the_requeue_and_the_expiry_are_audited_on_command_and_position(gold, settings):
    signal, positions = gold
    settings.CLOSE_MAX_ATTEMPTS = 1
    put_quote("XAUUSD", "2644.00", "2644.30")
    sweep()
    (command,) = close_commands_deliver(device_id=positions[0].device_id, limit=1)
    close_commands_timeout(now=timezone.now() + timedelta(seconds=settings.CLOSE_ACK_TIMEOUT_SECONDS + 1))
    assert AuditEvent.objects.filter(action="position.close_failed", subject_id=command.position_id).exists()

    settings.CLOSE_MAX_ATTEMPTS = 5
    (again,) = close_commands_deliver(device_id=positions[1].device_id, limit=1)
    close_commands_timeout(now=timezone.now() + timedelta(seconds=settings.CLOSE_ACK_TIMEOUT_SECONDS + 1))
    event = AuditEvent.objects.get(action="close_command.requeued", subject_id=again.pk)
    assert event.data["attempts"] == 1


def test_a_future_stamped_quote_is_stale_once_it_has_aged_since_arrival(gold):
    received = time.time()
    quote_store(Quote("XAUUSD", Decimal("2644.00"), Decimal("2644.30"), received + 4), received_at=received)
    with override_settings(QUOTE_MAX_AGE_SECONDS=10):
        sweep(now=received + 11)
    assert not CloseCommand.objects.exists()
    assert Alert.objects.filter(kind=AlertKind.STALE_QUOTE).exists()
