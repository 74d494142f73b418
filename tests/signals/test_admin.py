"""The owner console for signals: hidden levels only for those allowed, edits validated and audited."""

from __future__ import annotations

import pytest

from signals_app.models import AuditEvent, Signal
from tests.factories import ClientFactory, OwnerFactory, make_signal

pytestmark = pytest.mark.django_db

LEVELS = {
    "sl": "2645.00",
    "tp": "2670.00",
    "max_holding_minutes": "",
    "strategy": "",
    "reason": "",
    "advanced": "",
}


@pytest.fixture
def owner_browser(client):
    client.force_login(OwnerFactory())
    return client


def test_superuser_sees_and_moves_hidden_levels(owner_browser):
    signal = make_signal(sl="2645.00", tp="2670.00")
    page = owner_browser.get(f"/admin/signals_app/signal/{signal.pk}/change/")
    assert page.status_code == 200
    assert b'value="2645.0000000000"' in page.content or b'value="2645.00"' in page.content

    response = owner_browser.post(
        f"/admin/signals_app/signal/{signal.pk}/change/", {**LEVELS, "sl": "2648.25"}
    )

    assert response.status_code == 302
    assert Signal.objects.get(pk=signal.pk).owner_only == {"sl": "2648.25", "tp": "2670.00"}
    event = AuditEvent.objects.get(action="signal.levels_changed")
    assert event.secret_data["old"]["sl"] == "2645.00"
    assert event.secret_data["new"]["sl"] == "2648.25"
    assert event.data == {"changed": ["sl"]}


def test_a_level_on_the_wrong_side_is_refused_in_the_form(owner_browser):
    signal = make_signal(sl="2645.00", tp="2670.00")

    response = owner_browser.post(f"/admin/signals_app/signal/{signal.pk}/change/", {**LEVELS, "sl": "2655"})

    assert response.status_code == 200
    assert b"must be below the entry price for a buy" in response.content
    assert Signal.objects.get(pk=signal.pk).owner_only["sl"] == "2645.00"
    assert not AuditEvent.objects.filter(action="signal.levels_changed").exists()


def test_owner_creates_and_publishes_a_signal_in_the_admin(owner_browser):
    ClientFactory.create_batch(2)
    from signals_app.models import Instrument

    instrument_id = Instrument.objects.get(symbol="EURUSD").pk
    response = owner_browser.post(
        "/admin/signals_app/signal/add/",
        {
            "instrument": instrument_id,
            "side": "sell",
            "entry_price": "1.08500",
            "ttl_minutes": "60",
            "payload": '{"timeframe": "H4"}',
            **LEVELS,
            "sl": "1.09000",
            "tp": "1.07500",
            "advanced": '{"trailing": {"distance_pips": "15"}}',
        },
    )
    assert response.status_code == 302, response.content.decode()[:3000]
    signal = Signal.objects.get()
    assert signal.owner_only["trailing"] == {"distance_pips": "15", "activation_pips": "0"}

    owner_browser.post(
        "/admin/signals_app/signal/", {"action": "publish_selected", "_selected_action": [signal.pk]}
    )
    assert signal.approvals.count() == 2
    assert Signal.objects.get(pk=signal.pk).status == "published"
