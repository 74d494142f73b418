"""The clients' risk guards in the console: re-armed by an action (its own permission,
audited), and a client's limits refused outside 0 to 100 with a clear message."""

from __future__ import annotations

from decimal import Decimal

import pytest

from positions.choices import GuardState
from positions.models import ClientGuard
from signals_app.choices import AuditAction
from signals_app.models import AuditEvent, Client
from tests.console.helpers import messages_of
from tests.ea_helpers import ea_for, make_device
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/positions/clientguard/"


@pytest.fixture
def tripped(redis_client):
    client = ClientFactory(drawdown_limit_percent=Decimal("10"))
    ea = ea_for(make_device(client=client))
    for equity in ("10000.00", "8900.00"):
        assert ea.heartbeat({"balance": "1", "equity": equity, "open_tickets": []}).status_code == 200
    guard = ClientGuard.objects.get(client=client)
    assert guard.state == GuardState.TRIPPED
    return guard


def _rearm(browser, guard):
    return browser.post(
        CHANGELIST, {"action": "rearm", "_selected_action": [guard.pk], "index": 0}, follow=True
    )


def test_the_owner_rearms_a_tripped_guard_once(owner_browser, owner, tripped):
    page = owner_browser.get(CHANGELIST).content.decode()
    assert "drawdown from the peak 11.00% reached the limit of 10.00%" in page

    first = _rearm(owner_browser, tripped)
    second = _rearm(owner_browser, tripped)

    tripped.refresh_from_db()
    assert (tripped.state, tripped.rearmed_by) == (GuardState.ARMED, owner.username)
    events = AuditEvent.objects.filter(action=AuditAction.CLIENT_GUARD_REARMED)
    assert list(events.values_list("actor", "subject_id")) == [(owner.username, tripped.pk)]
    assert any("Re-armed" in text for text in messages_of(first))
    assert any("Not tripped" in text for text in messages_of(second))


def test_viewing_the_guards_is_not_enough_to_rearm_one(client, staff_with, tripped):
    client.force_login(staff_with("positions.view_clientguard"))
    assert client.get(CHANGELIST).status_code == 200
    _rearm(client, tripped)
    assert ClientGuard.objects.get(pk=tripped.pk).state == GuardState.TRIPPED

    client.force_login(staff_with("positions.view_clientguard", "positions.rearm_clientguard"))
    _rearm(client, tripped)
    assert ClientGuard.objects.get(pk=tripped.pk).state == GuardState.ARMED


@pytest.mark.parametrize("value", ["0", "100", "-5"])
def test_a_clients_limit_outside_0_to_100_is_refused_in_the_form(owner_browser, value):
    client = ClientFactory()
    form = {
        "name": client.name,
        "active": "on",
        "default_volume": "0.10",
        "auto_close_enabled": "on",
        "drawdown_limit_percent": value,
        "daily_loss_limit_percent": "",
    }
    response = owner_browser.post(f"/admin/signals_app/client/{client.pk}/change/", form)
    assert response.status_code == 200  # the form again, with the error
    assert "A limit is a percentage above 0 and below 100" in response.content.decode()
    assert Client.objects.get(pk=client.pk).drawdown_limit_percent is None

    form["drawdown_limit_percent"] = "12.5"
    owner_browser.post(f"/admin/signals_app/client/{client.pk}/change/", form)
    assert Client.objects.get(pk=client.pk).drawdown_limit_percent == Decimal("12.5")
