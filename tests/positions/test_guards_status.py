"""``GET /api/v1/guards/status``: the clients' guards, each figure from real heartbeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.test import override_settings
from rest_framework.test import APIClient

from ea_gateway.services import device_revoke
from positions.guards.selectors import guards_status_clients
from signals_app.events import Actor
from tests.ea_helpers import ea_for, make_device
from tests.factories import ClientFactory, OwnerFactory, UserFactory, make_signal
from tests.positions.test_guards import _beat, _open
from tests.positions.test_owner_api import api_for, assert_error

pytestmark = pytest.mark.django_db

STATUS_URL = "/api/v1/guards/status"
MORNING = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def _client_row(body: dict, name: str) -> dict:
    return next(row for row in body["clients"] if row["client"] == name)


@override_settings(GUARD_DRAWDOWN_LIMIT_PERCENT=Decimal("20"), GUARD_DAILY_LOSS_LIMIT_PERCENT=Decimal("0"))
def test_each_figure_comes_from_the_heartbeats(redis_client):
    # given: a client with its own daily limit (drawdown from the default), two positions, and
    # a day of equity: first 10,000, a peak of 11,000, now 10,450
    client = ClientFactory(auto_approve=True, daily_loss_limit_percent=Decimal("7.5"))
    ea = ea_for(make_device(client=client))
    idle = ClientFactory(name="idle-client")
    with time_machine.travel(MORNING, tick=False):
        _open(ea, make_signal(symbol="XAUUSD", entry="2650.50"), "S1")
        _open(ea, make_signal(symbol="EURUSD", entry="1.10000", sl="1.09000", tp="1.12000"), "S2")
        for minute, equity in enumerate(("10000.00", "11000.00", "10450.00")):
            with time_machine.travel(MORNING + timedelta(minutes=minute), tick=False):
                _beat(ea, equity, ["S1", "S2"])

        # when
        response = api_for(OwnerFactory()).get(STATUS_URL)

    # then
    assert response.status_code == 200, response.content
    body = response.json()
    # the market guard's half, per instrument: no quote yet where positions are open
    instruments = {row["instrument"]: row for row in body["instruments"]}
    assert instruments["XAUUSD"]["live_positions"] == 1
    assert (instruments["XAUUSD"]["state"], instruments["XAUUSD"]["reason"]) == ("held", "no quote at all")
    assert instruments["XAUUSD"]["spread"] is None
    assert (instruments["US30"]["state"], instruments["US30"]["live_positions"]) == ("normal", 0)
    row = _client_row(body, client.name)
    assert row["state"] == "armed"
    assert Decimal(row["equity"]) == Decimal("10450")
    assert Decimal(row["peak"]) == Decimal("11000")
    assert Decimal(row["drawdown_percent"]) == Decimal("5.00")  # 550 / 11,000
    assert Decimal(row["daily_loss_percent"]) == Decimal("0.00")  # up 4.5% on the day
    assert Decimal(row["drawdown_limit_percent"]) == Decimal("20")  # the default
    assert Decimal(row["daily_loss_limit_percent"]) == Decimal("7.5")  # its own
    (account,) = row["accounts"]
    assert account["device_id"] == ea.device.pk
    assert Decimal(account["day_start_equity"]) == Decimal("10000")
    assert account["live_positions"] == 2
    assert account["stale"] is False
    assert account["jump_held"] is False
    assert account["equity_at"].startswith("2026-11-30T09:02:00")
    # a client that never sent equity: no figures, limits as configured (daily off by default)
    quiet = _client_row(body, idle.name)
    assert quiet["equity"] is None
    assert quiet["drawdown_percent"] is None
    assert quiet["daily_loss_limit_percent"] is None
    assert quiet["state"] == "armed"


@override_settings(GUARD_DAILY_LOSS_LIMIT_PERCENT=Decimal("50"))
def test_daily_loss_is_measured_from_the_days_first_equity(redis_client):
    client = ClientFactory(auto_approve=True)
    ea = ea_for(make_device(client=client))
    for minute, equity in enumerate(("10000.00", "9500.00", "9300.00")):
        with time_machine.travel(MORNING + timedelta(minutes=minute), tick=False):
            _beat(ea, equity)
    with time_machine.travel(MORNING + timedelta(minutes=3), tick=False):
        row = _client_row({"clients": guards_status_clients()}, client.name)
    assert row["daily_loss_percent"] == Decimal("7.00")
    assert row["drawdown_percent"] == Decimal("7.00")
    # the next day, before its first heartbeat, nothing is lost yet
    with time_machine.travel(MORNING + timedelta(days=1), tick=False):
        row = _client_row({"clients": guards_status_clients()}, client.name)
    assert row["daily_loss_percent"] == Decimal("0.00")
    assert row["accounts"][0]["day_start_equity"] is None


def test_state_tripped_then_stale(redis_client):
    client = ClientFactory(auto_approve=True, drawdown_limit_percent=Decimal("10"))
    ea = ea_for(make_device(client=client))
    with time_machine.travel(MORNING, tick=False):
        _open(ea, make_signal(symbol="XAUUSD", entry="2650.50"), "X1")
        _beat(ea, "10000.00", ["X1"])
        _beat(ea, "8500.00", ["X1"])
        row = _client_row({"clients": guards_status_clients()}, client.name)
    assert row["state"] == "tripped"
    assert "drawdown" in row["tripped_reason"]
    assert row["tripped_at"] is not None
    # re-armed, and then silent with a live position (closing): stale
    from positions.guards.trip import client_guard_rearm

    client_guard_rearm(client=client, by=Actor.system("tests"))
    with time_machine.travel(MORNING + timedelta(seconds=121), tick=False):
        row = _client_row({"clients": guards_status_clients()}, client.name)
    assert row["state"] == "stale"
    assert row["accounts"][0]["stale"] is True
    assert row["tripped_reason"] == ""


def test_live_positions_on_an_ea_that_never_reported_equity_are_stale(redis_client):
    client = ClientFactory(auto_approve=True)
    ea = ea_for(make_device(client=client))
    with time_machine.travel(MORNING, tick=False):
        _open(ea, make_signal(symbol="XAUUSD", entry="2650.50"), "Q1")
        row = _client_row({"clients": guards_status_clients()}, client.name)
    assert row["state"] == "armed"  # a fresh fill: its heartbeat may not have come yet
    with time_machine.travel(MORNING + timedelta(seconds=121), tick=False):
        row = _client_row({"clients": guards_status_clients()}, client.name)
    assert row["state"] == "stale"
    assert row["accounts"] == []


def test_a_held_jump_shows_and_a_revoked_devices_account_does_not(redis_client):
    client = ClientFactory(auto_approve=True)
    ea = ea_for(make_device(client=client))
    _beat(ea, "10000.00")
    _beat(ea, "1000.00")
    row = _client_row({"clients": guards_status_clients()}, client.name)
    assert row["accounts"][0]["jump_held"] is True
    assert row["equity"] == Decimal("10000.00")  # the held jump is not accepted equity
    device_revoke(device=ea.device, by=Actor.system("tests"))
    row = _client_row({"clients": guards_status_clients()}, client.name)
    assert row["accounts"] == []
    assert row["equity"] is None


def test_anonymous_is_401_and_non_staff_403():
    assert_error(APIClient().get(STATUS_URL), 401, "not_authenticated")
    response = api_for(UserFactory()).get(STATUS_URL)
    assert_error(response, 403, "forbidden")
    assert "clients" not in response.content.decode()


def test_staff_without_the_guards_view_permission_is_403():
    response = api_for(UserFactory(is_staff=True)).get(STATUS_URL)
    assert_error(response, 403, "forbidden")
    assert "clients" not in response.content.decode()


@override_settings(GUARD_EQUITY_JUMP_PERCENT=Decimal("100"))
def test_an_absurd_equity_is_a_figure_not_a_server_error(redis_client):
    # given: an account that starts at 1.00 and then reports -1e10, twice (confirmed)
    client = ClientFactory(auto_approve=True)
    ea = ea_for(make_device(client=client))
    _open(ea, make_signal(symbol="XAUUSD", entry="2650.50"), "S1")
    for equity in ("1.00", "-10000000000.00", "-10000000000.00"):
        _beat(ea, equity, ["S1"])

    response = api_for(OwnerFactory()).get(STATUS_URL)

    assert response.status_code == 200, response.content
    assert Decimal(_client_row(response.json(), client.name)["drawdown_percent"]) > Decimal("1e9")


def test_the_schema_documents_the_guards_status(redis_client):
    owner_api = api_for(OwnerFactory())
    schema = owner_api.get("/api/v1/schema?format=json").json()
    status = schema["paths"][STATUS_URL]["get"]
    assert status["operationId"] == "owner_guards_status"
    assert status["tags"] == ["owner"]
    assert {"200", "401", "403"} <= set(status["responses"])
    assert {next(iter(scheme)) for scheme in status["security"]} == {"tokenAuth", "cookieAuth"}
    components = schema["components"]["schemas"]
    client = ClientFactory()
    (row,) = [row for row in guards_status_clients() if row["client_id"] == client.pk]
    assert set(components["GuardClientOutput"]["properties"]) == set(row)
