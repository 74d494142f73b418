"""Bad input and failing stores: a clear 4xx or a 503 with Retry-After, never a 500,
and nothing changed (issue: hardening)."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.db import close_old_connections, connection, connections
from django.test import override_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from core.parsers import MAX_JSON_DEPTH
from ea_gateway.choices import DeviceRole
from ea_gateway.models import Device
from signals_app.models import Signal
from tests.ea_helpers import ea_for, make_device
from tests.factories import ClientFactory, OwnerFactory, token_for

pytestmark = pytest.mark.django_db

EA_WRITES = [
    ("POST", "/api/v1/client/ack"),
    ("POST", "/api/v1/client/close-ack"),
    ("POST", "/api/v1/client/heartbeat"),
]


@pytest.fixture
def ea(redis_client):
    return ea_for(make_device(client=ClientFactory()))


@pytest.fixture
def feed(redis_client):
    return ea_for(make_device(role=DeviceRole.FEED, name="feed"))


@pytest.fixture
def bot() -> APIClient:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(OwnerFactory())}")
    return api


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _signal(payload) -> dict:
    return {
        "instrument": "EURUSD",
        "side": "buy",
        "entry_price": "1.10000",
        "ttl_minutes": 60,
        "payload": payload,
        "owner_only": {"sl": "1.09000", "tp": "1.11000"},
    }


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 2_000, 100_000])
@pytest.mark.parametrize(("method", "path"), EA_WRITES)
def test_deeply_nested_bodies_from_a_signed_ea_are_a_400(ea, method, path, depth):
    response = ea.request(method, path, _nested(depth))

    assert response.status_code == 400, response.content[:200]
    assert response.json()["error"]["code"] == "malformed_request"
    assert "nested deeper" in response.json()["error"]["message"]


def test_deeply_nested_quotes_from_the_feed_are_a_400(feed):
    body = b'{"quotes": ' + _nested(100_000) + b"}"

    response = feed.quotes(body)

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_request"


def test_a_deeply_nested_signal_is_a_400_and_creates_nothing(bot):
    body = json.dumps(_signal(None))[:-1] + ', "extra": ' + _nested(100_000).decode() + "}"

    response = bot.post("/api/v1/signals", body, content_type="application/json")

    assert response.status_code == 400
    assert Signal.objects.count() == 0


@pytest.mark.parametrize("bad", ["\u0000", "a\u0000b", "\ud800", "x\udfffy"])
@pytest.mark.parametrize("where", ["value", "key"])
def test_nul_and_lone_surrogates_are_a_400_and_create_nothing(bot, bad, where):
    payload = {"note": bad} if where == "value" else {bad: "note"}
    # json.dumps escapes them as \u0000 / \ud800: valid JSON text, unstorable strings.
    body = json.dumps(_signal(payload))

    response = bot.post("/api/v1/signals", body, content_type="application/json")

    assert response.status_code == 400, response.content
    assert "U+0000" in response.json()["error"]["message"]
    assert Signal.objects.count() == 0


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
        ),
        max_leaves=30,
    ),
    bad=st.sampled_from(["\u0000", "\ud83d", "\udc00"]),
    depth=st.integers(min_value=0, max_value=40),
)
def test_any_body_with_unstorable_text_or_too_deep_is_refused_not_crashed(ea, value, bad, depth):
    # given: any JSON value, wrapped `depth` lists deep, holding an unstorable string
    body = {"balance": "1000", "equity": "990", "open_tickets": [], "extra": [value, bad]}
    for _ in range(depth):
        body = [body]
    raw = json.dumps(body).encode()

    response = ea.heartbeat(raw)

    # then: a 400 naming what is wrong, and the device saw no heartbeat
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_request"
    assert Device.objects.get(pk=ea.device.pk).last_account is None


@pytest.mark.django_db(transaction=True)
def test_a_database_connection_killed_mid_request_is_a_503_then_recovers(ea):
    # given: the connection the next request will use, killed by the server
    heartbeat = {"balance": "1000", "equity": "990", "open_tickets": []}
    assert ea.heartbeat(heartbeat).status_code == 200
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    killer = connections.create_connection("default")
    with killer.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    killer.close()

    # when: an EA's heartbeat is written on it
    response = ea.heartbeat(heartbeat)

    # then: retry later, not a server error; the next request has a new connection
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "2"
    assert response.json()["error"]["code"] == "unavailable"
    # Django's end-of-request handler (left out by the test client) drops the broken
    # connection; the next request opens a new one.
    close_old_connections()
    assert ea.heartbeat(heartbeat).status_code == 200


def test_redis_down_is_a_503_with_retry_after(feed):
    quotes = {"quotes": [{"instrument": "EURUSD", "bid": "1.10000", "ask": "1.10010", "ts": 1}]}
    with override_settings(REDIS_URL="redis://127.0.0.1:1/0"):
        response = feed.quotes(quotes)

    assert response.status_code == 503
    assert response["Retry-After"] == "2"


def test_money_fields_still_parse_as_decimals(ea):
    # The strict parser keeps DRF's number handling: a heartbeat with plain numbers works.
    response = ea.heartbeat({"balance": Decimal("1000.50"), "equity": "990", "open_tickets": []})

    assert response.status_code == 200, response.content


@pytest.mark.parametrize("charset", ["rot13", "hex", "base64"])
def test_a_charset_that_is_no_text_encoding_is_a_400(bot, charset):
    body = json.dumps(_signal({"note": "x"}))

    response = bot.post("/api/v1/signals", body, content_type=f"application/json; charset={charset}")

    assert response.status_code == 400, response.content
    assert Signal.objects.count() == 0
