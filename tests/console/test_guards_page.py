"""The console's risk guards page (issue 12): every client's guard with re-arm (its own
permission, post/redirect/get, audited once), every instrument's market guard, and the
clients' half still shown while Redis is down."""

from __future__ import annotations

import pytest
from django.test import Client as HttpClient
from django.utils import timezone

from positions.choices import GuardState
from positions.models import ClientGuard
from signals_app.models import AuditEvent
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

PAGE = "/admin/guards/"


@pytest.fixture
def tripped():
    client = ClientFactory(name="Bob")
    ClientGuard.objects.create(
        client=client, state=GuardState.TRIPPED, tripped_at=timezone.now(), tripped_reason="drawdown limit"
    )
    return client


def test_the_owner_sees_the_guards_and_re_arms_once(owner_browser, tripped, redis_client):
    page = owner_browser.get(PAGE).content.decode()
    assert "Bob" in page
    assert f'id="rearm-{tripped.pk}"' in page
    assert "XAUUSD" in page  # the instruments' half

    rearm = f"/admin/guards/{tripped.pk}/rearm/"
    first = owner_browser.post(rearm)
    again = owner_browser.post(rearm, follow=True)  # the same form sent again

    assert first.status_code == 302
    assert first["Location"] == PAGE
    assert ClientGuard.objects.get(client=tripped).state == GuardState.ARMED
    assert "is not tripped" in again.content.decode()
    assert AuditEvent.objects.filter(action="client_guard.rearmed").count() == 1


def test_re_arming_takes_its_own_permission(staff_with, tripped, redis_client):
    browser = HttpClient()
    browser.force_login(staff_with("positions.view_clientguard"))
    page = browser.get(PAGE).content.decode()
    assert "Bob" in page
    assert "Re-arm" not in page
    assert browser.post(f"/admin/guards/{tripped.pk}/rearm/").status_code == 403
    assert ClientGuard.objects.get(client=tripped).state == GuardState.TRIPPED


def test_the_page_is_for_those_who_may_view_the_guards(staff_with):
    browser = HttpClient()
    browser.force_login(staff_with("positions.view_openposition"))
    assert browser.get(PAGE).status_code == 403


def test_without_redis_the_clients_are_still_shown(owner_browser, tripped, settings, unused_tcp_port):
    settings.REDIS_URL = f"redis://127.0.0.1:{unused_tcp_port}/0"  # nothing listens there
    page = owner_browser.get(PAGE)
    assert page.status_code == 200
    assert "Bob" in page.content.decode()
    assert "which is unreachable" in page.content.decode()
