"""Invariant 1 as a property: for any valid signal, no non-owner response and no
log line at INFO or above contains a hidden level."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client as BrowserClient
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from tests.factories import ClientFactory, OwnerFactory, UserFactory, token_for
from tests.secrecy import find_levels, level_pattern

pytestmark = pytest.mark.django_db


@st.composite
def signals(draw):
    digits = draw(st.sampled_from([2, 3, 5]))
    scale = Decimal(10) ** -digits
    entry_units = draw(st.integers(min_value=100_000, max_value=9_000_000))
    sl_distance = draw(st.integers(min_value=10, max_value=50_000))
    tp_distance = draw(st.integers(min_value=10, max_value=50_000))
    side = draw(st.sampled_from(["buy", "sell"]))
    direction = 1 if side == "buy" else -1
    entry = entry_units * scale
    sl_units = entry_units - direction * sl_distance
    tp_units = entry_units + direction * tp_distance
    # A whole-number level (500.00) would also "match" an unrelated integer (a TTL of 500):
    # levels keep a fractional part, as real prices almost always do.
    assume(sl_units % 10**digits and tp_units % 10**digits)
    sl = sl_units * scale
    tp = tp_units * scale
    as_number = draw(st.booleans())  # the bot may send numbers or strings
    return {
        "instrument": draw(st.sampled_from(["EURUSD", "XAUUSD", "BTCUSD", "US500"])),
        "side": side,
        "entry_price": str(entry),
        "ttl_minutes": draw(st.integers(min_value=1, max_value=600)),
        "payload": {"timeframe": draw(st.sampled_from(["M5", "H1", "D1"]))},
        "owner_only": {
            "sl": float(sl) if as_number else str(sl),
            "tp": float(tp) if as_number else str(tp),
            "strategy": "s",
        },
    }


def test_level_pattern_matches_formatting_variants_only():
    pattern = level_pattern(Decimal("2645.50"))
    assert all(pattern.search(text) for text in ["sl=2645.5,", "2645.500", '"2645.50"'])
    assert not any(pattern.search(text) for text in ["12645.5", "2645.51", "2645"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=signals())
def test_no_hidden_level_leaves_through_non_owner_surfaces(body, recorded_logs):
    # given: a bot publishes the signal to a client
    ClientFactory()
    bot = APIClient()
    bot.credentials(HTTP_AUTHORIZATION=f"Token {token_for(OwnerFactory(username='bot'))}")
    created = bot.post("/api/v1/signals", body, format="json")
    assert created.status_code == 201, created.content
    signal_id = created.json()["id"]
    levels = [Decimal(str(body["owner_only"]["sl"])), Decimal(str(body["owner_only"]["tp"]))]

    # when: everyone who is not the owner looks
    anonymous = APIClient()
    client_user = APIClient()
    client_user.credentials(HTTP_AUTHORIZATION=f"Token {token_for(UserFactory(username='client'))}")
    staff = UserFactory(username="desk", is_staff=True)
    staff.user_permissions.add(*Permission.objects.filter(codename__in=["view_signal", "change_signal"]))
    staff_api = APIClient()
    staff_api.credentials(HTTP_AUTHORIZATION=f"Token {token_for(staff)}")
    staff_browser = BrowserClient()
    staff_browser.force_login(staff)
    responses = [
        anonymous.get(f"/api/v1/signals/{signal_id}"),
        anonymous.post("/api/v1/signals", body, format="json"),
        client_user.get(f"/api/v1/signals/{signal_id}"),
        client_user.post("/api/v1/signals", body, format="json"),
        staff_api.get(f"/api/v1/signals/{signal_id}"),
        staff_browser.get(f"/admin/signals_app/signal/{signal_id}/change/"),
        staff_browser.get("/admin/signals_app/signal/"),
        anonymous.get("/healthz"),
        anonymous.get("/metrics"),
        anonymous.get("/admin/login/"),
    ]

    # then
    for response in responses:
        assert response.status_code != 500
        text = response.content.decode() + " " + " ".join(f"{k}: {v}" for k, v in response.items())
        assert find_levels(text, levels) == [], (response.request["PATH_INFO"], response.status_code)
    assert find_levels("\n".join(recorded_logs.lines), levels) == []
