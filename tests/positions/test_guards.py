"""The drawdown guard and the daily loss limit through the signed heartbeat API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.test import override_settings
from django.utils import timezone

from core.errors import DomainError
from positions.choices import AlertKind, CloseReason, GuardState, PositionStatus
from positions.guards.trip import client_guard_rearm, guards_check
from positions.models import Alert, ClientGuard, CloseCommand, GuardAccount, OpenPosition
from signals_app.choices import AuditAction
from signals_app.events import Actor
from signals_app.models import AuditEvent, Client
from tests.ea_helpers import ea_for, make_device
from tests.factories import ClientFactory, make_signal

pytestmark = pytest.mark.django_db

OWNER = Actor.system("tests-owner")


def _beat(ea, equity: str, tickets: list[str] | None = None):
    response = ea.heartbeat({"balance": "10000.00", "equity": equity, "open_tickets": tickets or []})
    assert response.status_code == 200, response.content
    return response


def _open(ea, signal, ticket: str):
    approval = signal.approvals.get(client=ea.device.client)
    response = ea.ack(
        {
            "approval_id": approval.pk,
            "status": "placed",
            "broker_ticket": ticket,
            "entry_price": str(signal.entry_price),
            "volume": "0.10",
        }
    )
    assert response.status_code == 200, response.content
    return OpenPosition.objects.get(approval=approval)


@pytest.fixture
def guarded(redis_client):
    """A client with a 10% drawdown limit, its EA, and two open positions."""
    client = ClientFactory(auto_approve=True, drawdown_limit_percent=Decimal("10"))
    ea = ea_for(make_device(client=client))
    positions = [
        _open(ea, make_signal(symbol="XAUUSD", entry="2650.50"), "T1"),
        _open(ea, make_signal(symbol="EURUSD", entry="1.10000", sl="1.09000", tp="1.12000"), "T2"),
    ]
    return client, ea, positions


def _tickets(positions) -> list[str]:
    return [position.broker_ticket for position in positions]


def test_equity_through_the_limit_closes_each_position_once_and_stops_approvals(guarded):
    client, ea, positions = guarded
    tickets = _tickets(positions)
    # given: an equity history whose peak is 10,500
    for equity in ("10000.00", "10500.00", "9800.00"):
        _beat(ea, equity, tickets)
    assert not CloseCommand.objects.exists()

    # when: equity falls below 10,500 x 0.9 = 9,450
    _beat(ea, "9449.99", tickets)

    # then: one close per open position, reason drawdown, the guard tripped, alerted, audited
    commands = CloseCommand.objects.order_by("position_id")
    assert [command.position_id for command in commands] == [position.pk for position in positions]
    assert {command.reason for command in commands} == {CloseReason.DRAWDOWN}
    guard = ClientGuard.objects.get(client=client)
    assert guard.state == GuardState.TRIPPED
    assert "drawdown" in guard.tripped_reason
    assert Alert.objects.filter(kind=AlertKind.GUARD_TRIPPED).count() == 1
    trips = AuditEvent.objects.filter(action=AuditAction.CLIENT_GUARD_TRIPPED)
    assert trips.count() == 1
    assert trips.get().data["limit"] == "drawdown"
    # the EA sees only "closed by the provider"
    delivered = ea.close_commands().json()["commands"]
    assert {command["reason"] for command in delivered} == {"closed by the provider"}

    # more heartbeats below the limit add nothing
    _beat(ea, "9000.00", tickets)
    _beat(ea, "8990.00", tickets)
    assert CloseCommand.objects.count() == 2
    assert trips.count() == 1

    # a new signal's approval does not reach the EA while tripped
    fresh = make_signal(symbol="GBPUSD", entry="1.25000", sl="1.24000", tp="1.27000")
    assert ea.poll().json() == {"approvals": []}

    # when: the owner re-arms
    client_guard_rearm(client=client, by=OWNER)

    # then: approvals flow again, and the peak is the equity it was re-armed at
    assert [row["approval_id"] for row in ea.poll().json()["approvals"]] == [
        fresh.approvals.get(client=client).pk
    ]
    account = GuardAccount.objects.get(device=ea.device)
    assert account.peak_equity == account.day_start_equity == Decimal("8990.00")
    assert AuditEvent.objects.filter(action=AuditAction.CLIENT_GUARD_REARMED).count() == 1
    _beat(ea, "8900.00")  # 1% below the new peak: armed
    assert ClientGuard.objects.get(client=client).state == GuardState.ARMED
    with pytest.raises(DomainError):
        client_guard_rearm(client=client, by=OWNER)  # not tripped


def test_a_position_filled_after_the_trip_is_closed_at_once(guarded):
    client, ea, positions = guarded
    late_signal = make_signal(symbol="GBPUSD", entry="1.25000", sl="1.24000", tp="1.27000")
    _beat(ea, "10000.00", _tickets(positions))
    _beat(ea, "8900.00", _tickets(positions))  # -11%: held? no, within the 20% jump limit: trips
    assert ClientGuard.objects.get(client=client).state == GuardState.TRIPPED

    # when: the EA reports a fill of an approval it fetched before the trip
    late = _open(ea, late_signal, "T3")

    # then: it is closed too, once
    assert late.close_commands.get().reason == CloseReason.DRAWDOWN
    assert guards_check().closes == 0
    assert CloseCommand.objects.count() == 3


def test_a_jump_is_held_and_a_contradicted_jump_never_trips(guarded):
    client, ea, positions = guarded
    tickets = _tickets(positions)
    _beat(ea, "10000.00", tickets)

    # when: one heartbeat reports -40% (beyond GUARD_EQUITY_JUMP_PERCENT), the next is back
    _beat(ea, "6000.00", tickets)
    assert GuardAccount.objects.get(device=ea.device).held_equity == Decimal("6000.00")
    assert not CloseCommand.objects.exists()
    _beat(ea, "9990.00", tickets)

    # then: nothing tripped; the owner is told a jump was ignored
    assert ClientGuard.objects.get(client=client).state == GuardState.ARMED
    assert not CloseCommand.objects.exists()
    assert Alert.objects.filter(kind=AlertKind.EQUITY_JUMP).count() == 1
    account = GuardAccount.objects.get(device=ea.device)
    assert (account.last_equity, account.held_equity) == (Decimal("9990.00"), None)


def test_a_confirmed_jump_trips(guarded):
    client, ea, positions = guarded
    tickets = _tickets(positions)
    _beat(ea, "10000.00", tickets)
    _beat(ea, "6000.00", tickets)
    assert not CloseCommand.objects.exists()
    _beat(ea, "5990.00", tickets)  # confirms the jump
    assert ClientGuard.objects.get(client=client).state == GuardState.TRIPPED
    assert CloseCommand.objects.count() == 2


def test_a_held_jump_is_not_confirmed_by_a_heartbeat_past_the_staleness_window(guarded):
    client, ea, positions = guarded
    tickets = _tickets(positions)
    _beat(ea, "10000.00", tickets)
    _beat(ea, "6000.00", tickets)
    with time_machine.travel(timezone.now() + timedelta(seconds=200), tick=False):
        _beat(ea, "5990.00", tickets)  # too late to confirm: held again
    assert ClientGuard.objects.get(client=client).state == GuardState.ARMED
    assert not CloseCommand.objects.exists()
    assert GuardAccount.objects.get(device=ea.device).held_equity == Decimal("5990.00")


def test_stale_equity_alerts_and_never_closes(guarded):
    client, ea, positions = guarded
    _beat(ea, "10000.00", _tickets(positions))
    later = timezone.now() + timedelta(seconds=121)
    report = guards_check(now=later)
    assert report.stale_devices == [ea.device.pk]
    assert report.closes == 0
    alert = Alert.objects.get(kind=AlertKind.EQUITY_STALE)
    assert alert.device_id == ea.device.pk
    guards_check(now=later)  # one alert, counted
    assert Alert.objects.filter(kind=AlertKind.EQUITY_STALE).count() == 1
    assert not CloseCommand.objects.exists()
    assert ClientGuard.objects.get(client=client).state == GuardState.ARMED


def test_a_device_with_positions_and_no_heartbeat_is_stale(guarded):
    client, ea, positions = guarded
    report = guards_check(now=timezone.now() + timedelta(seconds=121))
    assert report.stale_devices == [ea.device.pk]
    assert "never reported" in Alert.objects.get(kind=AlertKind.EQUITY_STALE).message


@override_settings(GUARD_DAILY_LOSS_LIMIT_PERCENT=Decimal("5"), GUARD_DAY_TIMEZONE="UTC")
def test_the_daily_loss_limit_trips_and_resets_at_midnight_utc(redis_client):
    client = ClientFactory(auto_approve=True)  # no limit of its own: the default 5% applies
    ea = ea_for(make_device(client=client))
    evening = datetime(2026, 11, 30, 23, 50, tzinfo=UTC)
    with time_machine.travel(evening, tick=False):
        position = _open(ea, make_signal(symbol="XAUUSD", entry="2650.50"), "D1")
        _beat(ea, "10000.00", ["D1"])
    with time_machine.travel(evening + timedelta(minutes=5), tick=False):
        _beat(ea, "9600.00", ["D1"])  # -4% today: within the limit
    # after midnight the day starts again from its first equity: 9,600
    with time_machine.travel(evening + timedelta(minutes=10, seconds=30), tick=False):
        _beat(ea, "9550.00", ["D1"])
        assert GuardAccount.objects.get(device=ea.device).day_start_equity == Decimal("9550.00")
    with time_machine.travel(evening + timedelta(minutes=11), tick=False):
        _beat(ea, "9200.00", ["D1"])  # -3.66% today (-8% since yesterday's start): armed
        assert ClientGuard.objects.get(client=client).state == GuardState.ARMED
        _beat(ea, "9072.50", ["D1"])  # -5.0% today: trips
    guard = ClientGuard.objects.get(client=client)
    assert guard.state == GuardState.TRIPPED
    assert "loss since the day's first equity" in guard.tripped_reason
    assert position.close_commands.get().reason == CloseReason.DRAWDOWN


def test_another_clients_guard_is_not_touched(guarded, redis_client):
    client, ea, positions = guarded
    other = ClientFactory(auto_approve=True, drawdown_limit_percent=Decimal("10"))
    other_ea = ea_for(make_device(client=other))
    other_position = _open(
        other_ea, make_signal(symbol="USDJPY", entry="150.000", sl="149.000", tp="152.000"), "O1"
    )
    _beat(other_ea, "5000.00", ["O1"])
    _beat(ea, "10000.00", _tickets(positions))
    _beat(ea, "8000.00", _tickets(positions))
    assert ClientGuard.objects.get(client=other).state == GuardState.ARMED
    assert not other_position.close_commands.exists()
    assert other_ea.poll().status_code == 200


@pytest.mark.parametrize("value", ["0", "100", "-1", "150.5"])
def test_a_limit_outside_0_to_100_is_refused(value):
    client = ClientFactory.build(name="limits", drawdown_limit_percent=Decimal(value))
    with pytest.raises(ValidationError) as refused:
        client.full_clean()
    assert "above 0 and below 100" in str(refused.value)
    client = ClientFactory.build(name="limits-daily", daily_loss_limit_percent=Decimal(value))
    with pytest.raises(ValidationError):
        client.full_clean()


def test_the_database_refuses_a_limit_out_of_range():
    client = ClientFactory()
    with pytest.raises(IntegrityError), transaction.atomic():
        Client.objects.filter(pk=client.pk).update(drawdown_limit_percent=Decimal("0"))
    Client.objects.filter(pk=client.pk).update(daily_loss_limit_percent=Decimal("99.99"))


def test_no_limit_no_default_never_trips(redis_client):
    client = ClientFactory(auto_approve=True)
    ea = ea_for(make_device(client=client))
    _open(ea, make_signal(symbol="XAUUSD", entry="2650.50"), "N1")
    _beat(ea, "10000.00", ["N1"])
    _beat(ea, "8500.00", ["N1"])
    _beat(ea, "8400.00", ["N1"])
    assert ClientGuard.objects.get(client=client).state == GuardState.ARMED
    assert not CloseCommand.objects.exists()
    assert OpenPosition.objects.get().status == PositionStatus.OPEN
