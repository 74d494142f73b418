"""The owner's REST API for one position: manual close and test-breach, against real
PostgreSQL and Redis. The monitor status endpoint is tested in tests/monitoring."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import Permission
from django.db import connection
from django.http import HttpRequest
from django.middleware.csrf import get_token
from django.test import RequestFactory, override_settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from monitoring.models import Heartbeat
from positions.choices import CloseCommandStatus, CloseReason, PositionStatus
from positions.close_delivery import CloseResult, close_command_ack
from positions.closes import close_command_request
from positions.models import Alert, CloseCommand, OpenPosition, SignalPlan
from positions.scanner import sweep
from signals_app.events import Actor
from signals_app.models import AuditEvent
from tests.factories import OwnerFactory, UserFactory, make_signal, open_book, token_for
from tests.positions.test_scanner import put_quote

pytestmark = pytest.mark.django_db

# The scanner and status settings these tests reason with, whatever the environment says
# (tests/monitoring's status tests pin the same).
PINNED = {
    "POSITION_MONITOR_ENABLED": True,
    "POSITION_MONITOR_DRY_RUN": False,
    "POSITION_MONITOR_INTERVAL_SECONDS": 5,
    "QUOTE_MAX_AGE_SECONDS": 10,
    "BREACH_PRICE_TOLERANCE_PIPS": Decimal(0),
    "BREACH_RECHECK_DELAY_SECONDS": 0,
    "SPIKE_MAX_JUMP_FRACTION": Decimal("0.02"),
    "DEVICE_OFFLINE_SECONDS": 120,
    "HEALTH_BEAT_MAX_AGE_SECONDS": 60,
}
# Hidden levels with digits no id or price in these tests contains, so "appears nowhere" means it.
SECRET_SL, SECRET_TP = "2645.37", "2670.83"


def close_url(position_id: int) -> str:
    return f"/api/v1/admin/positions/{position_id}/close"


def breach_url(position_id: int) -> str:
    return f"/api/v1/admin/positions/{position_id}/test-breach"


def api_for(user=None) -> APIClient:
    api = APIClient()
    if user is not None:
        api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(user)}")
    return api


def assert_error(response, status_code: int, code: str) -> dict:
    """The one error shape of core.errors, and its stable code."""
    assert response.status_code == status_code, response.content
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert set(body["error"]) <= {"code", "message", "fields"}
    return body["error"]


@pytest.fixture
def owner():
    return OwnerFactory()


@pytest.fixture
def owner_api(owner) -> APIClient:
    return api_for(owner)


@pytest.fixture
def gold_buy(redis_client):
    """A published gold buy (hidden SL 2645.00, TP 2670.00) with 3 open positions."""
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    return signal, open_book(signal, 3)


@pytest.fixture
def position(gold_buy) -> OpenPosition:
    return gold_buy[1][0]


# --- authentication and permissions ----------------------------------------------------

# name -> (method, url for a position id, body, success status)
ENDPOINTS = {
    "close": ("post", close_url, {"reason": "manual_override"}, 202),
    "test-breach": ("post", breach_url, {"simulated_price": "2650.00"}, 200),
}


def _call(api: APIClient, endpoint: str, position_id: int):
    method, url_for, body, _ = ENDPOINTS[endpoint]
    return getattr(api, method)(url_for(position_id), body, format="json" if body else None)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_anonymous_is_401(endpoint, position):
    response = _call(APIClient(), endpoint, position.pk)

    assert_error(response, 401, "not_authenticated")
    assert response.headers["WWW-Authenticate"] == "Token"
    assert not CloseCommand.objects.exists()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_a_wrong_token_is_401(endpoint, position):
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)

    assert_error(_call(api, endpoint, position.pk), 401, "not_authenticated")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_an_authenticated_non_staff_user_is_403(endpoint, position):
    client_user = UserFactory()  # a real account, just not the owner's

    response = _call(api_for(client_user), endpoint, position.pk)

    assert_error(response, 403, "forbidden")
    assert not CloseCommand.objects.exists()
    assert OpenPosition.objects.get(pk=position.pk).status == PositionStatus.OPEN


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_staff_with_a_token_gets_through(endpoint, position):
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_hidden_levels"))  # for test-breach

    response = _call(api_for(staff), endpoint, position.pk)

    assert response.status_code == ENDPOINTS[endpoint][3], response.content


def test_session_auth_works_for_a_logged_in_staff_user_with_csrf(position):
    owner = OwnerFactory()
    owner.set_password("correct horse battery staple")
    owner.save()
    browser = APIClient(enforce_csrf_checks=True)
    # django-axes judges every login by its request: the test client's login passes one.
    password = "correct horse battery staple"
    assert browser.login(request=HttpRequest(), username=owner.username, password=password)

    # A session write without the CSRF token is refused, as in the admin.
    refused = browser.post(close_url(position.pk), {"reason": "manual_override"}, format="json")
    assert_error(refused, 403, "forbidden")
    assert not CloseCommand.objects.exists()

    # What a page with a form hands the browser: a CSRF cookie and the token that matches it.
    page = RequestFactory().get("/")
    csrf_token = get_token(page)
    browser.cookies[settings.CSRF_COOKIE_NAME] = page.META["CSRF_COOKIE"]
    accepted = browser.post(
        close_url(position.pk), {"reason": "manual_override"}, format="json", HTTP_X_CSRFTOKEN=csrf_token
    )
    assert accepted.status_code == 202, accepted.content
    assert CloseCommand.objects.get().requested_by == owner.username
    breach = browser.post(
        breach_url(position.pk), {"simulated_price": "2644.00"}, format="json", HTTP_X_CSRFTOKEN=csrf_token
    )
    assert breach.status_code == 200
    assert breach.json()["level"] == "stop_loss"


# --- manual close -----------------------------------------------------------------


def test_manual_close_queues_one_command_and_audits_the_user(owner, owner_api, position):
    response = owner_api.post(
        close_url(position.pk), {"reason": "manual_override", "note": "client asked to exit"}, format="json"
    )

    assert response.status_code == 202, response.content
    command = CloseCommand.objects.get()
    assert response.json() == {"position_id": position.pk, "queued": True, "command_id": command.pk}
    assert command.position_id == position.pk
    assert command.device_id == position.device_id
    assert command.reason == CloseReason.MANUAL
    assert command.status == CloseCommandStatus.PENDING
    assert command.volume == position.remaining_volume
    assert "manual_override" in command.note
    assert "client asked to exit" in command.note
    assert command.requested_by == owner.username
    assert OpenPosition.objects.get(pk=position.pk).status == PositionStatus.CLOSING
    # The other positions of the signal are untouched.
    assert OpenPosition.objects.filter(signal=position.signal, status=PositionStatus.OPEN).count() == 2
    event = AuditEvent.objects.get(action="position.close_requested")
    assert (event.subject_type, event.subject_id) == ("openposition", position.pk)
    assert (event.actor, event.actor_kind) == (owner.username, "owner")
    assert event.data["command_id"] == command.pk
    assert event.data["reason"] == CloseReason.MANUAL
    assert event.data["note"] == command.note


def test_the_note_is_optional(owner_api, position):
    response = owner_api.post(close_url(position.pk), {"reason": "manual_override"}, format="json")

    assert response.status_code == 202
    assert CloseCommand.objects.get().note == "manual_override"


def test_a_second_close_is_409_and_queues_nothing_more(owner_api, position):
    first = owner_api.post(close_url(position.pk), {"reason": "manual_override"}, format="json")
    second = owner_api.post(close_url(position.pk), {"reason": "manual_override"}, format="json")

    assert first.status_code == 202
    assert_error(second, 409, "not_open")
    assert CloseCommand.objects.filter(position=position).count() == 1
    assert AuditEvent.objects.filter(action="position.close_requested").count() == 1


def test_a_position_the_scanner_is_closing_is_409(owner_api, position):
    close_command_request(position=position, reason=CloseReason.STOP_LOSS, by=Actor.system("scanner"))

    response = owner_api.post(close_url(position.pk), {"reason": "manual_override"}, format="json")

    assert_error(response, 409, "not_open")
    assert list(CloseCommand.objects.values_list("reason", flat=True)) == [CloseReason.STOP_LOSS]


def test_a_closed_position_is_409(owner_api, position):
    OpenPosition.objects.filter(pk=position.pk).update(status=PositionStatus.CLOSED_TP)

    assert_error(owner_api.post(close_url(position.pk), {"reason": "x"}, format="json"), 409, "not_open")
    assert not CloseCommand.objects.exists()


def test_a_position_reopened_after_a_failed_close_can_be_closed_again(owner_api, position):
    first = owner_api.post(close_url(position.pk), {"reason": "manual_override"}, format="json").json()
    close_command_ack(
        command_id=first["command_id"],
        device_id=position.device_id,
        result=CloseResult(executed=False, error="market closed"),
        by=Actor.system("tests"),
    )

    again = owner_api.post(close_url(position.pk), {"reason": "manual_override"}, format="json")

    assert again.status_code == 202, again.content
    assert again.json()["command_id"] != first["command_id"]
    active = CloseCommand.objects.get(position=position, status=CloseCommandStatus.PENDING)
    assert again.json()["command_id"] == active.pk


@pytest.mark.parametrize("url_for", [close_url, breach_url], ids=["close", "test-breach"])
def test_an_unknown_position_is_404(owner_api, url_for, position):
    body = {"reason": "x"} if url_for is close_url else {"simulated_price": "1"}
    missing = OpenPosition.objects.order_by("-pk").first().pk + 1000

    assert_error(owner_api.post(url_for(missing), body, format="json"), 404, "not_found")
    # Not an id at all, or too long for a bigint: no route, still a 404 and no 500.
    assert owner_api.post(url_for("abc"), body, format="json").status_code == 404
    assert owner_api.post(url_for("9" * 19), body, format="json").status_code == 404
    assert not CloseCommand.objects.exists()


CLOSE_BAD_INPUT = {
    "no reason": ({}, "reason"),
    "blank reason": ({"reason": "   "}, "reason"),
    "reason too long": ({"reason": "r" * 101}, "reason"),
    "note too long": ({"reason": "manual_override", "note": "n" * 1001}, "note"),
    "null note": ({"reason": "manual_override", "note": None}, "note"),
    "extra field": ({"reason": "manual_override", "position_ids": [1, 2]}, "position_ids"),
    "not an object": (["manual_override"], "non_field_errors"),
}


@pytest.mark.parametrize(("body", "field"), CLOSE_BAD_INPUT.values(), ids=CLOSE_BAD_INPUT)
def test_close_rejects_bad_input(owner_api, position, body, field):
    error = assert_error(owner_api.post(close_url(position.pk), body, format="json"), 400, "invalid")

    assert field in error["fields"]
    assert not CloseCommand.objects.exists()


def test_close_accepts_the_longest_reason_and_note(owner_api, position):
    body = {"reason": "r" * 100, "note": "n" * 1000}

    assert owner_api.post(close_url(position.pk), body, format="json").status_code == 202
    assert CloseCommand.objects.get().note.startswith("r" * 100)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_two_simultaneous_closes_make_one_command(live_server, redis_client):
    # given: one open position and an owner token, committed for the server's threads
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    (position,) = open_book(signal, 1)
    headers = {"Authorization": f"Token {token_for(OwnerFactory())}"}
    url = live_server.url + close_url(position.pk)
    barrier = threading.Barrier(2)
    responses: list[requests.Response] = []
    lock = threading.Lock()

    def double_click() -> None:
        barrier.wait()
        response = requests.post(url, json={"reason": "manual_override"}, headers=headers, timeout=30)
        with lock:
            responses.append(response)

    # when: both requests leave at the same moment
    threads = [threading.Thread(target=double_click) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then: one is queued, the other told the position is no longer open
    assert sorted(response.status_code for response in responses) == [202, 409]
    accepted = next(response for response in responses if response.status_code == 202).json()
    refused = next(response for response in responses if response.status_code == 409).json()
    assert refused["error"]["code"] == "not_open"
    command = CloseCommand.objects.get(position=position)
    assert accepted == {"position_id": position.pk, "queued": True, "command_id": command.pk}
    assert AuditEvent.objects.filter(action="position.close_requested", subject_id=position.pk).count() == 1


# --- test-breach -------------------------------------------------------------------


def _breach(api: APIClient, position_id: int, **prices: str) -> dict:
    response = api.post(breach_url(position_id), prices, format="json")
    assert response.status_code == 200, response.content
    return response.json()


@override_settings(**PINNED)
def test_a_buy_is_judged_on_the_bid(owner_api, gold_buy):
    signal, positions = gold_buy
    open_book(signal, 2, auto_close=False)  # canary clients: never closed by the monitor
    position = positions[0]

    stop = _breach(owner_api, position.pk, bid="2645.00", ask="2645.40")
    assert stop == {
        "position_id": position.pk,
        "position": {
            "id": position.pk,
            "instrument": "XAUUSD",
            "side": "buy",
            "entry_price": "2650.5",
            "remaining_volume": "0.10",
        },
        "side": "buy",
        "bid": "2645",
        "ask": "2645.4",
        "judged_price": "2645",
        "breach_detected": True,
        "breach_type": "sl",
        "partial_index": None,
        "partials_triggered": [],
        "would_close": True,
        "level": "stop_loss",
        "open_positions_affected": 3,
        "tolerance": "0",
        "hidden_levels": {"sl": "2645", "tp": "2670"},
        "plan": {
            "exit_kind": "sl",
            "ended": True,
            "effective_stop": "2645",
            "stop_set_by": "sl",
            "stop_moved": False,
            "best": None,
            "partials_hit": [],
        },
    }
    above_stop = _breach(owner_api, position.pk, bid="2645.10", ask="2645.20")
    assert (above_stop["would_close"], above_stop["level"], above_stop["open_positions_affected"]) == (
        False,
        None,
        0,
    )
    assert (above_stop["breach_detected"], above_stop["breach_type"], above_stop["plan"]["ended"]) == (
        False,
        None,
        False,
    )
    # The ask above the target does not close a buy; the bid there does.
    ask_at_target = _breach(owner_api, position.pk, bid="2669.90", ask="2670.30")
    assert (ask_at_target["judged_price"], ask_at_target["would_close"]) == ("2669.9", False)
    target = _breach(owner_api, position.pk, simulated_price="2670.00")
    assert (target["bid"], target["ask"], target["level"]) == ("2670", "2670", "take_profit")
    assert target["open_positions_affected"] == 3


@override_settings(**PINNED)
def test_a_sell_is_judged_on_the_ask(owner_api, redis_client):
    signal = make_signal(symbol="EURUSD", side="sell", entry="1.08500", sl="1.09000", tp="1.08000")
    position, _ = open_book(signal, 2)

    # The bid under the stop does not matter to a sell; the ask at the stop closes it.
    stop = _breach(owner_api, position.pk, bid="1.08990", ask="1.09000")
    assert (stop["side"], stop["judged_price"], stop["level"]) == ("sell", "1.09", "stop_loss")
    assert stop["open_positions_affected"] == 2
    below_stop = _breach(owner_api, position.pk, bid="1.08980", ask="1.08999")
    assert (below_stop["judged_price"], below_stop["would_close"]) == ("1.08999", False)
    # The bid under the target is not enough; the ask there is.
    bid_at_target = _breach(owner_api, position.pk, bid="1.07990", ask="1.08010")
    assert (bid_at_target["judged_price"], bid_at_target["level"]) == ("1.0801", None)
    target = _breach(owner_api, position.pk, bid="1.07980", ask="1.08000")
    assert (target["would_close"], target["level"]) == (True, "take_profit")


@override_settings(**{**PINNED, "BREACH_PRICE_TOLERANCE_PIPS": Decimal(5)})
def test_the_tolerance_is_applied_and_shown(owner_api, position):
    # Gold's pip is 0.1: five pips is 0.50 beyond the level.
    inside = _breach(owner_api, position.pk, simulated_price="2644.60")
    beyond = _breach(owner_api, position.pk, simulated_price="2644.50")

    assert (inside["tolerance"], inside["would_close"]) == ("0.5", False)
    assert (beyond["tolerance"], beyond["level"]) == ("0.5", "stop_loss")


def test_only_positions_still_open_are_counted_as_affected(owner_api, gold_buy):
    signal, positions = gold_buy
    close_command_request(position=positions[1], reason=CloseReason.MANUAL, by=Actor.system("tests"))

    result = _breach(owner_api, positions[1].pk, simulated_price="2600.00")

    assert (result["level"], result["open_positions_affected"]) == ("stop_loss", 2)


@pytest.fixture
def secret_position(redis_client) -> OpenPosition:
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl=SECRET_SL, tp=SECRET_TP)
    return open_book(signal, 1)[0]


def test_hidden_levels_are_shown_to_users_with_the_permission(secret_position):
    superuser = OwnerFactory()
    entitled = UserFactory(is_staff=True)
    entitled.user_permissions.add(Permission.objects.get(codename="view_hidden_levels"))

    for user in (superuser, entitled):
        body = _breach(api_for(user), secret_position.pk, simulated_price="2650.00")
        assert body["hidden_levels"] == {"sl": SECRET_SL, "tp": SECRET_TP}, user


def test_staff_without_the_permission_cannot_test_a_breach(secret_position):
    # Its answers would find the levels by bisection, so the question itself is refused.
    staff = UserFactory(is_staff=True)
    staff.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_signal", "change_signal", "view_openposition"])
    )
    api = api_for(staff)

    for prices in (
        {"simulated_price": "2650.00"},
        {"simulated_price": SECRET_SL},
        {"bid": "2671", "ask": "2672"},
    ):
        response = api.post(breach_url(secret_position.pk), prices, format="json")
        assert_error(response, 403, "forbidden")
        assert SECRET_TP not in response.content.decode()


def _snapshot(redis) -> dict:
    """Every row the owner API could touch, and every Redis key with its type, value and expiry."""
    return {
        "positions": list(OpenPosition.objects.order_by("pk").values()),
        "commands": list(CloseCommand.objects.order_by("pk").values()),
        "audit": list(AuditEvent.objects.order_by("pk").values()),
        "alerts": list(Alert.objects.order_by("pk").values()),
        "heartbeats": list(Heartbeat.objects.order_by("pk").values()),
        "redis": {
            key: (redis.type(key), redis.dump(key), redis.ttl(key) == -1) for key in sorted(redis.keys("*"))
        },
    }


@override_settings(**PINNED)
def test_test_breach_changes_nothing(owner_api, gold_buy, redis_client):
    # given: a live book with a quote, a sweep's records, a queued close and its audit trail
    signal, positions = gold_buy
    put_quote("XAUUSD", "2650.00", "2650.30")
    assert sweep().commands_created == 0
    close_command_request(position=positions[2], reason=CloseReason.MANUAL, by=Actor.system("tests"))
    before = _snapshot(redis_client)
    assert before["redis"]
    assert before["commands"]
    assert before["audit"]

    # when: the owner asks about prices that cross each level, and one that crosses nothing
    answers = [
        _breach(owner_api, positions[0].pk, simulated_price="2644.00"),
        _breach(owner_api, positions[0].pk, bid="2671.00", ask="2671.30"),
        _breach(owner_api, positions[2].pk, bid="2650.00", ask="2650.30"),
    ]
    owner_api.post(breach_url(positions[0].pk), {"bid": "2644"}, format="json")

    # then: the answers say a close would happen, and nothing anywhere moved
    assert [answer["level"] for answer in answers] == ["stop_loss", "take_profit", None]
    assert _snapshot(redis_client) == before


BREACH_BAD_INPUT = {
    "neither form": ({}, "non_field_errors"),
    "both forms": ({"simulated_price": "2650", "bid": "2650", "ask": "2650.3"}, "non_field_errors"),
    "bid without ask": ({"bid": "2650"}, "non_field_errors"),
    "ask without bid": ({"ask": "2650"}, "non_field_errors"),
    "negative price": ({"simulated_price": "-2650"}, "simulated_price"),
    "zero price": ({"simulated_price": "0"}, "simulated_price"),
    "negative bid": ({"bid": "-1", "ask": "2650"}, "bid"),
    "ask below bid": ({"bid": "2650.30", "ask": "2650.00"}, "ask"),
    "not a number": ({"simulated_price": "abc"}, "simulated_price"),
    "NaN": ({"simulated_price": "NaN"}, "simulated_price"),
    "infinity": ({"simulated_price": "Infinity"}, "simulated_price"),
    "too many decimals": ({"simulated_price": "1.00000000001"}, "simulated_price"),
    "too large": ({"simulated_price": "1e20"}, "simulated_price"),
    "null": ({"simulated_price": None}, "simulated_price"),
    "extra field": ({"simulated_price": "2650", "sl": "2645"}, "sl"),
    "a list": ([{"simulated_price": "2650"}], "non_field_errors"),
}


@pytest.mark.parametrize(("body", "field"), BREACH_BAD_INPUT.values(), ids=BREACH_BAD_INPUT)
def test_test_breach_rejects_bad_input(owner_api, position, body, field):
    response = owner_api.post(breach_url(position.pk), body, format="json")

    error = assert_error(response, 400, "invalid")
    assert field in error["fields"]


@pytest.mark.parametrize("url_for", [close_url, breach_url], ids=["close", "test-breach"])
def test_malformed_json_is_400(owner_api, position, url_for):
    for raw in (b'{"simulated_price": ', b"\xff\xfe", b"{'reason': 'x'}"):
        response = owner_api.generic("POST", url_for(position.pk), raw, content_type="application/json")
        assert_error(response, 400, "malformed_request")
    not_json = owner_api.generic("POST", url_for(position.pk), b"reason=x", content_type="text/plain")
    assert_error(not_json, 415, "unsupported_media_type")
    assert not CloseCommand.objects.exists()


_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
    | st.sampled_from(["2650.00", "-1", "0", "1e400", "0.00000000001", "NaN", "2650,00", " 2650 "]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)
_bodies = (
    st.dictionaries(
        st.sampled_from(["simulated_price", "bid", "ask", "reason", "note", "sl"]), _json_values, max_size=4
    )
    | _json_values
)


@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=_bodies)
def test_any_json_body_is_answered_without_a_server_error(owner_api, position, body):
    breach = owner_api.post(breach_url(position.pk), body, format="json")
    close = owner_api.post(close_url(position.pk), body, format="json")

    assert breach.status_code in {200, 400}, breach.content
    assert close.status_code in {202, 400, 409}, close.content
    for response in (breach, close):
        if response.status_code >= 400:
            assert set(response.json()) == {"error"}
    assert CloseCommand.objects.filter(status=CloseCommandStatus.PENDING).count() <= 1


# --- the schema -------------------------------------------------------------------


def test_the_schema_documents_the_owner_position_api(owner_api, redis_client):
    schema = owner_api.get("/api/v1/schema?format=json").json()
    components = schema["components"]["schemas"]

    def operation(path: str, method: str) -> dict:
        return schema["paths"][path][method]

    close = operation("/api/v1/admin/positions/{position_id}/close", "post")
    breach = operation("/api/v1/admin/positions/{position_id}/test-breach", "post")
    assert close["operationId"] == "owner_position_close"
    assert breach["operationId"] == "owner_position_test_breach"
    for documented in (close, breach):
        assert documented["tags"] == ["owner"]
        assert {"401", "403"} <= set(documented["responses"])
        assert {next(iter(scheme)) for scheme in documented["security"]} == {"tokenAuth", "cookieAuth"}
    assert {"202", "400", "404", "409"} <= set(close["responses"])
    assert {"200", "400", "404"} <= set(breach["responses"])
    assert components["PositionCloseInputRequest"]["required"] == ["reason"]
    breach_output = components["BreachTestWithLevelsOutput"]
    assert "hidden_levels" in breach_output["properties"]
    assert "hidden_levels" not in breach_output["required"]


@pytest.mark.parametrize("broken", ["levels", "plan state"])
def test_a_plan_that_cannot_be_read_is_a_409_not_a_server_error(owner_api, gold_buy, broken):
    # given: levels whose key is gone, or a stored plan state that no longer fits the plan
    signal, positions = gold_buy
    with connection.cursor() as cursor:
        if broken == "levels":
            cursor.execute(
                "UPDATE signals_app_signal SET owner_only = 'not-a-token' WHERE id = %s", [signal.pk]
            )
        else:
            SignalPlan.objects.create(signal=signal, state={"last_seq": "not a number"})

    # when
    response = owner_api.post(breach_url(positions[0].pk), {"simulated_price": "2650.00"}, format="json")

    # then
    assert response.status_code == 409, response.content
    assert response.json()["error"]["code"] == "conflict"
