"""Test-breach: whether and which hidden level a price would cross, judged on the right
side of the book; nothing is closed or recorded, and the levels show only to those allowed."""

from __future__ import annotations

import pytest
from django.db import connection

from positions.choices import PositionStatus
from positions.models import CloseCommand, OpenPosition
from signals_app.models import AuditEvent
from tests.factories import UserFactory, make_signal, open_book

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/positions/openposition/"


def _signal_url(signal) -> str:
    return f"{CHANGELIST}signal/{signal.pk}/test-breach/"


def _position_url(position) -> str:
    return f"{CHANGELIST}{position.pk}/test-breach/"


@pytest.fixture
def buy_book():
    signal = make_signal(side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    return signal, open_book(signal, 3)


def _nothing_changed(positions, audit_count: int) -> None:
    assert not CloseCommand.objects.exists()
    assert set(
        OpenPosition.objects.filter(pk__in=[p.pk for p in positions]).values_list("status", flat=True)
    ) == {PositionStatus.OPEN}
    assert AuditEvent.objects.count() == audit_count


def test_a_price_through_the_stop_would_trigger_and_nothing_is_closed(owner_browser, buy_book):
    signal, positions = buy_book
    audit_count = AuditEvent.objects.count()

    response = owner_browser.post(_signal_url(signal), {"price": "2644.90"})

    assert response.status_code == 200
    outcome = response.context["outcome"]
    assert outcome["would_close"] is True
    assert outcome["level"] == "stop-loss"
    assert str(outcome["judged_price"]) == "2644.90"
    assert outcome["open_positions"] == 3
    page = response.content.decode()
    assert "Would trigger: stop-loss" in page
    assert "3 open position(s) of this signal" in page
    _nothing_changed(positions, audit_count)


def test_a_buy_is_judged_on_the_bid_a_sell_on_the_ask(owner_browser):
    buy = make_signal(side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    sell = make_signal(side="sell", entry="2650.50", sl="2660.00", tp="2630.00")

    def outcome(signal, bid: str, ask: str) -> tuple:
        result = owner_browser.post(_signal_url(signal), {"bid": bid, "ask": ask}).context["outcome"]
        return result["level"], str(result["judged_price"]), result["judged_on"]

    # each quote straddles a level: only the right side of the book decides
    assert outcome(buy, "2669.90", "2670.20") == ("", "2669.90", "bid")  # the ask alone is past the TP
    assert outcome(buy, "2670.00", "2670.40") == ("take-profit", "2670.00", "bid")
    assert outcome(buy, "2644.90", "2645.30") == ("stop-loss", "2644.90", "bid")
    assert outcome(sell, "2659.50", "2660.00") == ("stop-loss", "2660.00", "ask")
    assert outcome(sell, "2629.80", "2630.10") == ("", "2630.10", "ask")  # the bid alone is past the TP
    quiet = owner_browser.post(_signal_url(sell), {"bid": "2629.80", "ask": "2630.10"})
    assert "Would not trigger" in quiet.content.decode()
    assert quiet.context["outcome"]["open_positions"] == 0


def test_from_a_position_page_it_tests_the_positions_signal(owner_browser, buy_book):
    signal, positions = buy_book
    audit_count = AuditEvent.objects.count()

    page = owner_browser.get(_position_url(positions[1]))
    assert page.status_code == 200
    assert page.context["outcome"] is None

    response = owner_browser.post(_position_url(positions[1]), {"price": "2671"})

    assert response.context["outcome"]["level"] == "take-profit"
    assert response.context["signal"].pk == signal.pk
    assert f"Position #{positions[1].pk}" in response.content.decode()
    _nothing_changed(positions, audit_count)


def test_the_owner_sees_the_hidden_levels_on_the_result(owner_browser, buy_book):
    signal, _ = buy_book

    page = owner_browser.post(_signal_url(signal), {"price": "2650"}).content.decode()

    assert '<td id="hidden-sl">2645.00</td>' in page
    assert '<td id="hidden-tp">2670.00</td>' in page


def test_staff_without_the_hidden_levels_permission_get_neither_levels_nor_verdicts(
    client, staff_with, buy_book
):
    # Verdicts alone would bisect the levels: "would it trigger at 2644? at 2646? ..."
    signal, positions = buy_book
    client.force_login(staff_with("positions.view_openposition", "signals_app.view_signal"))

    responses = [
        client.get(_signal_url(signal)),
        client.post(_signal_url(signal), {"price": "2644"}),
        client.post(_position_url(positions[0]), {"bid": "2671", "ask": "2671.5"}),
    ]
    signal_page = client.get(f"/admin/signals_app/signal/{signal.pk}/change/").content.decode()
    position_page = client.get(f"{CHANGELIST}{positions[0].pk}/change/").content.decode()

    for response in responses:
        assert response.status_code == 403
        page = response.content.decode()
        assert "2645" not in page
        assert "2670" not in page
        assert "trigger" not in page
    assert _signal_url(signal) not in signal_page
    assert _position_url(positions[0]) not in position_page
    assert "2645" not in signal_page + position_page


def test_staff_with_the_hidden_levels_permission_test_and_see_them(client, staff_with, buy_book):
    signal, positions = buy_book
    client.force_login(
        staff_with("positions.view_openposition", "signals_app.view_signal", "signals_app.view_hidden_levels")
    )

    page = client.post(_signal_url(signal), {"price": "2650"}).content.decode()
    position_page = client.get(f"{CHANGELIST}{positions[0].pk}/change/").content.decode()

    assert '<td id="hidden-sl">2645.00</td>' in page
    assert "Would not trigger" in page
    assert _position_url(positions[0]) in position_page


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"price": "2650", "bid": "2650"}, "Enter either one price or a bid and an ask, not both."),
        ({"bid": "2650"}, "Enter a price, or both a bid and an ask."),
        ({}, "Enter a price, or both a bid and an ask."),
        ({"bid": "2651", "ask": "2650"}, "The bid cannot be above the ask."),
        ({"price": "-1"}, "Ensure this value is greater than or equal to"),
        ({"price": "abc"}, "Enter a number."),
    ],
)
def test_bad_input_is_refused_in_the_form(owner_browser, buy_book, form, error):
    signal, _ = buy_book

    response = owner_browser.post(_signal_url(signal), form)

    assert response.status_code == 200
    assert response.context["outcome"] is None
    assert error in response.content.decode()


def test_access(client, staff_with, buy_book):
    signal, positions = buy_book
    assert client.get(_signal_url(signal)).status_code == 302  # anonymous: to the login

    client.force_login(UserFactory(is_staff=False))
    assert client.post(_signal_url(signal), {"price": "2644"})["Location"].startswith("/admin/login/")

    client.force_login(staff_with("signals_app.view_signal"))
    assert client.post(_position_url(positions[0]), {"price": "2644"}).status_code == 403

    client.force_login(
        staff_with("positions.view_openposition", "signals_app.view_signal", "signals_app.view_hidden_levels")
    )
    assert client.put(_signal_url(signal)).status_code == 405
    assert client.get(f"{CHANGELIST}signal/999999/test-breach/").status_code == 404


def test_a_signal_whose_levels_do_not_decrypt_is_reported_not_a_server_error(owner_browser, buy_book):
    signal, positions = buy_book
    with connection.cursor() as cursor:  # as if its Fernet key was dropped before `reencrypt`
        cursor.execute(
            "UPDATE signals_app_signal SET owner_only = 'not-a-fernet-token' WHERE id = %s", [signal.pk]
        )

    for url in (_signal_url(signal), _position_url(positions[0])):
        response = owner_browser.post(url, {"price": "2644"})
        assert response.status_code == 200
        assert response.context["outcome"] is None
        assert "hidden levels cannot be read" in response.content.decode()
    assert not CloseCommand.objects.exists()
