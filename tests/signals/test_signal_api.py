"""POST /api/v1/signals: the strategy bot creates and publishes signals."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from rest_framework.test import APIClient

from signals_app.choices import ApprovalStatus, DecidedBy
from signals_app.events import Actor
from signals_app.models import Approval, AuditEvent, Signal
from signals_app.services import signal_publish
from tests.factories import ClientFactory, OwnerFactory, UserFactory, make_signal, token_for

pytestmark = pytest.mark.django_db

VALID = {
    "instrument": "XAUUSD",
    "side": "buy",
    "entry_price": "2650.50",
    "ttl_minutes": 240,
    "payload": {"timeframe": "H1"},
    "owner_only": {"sl": "2645.00", "tp": "2670.00", "strategy": "fib618"},
}


@pytest.fixture
def bot() -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(OwnerFactory())}")
    return api


def _counts() -> tuple[int, int, int]:
    return Signal.objects.count(), Approval.objects.count(), AuditEvent.objects.count()


def test_creates_and_publishes_to_every_active_client(bot):
    manual = ClientFactory.create_batch(3)
    automatic = ClientFactory(auto_approve=True)
    ClientFactory(active=False)

    response = bot.post("/api/v1/signals", VALID, format="json")

    assert response.status_code == 201, response.content
    body = response.json()
    signal = Signal.objects.get(pk=body["id"])
    assert body["status"] == "published"
    assert body["instrument"] == "XAUUSD"
    assert body["entry_price"] == "2650.5"
    assert body["owner_only"] == {"sl": "2645.00", "tp": "2670.00", "strategy": "fib618"}
    assert body["approvals"] == {"pending": 3, "approved": 1}
    approvals = {approval.client_id: approval for approval in signal.approvals.all()}
    assert set(approvals) == {client.pk for client in [*manual, automatic]}
    assert approvals[automatic.pk].status == ApprovalStatus.APPROVED
    assert approvals[automatic.pk].decided_by == DecidedBy.AUTO
    assert all(
        approval.volume == client.default_volume for client in manual for approval in [approvals[client.pk]]
    )
    actions = set(AuditEvent.objects.filter(actor_kind="bot").values_list("action", flat=True))
    assert actions == {"signal.created", "signal.published", "approval.created"}


def test_publish_false_keeps_a_draft(bot):
    ClientFactory()
    response = bot.post("/api/v1/signals", {**VALID, "publish": False}, format="json")
    assert response.status_code == 201
    assert response.json()["status"] == "draft"
    assert Approval.objects.count() == 0


def test_publishing_twice_creates_no_more_approvals():
    ClientFactory.create_batch(5)
    signal = make_signal(publish=False)
    by = Actor.system("tests")

    first = signal_publish(signal=signal, by=by)
    second = signal_publish(signal=signal, by=by)

    assert (first.approvals_created, second.approvals_created) == (5, 0)
    assert second.already_published is True
    assert Approval.objects.filter(signal=signal).count() == 5


@pytest.mark.django_db(transaction=True)
def test_concurrent_publishes_fan_out_exactly_once():
    ClientFactory.create_batch(20)
    signal = make_signal(publish=False)
    barrier = threading.Barrier(8)
    results = []

    def publish() -> None:
        try:
            barrier.wait()
            results.append(signal_publish(signal=Signal.objects.get(pk=signal.pk), by=Actor.system("t")))
        finally:
            connection.close()

    threads = [threading.Thread(target=publish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(result.approvals_created for result in results) == [0] * 7 + [20]
    assert Approval.objects.filter(signal=signal).count() == 20


def test_owner_reads_a_signal_with_its_levels(bot):
    signal = make_signal()
    body = bot.get(f"/api/v1/signals/{signal.pk}").json()
    assert body["owner_only"]["sl"] == "2645.00"


def test_staff_without_the_hidden_levels_permission_sees_no_levels():
    signal = make_signal()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(UserFactory(is_staff=True))}")
    body = api.get(f"/api/v1/signals/{signal.pk}").json()
    assert body["owner_only"] is None
    assert "2645" not in json.dumps(body)


@pytest.mark.parametrize("signal_id", ["999999", "99999999999999999999", "abc", "-1"])
def test_unknown_signal_is_404(bot, signal_id):
    assert bot.get(f"/api/v1/signals/{signal_id}").status_code == 404


def test_clients_and_strangers_are_refused():
    signal = make_signal()
    anonymous = APIClient()
    user = APIClient()
    user.credentials(HTTP_AUTHORIZATION=f"Token {token_for(UserFactory())}")

    assert anonymous.post("/api/v1/signals", VALID, format="json").status_code == 401
    assert anonymous.get(f"/api/v1/signals/{signal.pk}").status_code == 401
    assert user.post("/api/v1/signals", VALID, format="json").status_code == 403
    assert user.get(f"/api/v1/signals/{signal.pk}").status_code == 403
    bad_token = APIClient()
    bad_token.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert bad_token.get(f"/api/v1/signals/{signal.pk}").status_code == 401


INVALID = [
    ({"owner_only": {"sl": "2655", "tp": "2670"}}, "owner_only.sl"),
    ({"owner_only": {"sl": "2645", "tp": "2640"}}, "owner_only.tp"),
    ({"side": "sell"}, "owner_only.sl"),
    ({"instrument": "DOGEUSD"}, "instrument"),
    ({"entry_price": "-5"}, "entry_price"),
    ({"entry_price": "abc"}, "entry_price"),
    ({"entry_price": "NaN"}, "entry_price"),
    ({"side": "long"}, "side"),
    ({"ttl_minutes": 0}, "ttl_minutes"),
    ({"payload": {"sl": "2645.00"}}, "payload"),
    ({"payload": {"stopLoss": 1}}, "payload"),
    ({"payload": {"hint": "2670.00"}}, "payload"),
    ({"payload": ["not", "an", "object"]}, "payload"),
    ({"payload": {"blob": "x" * 5000}}, "payload"),
    ({"owner_only": "2645"}, "owner_only"),
    ({"owner_only": {}}, "owner_only"),
    ({"stop_loss": "2645"}, "stop_loss"),
]


@pytest.mark.parametrize(("change", "field"), INVALID)
def test_invalid_signals_get_a_clear_400_and_change_nothing(bot, change, field):
    ClientFactory()
    before = _counts()

    response = bot.post("/api/v1/signals", {**VALID, **change}, format="json")

    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["code"] in {"invalid", "invalid_signal"}
    assert field in error["fields"], error
    assert _counts() == before


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b'{"instrument": "XAUUSD",', "application/json", 400, "malformed_request"),
        (b"\xff\xfe not json", "application/json", 400, "malformed_request"),
        (b"[]", "application/json", 400, "invalid"),
        (b"null", "application/json", 400, "invalid"),
        (b"instrument=XAUUSD", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
)
def test_malformed_bodies_get_a_clear_4xx(bot, body, content_type, status, code):
    before = _counts()
    response = bot.generic("POST", "/api/v1/signals", body, content_type=content_type)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert _counts() == before


def test_huge_bodies_are_refused(bot):
    before = _counts()
    body = json.dumps({**VALID, "payload": {"blob": "x" * 400_000}})
    response = bot.generic("POST", "/api/v1/signals", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert _counts() == before


def test_an_atr_trailing_stop_needing_more_history_than_is_kept_is_refused(bot, settings):
    settings.CANDLE_RETENTION_DAYS = 30
    body = {
        "instrument": "EURUSD",
        "side": "buy",
        "entry_price": "1.10000",
        "ttl_minutes": 60,
        "owner_only": {
            "sl": "1.09000",
            "trailing": {"distance_atr": "2", "atr_period": 30, "atr_timeframe": "D1"},
        },
    }

    response = bot.post("/api/v1/signals", body, format="json")

    assert response.status_code == 400
    assert "CANDLE_RETENTION_DAYS" in response.json()["error"]["fields"]["owner_only.trailing.atr_period"][0]
    body["owner_only"]["trailing"]["atr_period"] = 14
    assert bot.post("/api/v1/signals", body, format="json").status_code == 201
