"""What the console calls things and shows first (issue 14): positions are "Positions",
listed live by default; labels say what a row holds; forms start empty, not with
"null"; a device's client is picked by name."""

from __future__ import annotations

import re

import pytest

from positions.choices import PositionStatus
from positions.models import OpenPosition
from tests.factories import ClientFactory, make_signal, open_book

pytestmark = pytest.mark.django_db

POSITIONS = "/admin/positions/openposition/"


@pytest.fixture
def book():
    positions = open_book(make_signal(), 5)
    statuses = [
        PositionStatus.OPEN,
        PositionStatus.CLOSING,
        PositionStatus.CLOSE_FAILED,
        PositionStatus.CLOSED_TP,
        PositionStatus.CLOSED_SL,
    ]
    for position, status in zip(positions, statuses, strict=True):
        OpenPosition.objects.filter(pk=position.pk).update(status=status)
    return {status: position.pk for position, status in zip(positions, statuses, strict=True)}


def _listed(browser, query: str = "") -> set[int]:
    response = browser.get(POSITIONS + query)
    assert response.status_code == 200
    return {position.pk for position in response.context["cl"].result_list}


def test_positions_are_listed_live_by_default(owner_browser, book):
    live = {book[PositionStatus.OPEN], book[PositionStatus.CLOSING], book[PositionStatus.CLOSE_FAILED]}
    closed = {book[PositionStatus.CLOSED_TP], book[PositionStatus.CLOSED_SL]}

    assert _listed(owner_browser) == live
    assert _listed(owner_browser, "?state=closed") == closed
    assert _listed(owner_browser, "?state=all") == live | closed
    # an explicit status is taken as asked, closed or not
    assert _listed(owner_browser, "?status__exact=closed_tp") == {book[PositionStatus.CLOSED_TP]}
    # and the page says which it shows
    assert "Live (open, closing, close failed)" in owner_browser.get(POSITIONS).content.decode()


def test_a_bad_state_is_refused_without_a_server_error(owner_browser, book):
    response = owner_browser.get(POSITIONS + "?state=bogus")
    assert response.status_code == 302
    assert "e=1" in response["Location"]


def test_the_model_is_called_positions(owner_browser, book):
    index = owner_browser.get("/admin/").content.decode()
    assert ">Positions<" in index
    assert "Open positions" not in index
    changelist = owner_browser.get(POSITIONS + "?state=all").content.decode()
    assert "5 positions" in " ".join(changelist.split())  # the theme breaks lines between words


def test_a_position_label_says_what_it_holds(book):
    position = OpenPosition.objects.get(pk=book[PositionStatus.CLOSED_TP])
    OpenPosition.objects.filter(pk=position.pk).update(remaining_volume=0)
    position.refresh_from_db()
    assert str(position) == f"Position #{position.pk}: buy 0.10 XAUUSD, closed at take-profit"


def test_the_signal_form_starts_with_empty_trade_management(owner_browser):
    page = owner_browser.get("/admin/signals_app/signal/add/").content.decode()
    (advanced,) = re.findall(r'<textarea name="advanced"[^>]*>(.*?)</textarea>', page, re.S)
    assert advanced.strip() == ""


def test_a_device_client_is_picked_by_name(owner_browser):
    ClientFactory(name="Alice")
    page = owner_browser.get("/admin/ea_gateway/device/add/").content.decode()
    assert re.search(r'<select name="client"[^>]*class="[^"]*admin-autocomplete', page), page[:0]
    found = owner_browser.get(
        "/admin/autocomplete/",
        {"term": "Ali", "app_label": "ea_gateway", "model_name": "device", "field_name": "client"},
    ).json()
    assert [item["text"] for item in found["results"]] == ["Alice"]
