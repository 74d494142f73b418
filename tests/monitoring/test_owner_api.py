"""The owner's REST API for the monitor's state, against real PostgreSQL and Redis. Manual
close and test-breach are tested in tests/positions/test_owner_api.py."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings
from django.http import HttpRequest
from django.test import override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from ea_gateway.models import Device
from monitoring.models import Heartbeat
from monitoring.selectors import monitor_status
from monitoring.services import heartbeat_record
from positions.choices import AlertKind, PositionStatus
from positions.close_delivery import CloseResult, close_command_ack, close_commands_deliver
from positions.models import Alert, CloseCommand, OpenPosition
from positions.scanner import sweep
from positions.sweep_history import sweep_durations, sweep_last
from signals_app.events import Actor
from tests.factories import OwnerFactory, UserFactory, make_signal, open_book
from tests.positions.test_owner_api import PINNED, api_for, assert_error
from tests.positions.test_scanner import put_quote

pytestmark = pytest.mark.django_db

STATUS_URL = "/api/v1/admin/positions/monitor/status"


@pytest.fixture
def owner_api() -> APIClient:
    return api_for(OwnerFactory())


@pytest.fixture
def gold_book(redis_client) -> list[OpenPosition]:
    """A published gold buy with 3 open positions: something for the status to count."""
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    return open_book(signal, 3)


# --- authentication and permissions ----------------------------------------------------


def test_anonymous_is_401(gold_book):
    response = APIClient().get(STATUS_URL)

    assert_error(response, 401, "not_authenticated")
    assert response.headers["WWW-Authenticate"] == "Token"
    assert not CloseCommand.objects.exists()


def test_a_wrong_token_is_401(gold_book):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)

    assert_error(api.get(STATUS_URL), 401, "not_authenticated")


def test_an_authenticated_non_staff_user_is_403(gold_book):
    client_user = UserFactory()  # a real account, just not the owner's

    response = api_for(client_user).get(STATUS_URL)

    assert_error(response, 403, "forbidden")
    assert "open_positions_count" not in response.content.decode()
    assert not CloseCommand.objects.exists()
    assert not OpenPosition.objects.exclude(status=PositionStatus.OPEN).exists()


def test_staff_with_a_token_gets_through(gold_book):
    staff = UserFactory(is_staff=True)  # no permission needed beyond staff: the status holds no levels

    response = api_for(staff).get(STATUS_URL)

    assert response.status_code == 200, response.content
    assert response.json()["open_positions_count"] == 3


def test_session_auth_works_for_a_logged_in_staff_user(gold_book):
    owner = OwnerFactory()
    owner.set_password("correct horse battery staple")
    owner.save()
    browser = APIClient(enforce_csrf_checks=True)
    # django-axes judges every login by its request: the test client's login passes one.
    password = "correct horse battery staple"
    assert browser.login(request=HttpRequest(), username=owner.username, password=password)

    # A read: no CSRF token needed.
    response = browser.get(STATUS_URL)

    assert response.status_code == 200, response.content
    assert response.json()["open_positions_count"] == 3


@override_settings(**PINNED)
def test_status_of_an_idle_system(owner_api, redis_client):
    body = owner_api.get(STATUS_URL).json()

    assert body == {
        "monitor_running": False,  # no sweep, no heartbeat
        "monitor_enabled": True,
        "dry_run": False,
        "last_check": None,
        "beat_heartbeat_age_seconds": None,
        "open_positions_count": 0,
        "open_positions_by_instrument": {},
        "pending_closes_count": 0,
        "delivered_closes_count": 0,
        "avg_check_duration_ms": None,
        "p95_check_duration_ms": None,
        "breaches_last_hour": {"sl": 0, "tp": 0, "trailing": 0, "breakeven": 0, "partial_tp": 0},
        "closing_positions_count": 0,
        "close_failed_positions_count": 0,
        "close_success_rate_24h": None,
        "breach_to_close_latency_ms_median": None,
        "devices_offline_with_open_positions": 0,
        "stale_quotes": [],
        "open_alerts": 0,
        "unavailable": [],
    }


def _device_seen(position: OpenPosition, when: datetime) -> None:
    Device.objects.filter(pk=position.device_id).update(last_seen_at=when)


@override_settings(**PINNED)
def test_status_from_real_data(owner_api, redis_client):
    # given: four signals on two instruments, 11 open positions, every EA just seen
    gold_stop = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    gold_target = make_signal(symbol="XAUUSD", side="sell", entry="2650.00", sl="2700.00", tp="2646.00")
    gold_quiet = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2600.00", tp="2700.00")
    euro = make_signal(symbol="EURUSD", side="buy", entry="1.08500", sl="1.08000", tp="1.09000")
    open_book(gold_stop, 3)
    open_book(gold_target, 2)
    quiet = open_book(gold_quiet, 4)
    open_book(euro, 2)
    now = timezone.now()
    Device.objects.update(last_seen_at=now)

    # a fresh gold quote crossing one signal's stop and another's target; a stale euro quote
    # that would cross its stop but is too old to judge
    put_quote("XAUUSD", "2644.90", "2645.20")
    put_quote("EURUSD", "1.07000", "1.07020", ts=time.time() - settings.QUOTE_MAX_AGE_SECONDS - 30)
    swept_from = time.time()
    reports = [sweep(), sweep(), sweep()]
    swept_until = time.time()
    assert [report.commands_created for report in reports] == [5, 0, 0]
    heartbeat_record(name="beat", worker="w")

    # the EAs: two stops executed, one failed (its position reopens), one target delivered
    stops = list(CloseCommand.objects.filter(position__signal=gold_stop).order_by("pk"))
    targets = list(CloseCommand.objects.filter(position__signal=gold_target).order_by("pk"))
    by = Actor.system("tests")
    for command in stops[:2]:
        close_command_ack(
            command_id=command.pk,
            device_id=command.device_id,
            result=CloseResult(executed=True, close_price=Decimal("2644.80"), closed_volume=Decimal("0.10")),
            by=by,
        )
    close_command_ack(
        command_id=stops[2].pk,
        device_id=stops[2].device_id,
        result=CloseResult(executed=False, error="market closed"),
        by=by,
    )
    assert len(close_commands_deliver(device_id=targets[0].device_id, limit=5)) == 1
    # one stop breach from before the last hour
    CloseCommand.objects.filter(pk=stops[0].pk).update(created_at=now - timedelta(hours=2))

    # alerts: the sweep's stale-quote alert, one more open, one acknowledged
    Alert.objects.create(kind=AlertKind.SPIKE, dedupe_key="test:open", message="look at this")
    Alert.objects.create(
        kind=AlertKind.SPIKE, dedupe_key="test:done", message="seen", acknowledged_at=now, acknowledged_by="o"
    )
    assert Alert.objects.get(kind=AlertKind.STALE_QUOTE, acknowledged_at__isnull=True)

    # devices gone quiet: one with an open position, one with a closing one, one whose position closed
    long_ago = now - timedelta(seconds=settings.DEVICE_OFFLINE_SECONDS + 60)
    _device_seen(quiet[0], long_ago)
    _device_seen(targets[1].position, long_ago)
    _device_seen(stops[0].position, long_ago)

    # when
    with time_machine.travel(timezone.now(), tick=False):
        response = owner_api.get(STATUS_URL)
        direct = monitor_status()

    # then: exactly the selector's dict, field for field
    assert response.status_code == 200
    body = response.json()
    assert body == json.loads(json.dumps(direct))
    assert body["monitor_running"] is True
    assert (body["monitor_enabled"], body["dry_run"]) == (True, False)
    last_check = datetime.fromisoformat(body["last_check"])
    assert swept_from <= last_check.timestamp() <= swept_until
    assert last_check.tzinfo is not None
    assert 0 <= body["beat_heartbeat_age_seconds"] < 30
    assert body["open_positions_count"] == 7  # 4 quiet + 1 reopened + 2 euro
    assert body["open_positions_by_instrument"] == {"EURUSD": 2, "XAUUSD": 5}
    assert (body["pending_closes_count"], body["delivered_closes_count"]) == (1, 1)
    # one signal each, however many positions
    assert body["breaches_last_hour"] == {"sl": 1, "tp": 1, "trailing": 0, "breakeven": 0, "partial_tp": 0}
    assert (body["closing_positions_count"], body["close_failed_positions_count"]) == (2, 0)
    assert body["close_success_rate_24h"] == 0.6667  # 2 executed of 3 finished
    assert body["breach_to_close_latency_ms_median"] is not None
    assert body["breach_to_close_latency_ms_median"] >= 0
    assert body["devices_offline_with_open_positions"] == 2
    assert body["stale_quotes"] == ["EURUSD"]
    assert body["open_alerts"] == 2
    durations = sweep_durations(limit=1000)
    assert len(durations) == 3
    assert body["avg_check_duration_ms"] == round(1000 * sum(durations) / 3, 2)
    assert body["p95_check_duration_ms"] == round(1000 * max(durations), 2)
    assert 0 < body["avg_check_duration_ms"] <= body["p95_check_duration_ms"]


@override_settings(**PINNED)
def test_the_monitor_is_not_running_without_a_fresh_heartbeat_or_sweep(owner_api, redis_client):
    sweep()
    heartbeat_record(name="beat", worker="w")
    assert owner_api.get(STATUS_URL).json()["monitor_running"] is True

    # An old heartbeat: beat or its worker is down, whatever the last sweep says.
    Heartbeat.objects.filter(name="beat").update(
        last_seen_at=timezone.now() - timedelta(seconds=settings.HEALTH_BEAT_MAX_AGE_SECONDS + 5)
    )
    stale_beat = owner_api.get(STATUS_URL).json()
    assert stale_beat["monitor_running"] is False
    assert stale_beat["beat_heartbeat_age_seconds"] > settings.HEALTH_BEAT_MAX_AGE_SECONDS

    # A fresh heartbeat but no sweep for more than three intervals: the scanner is stuck.
    heartbeat_record(name="beat", worker="w")
    last_sweep = sweep_last().at
    later = datetime.fromtimestamp(last_sweep, tz=UTC) + timedelta(
        seconds=3 * settings.POSITION_MONITOR_INTERVAL_SECONDS + 1
    )
    with time_machine.travel(later, tick=False):
        assert owner_api.get(STATUS_URL).json()["monitor_running"] is False

    # And a monitor switched off is not running, however fresh everything is.
    sweep()
    with override_settings(POSITION_MONITOR_ENABLED=False):
        switched_off = owner_api.get(STATUS_URL).json()
    assert (switched_off["monitor_running"], switched_off["monitor_enabled"]) == (False, False)


# --- Redis down ----------------------------------------------------------------------

REDIS_FIGURES = [
    "monitor_running",
    "last_check",
    "avg_check_duration_ms",
    "p95_check_duration_ms",
    "stale_quotes",
]


def test_every_figure_is_available_when_redis_is_up(owner_api, gold_book):
    body = owner_api.get(STATUS_URL).json()

    assert body["unavailable"] == []
    assert body["stale_quotes"] == ["XAUUSD"]


def test_the_status_degrades_when_redis_is_down(owner_api, gold_book, settings, unused_tcp_port):
    # given: a pending close and an open alert in PostgreSQL
    position = gold_book[0]
    CloseCommand.objects.create(
        position=position, device=position.device, volume=position.volume, next_attempt_at=timezone.now()
    )
    Alert.objects.create(kind=AlertKind.SPIKE, dedupe_key="spike:XAUUSD", message="XAUUSD jumped")
    # and a real Redis client pointed at a port where nothing listens: connections are refused
    settings.REDIS_URL = f"redis://127.0.0.1:{unused_tcp_port}/0"

    # when
    response = owner_api.get(STATUS_URL)

    # then: an answer, the figures kept in Redis marked unavailable, the others read
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["unavailable"] == REDIS_FIGURES
    assert all(body[name] is None for name in REDIS_FIGURES)
    assert body["open_positions_count"] == 3
    assert body["open_positions_by_instrument"] == {"XAUUSD": 3}
    assert body["pending_closes_count"] == 1
    assert body["open_alerts"] == 1
    assert body["monitor_enabled"] is True


# --- the schema -------------------------------------------------------------------


def test_the_schema_documents_the_monitor_status(owner_api, redis_client):
    schema = owner_api.get("/api/v1/schema?format=json").json()
    components = schema["components"]["schemas"]

    status = schema["paths"]["/api/v1/admin/positions/monitor/status"]["get"]
    assert status["operationId"] == "owner_monitor_status"
    assert status["tags"] == ["owner"]
    assert {"200", "401", "403"} <= set(status["responses"])
    assert {next(iter(scheme)) for scheme in status["security"]} == {"tokenAuth", "cookieAuth"}
    # The status serializer lists exactly what the selector returns.
    assert set(components["MonitorStatusOutput"]["properties"]) == set(monitor_status())
