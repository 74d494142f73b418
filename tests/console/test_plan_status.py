"""The owner sees a signal's exit plan as it stands on its test-breach page (reached from
the signal's change page): the effective stop and what moved it, the best price, the
partials hit with their quotes, the exit and its quote. Only with view_hidden_levels."""

from __future__ import annotations

import pytest
from django.test import override_settings

from positions.scanner import sweep
from positions.signal_exit import signal_exit
from signals_app.events import Actor
from signals_app.models import AuditEvent
from tests.factories import make_signal, open_book
from tests.positions.test_owner_api import PINNED
from tests.positions.test_scanner import put_quote

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_client")]


def _page_url(signal) -> str:
    return f"/admin/positions/openposition/signal/{signal.pk}/test-breach/"


@pytest.fixture
def running_plan():
    """A gold buy trailing 3.0 behind the best bid, a partial at 2660; the market went to 2661."""
    signal = make_signal(
        side="buy",
        entry="2650.50",
        sl="2645.00",
        tp="2670.00",
        trailing={"distance_pips": "30"},
        partial_take_profits=[{"price": "2660", "fraction": "0.5"}],
    )
    open_book(signal, 2)
    with override_settings(**PINNED):
        for bid, ask in (("2651.00", "2651.30"), ("2661.00", "2661.30")):
            put_quote("XAUUSD", bid, ask)
            sweep()
    return signal


def test_the_signal_page_leads_to_the_plan(owner_browser, running_plan):
    page = owner_browser.get(f"/admin/signals_app/signal/{running_plan.pk}/change/").content.decode()

    assert _page_url(running_plan) in page
    assert "Exit plan" in page


def test_the_owner_sees_the_plan_as_it_stands(owner_browser, running_plan):
    audit_count = AuditEvent.objects.count()

    response = owner_browser.get(_page_url(running_plan))

    assert response.status_code == 200
    page = response.content.decode()
    assert '<td id="plan-stop">2658.00 (moved by the trailing stop)</td>' in page
    assert '<td id="plan-best">2661.00</td>' in page
    assert "#0 at bid 2661.00 · ask 2661.30" in page
    assert "none yet: the plan is running" in page
    assert response.context["outcome"] is None
    assert AuditEvent.objects.count() == audit_count


def test_after_a_test_the_plan_shows_as_it_stood_before_the_quote(owner_browser, running_plan):
    with override_settings(**PINNED):
        response = owner_browser.post(_page_url(running_plan), {"price": "2657.90"})

    page = response.content.decode()
    assert "Would trigger: trailing stop" in page
    assert "Exit plan as it stands (before the quote tested)" in page
    assert "none yet: the plan is running" in page
    assert response.context["outcome"]["plan_ended"] is True


def test_an_ended_plan_shows_its_exit(owner_browser, running_plan):
    signal_exit(signal_id=running_plan.pk, by=Actor.system("strategy"))

    page = owner_browser.get(_page_url(running_plan)).content.decode()
    answer = owner_browser.post(_page_url(running_plan), {"price": "2700"}).content.decode()

    assert "the strategy&#x27;s exit, by strategy: its open positions are closed whatever the price" in page
    assert "Already ended: the strategy&#x27;s exit" in answer


def test_without_the_hidden_levels_permission_no_plan_shows(client, staff_with, running_plan):
    client.force_login(staff_with("positions.view_openposition", "signals_app.view_signal"))

    response = client.get(_page_url(running_plan))
    signal_page = client.get(f"/admin/signals_app/signal/{running_plan.pk}/change/").content.decode()

    assert response.status_code == 403
    assert "2658" not in response.content.decode()
    assert _page_url(running_plan) not in signal_page
    assert "2658" not in signal_page
