"""A changelist's query string filters only what the console offers: no lookup into a JSON
or encrypted field (a row count would reveal a trigger quote digit by digit to staff who
may not see it), no pattern lookup (a bad pattern is a database error). Django answers 400
and changes nothing; the offered filters still work. And no admin page shows a
second-factor key or an API token."""

from __future__ import annotations

import pytest

from positions.choices import CloseReason
from positions.closes import close_command_request
from signals_app.events import Actor
from tests.factories import make_signal, open_book

pytestmark = pytest.mark.django_db

PROBES = {
    "/admin/positions/closecommand/": [
        "trigger_quote__bid__startswith=2",
        "trigger_quote__has_key=bid",
        "position__signal__owner_only__isnull=false",
        "note__regex=(",
        "note__iregex=[",
    ],
    "/admin/signals_app/auditevent/": ["data__trigger_quote__bid__startswith=2", "data__icontains=bid"],
    "/admin/positions/openposition/": ["signal__owner_only__isnull=false", "broker_ticket__regex=("],
    "/admin/signals_app/signal/": ["owner_only__isnull=false", "payload__has_key=sl"],
}


@pytest.fixture
def a_close():
    signal = make_signal(sl="2645.00", tp="2670.00")
    (position,) = open_book(signal, 1)
    return close_command_request(
        position=position,
        reason=CloseReason.STOP_LOSS,
        by=Actor.system("tests"),
        trigger_quote={"symbol": "XAUUSD", "bid": "2644.90", "ask": "2645.20"},
    )


@pytest.mark.parametrize("user", ["owner", "staff"])
def test_lookups_into_json_encrypted_or_by_pattern_are_refused(client, owner, staff_with, a_close, user):
    viewer = (
        owner
        if user == "owner"
        else staff_with(
            "positions.view_closecommand",
            "positions.view_openposition",
            "signals_app.view_auditevent",
            "signals_app.view_signal",
        )
    )
    client.force_login(viewer)
    for page, lookups in PROBES.items():
        assert client.get(page).status_code == 200, page
        for lookup in lookups:
            response = client.get(f"{page}?{lookup}")
            assert response.status_code == 400, (page, lookup, response.status_code)


def test_the_offered_filters_still_work(owner_browser, a_close):
    response = owner_browser.get(
        "/admin/positions/closecommand/?reason__exact=stop_loss&status__exact=pending"
    )
    assert response.status_code == 200
    assert [command.pk for command in response.context["cl"].result_list] == [a_close.pk]


def test_no_admin_page_shows_a_second_factor_key_or_an_api_token(owner_browser, owner):
    from django_otp.plugins.otp_totp.models import TOTPDevice
    from rest_framework.authtoken.models import Token

    TOTPDevice.objects.create(user=owner, name="phone", confirmed=True)
    Token.objects.create(user=owner)
    for path in (
        "/admin/otp_totp/totpdevice/",
        "/admin/otp_totp/totpdevice/1/change/",
        "/admin/authtoken/tokenproxy/",
    ):
        assert owner_browser.get(path).status_code == 404, path
    index = owner_browser.get("/admin/").content.decode()
    assert "totpdevice" not in index
    assert "tokenproxy" not in index
