"""Numbers as traders read them (issue 14): prices at the instrument's digits, money with
its currency and two decimals, timestamps with seconds; one format for every page."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from core import formatting
from positions.choices import PositionStatus
from positions.models import OpenPosition
from signals_app.models import Instrument
from tests.factories import make_signal, open_book

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [
        (Decimal("1.0874000000"), 5, "1.08740"),
        (Decimal("2650.6"), 2, "2650.60"),
        (Decimal("151.2345"), 3, "151.234"),  # half to even, as the broker's statement
        (Decimal("151.2355"), 3, "151.236"),
        (Decimal("64000"), 2, "64000.00"),
        (None, 5, "—"),
    ],
)
def test_a_price_is_written_at_its_digits(value, digits, shown):
    assert formatting.price(value, digits) == shown


@pytest.mark.parametrize(
    ("value", "currency", "shown"),
    [
        (Decimal("-12.5"), "USD", "-12.50 USD"),
        (Decimal("1234567.891"), "JPY", "1,234,567.89 JPY"),
        (Decimal("0E-8"), "USD", "0.00 USD"),
        (None, "USD", "—"),
    ],
)
def test_money_is_written_with_two_decimals_and_its_currency(value, currency, shown):
    assert formatting.money(value, currency) == shown


def test_pairs_quote_in_their_second_currency():
    assert Instrument.objects.get(symbol="USDJPY").quote_currency == "JPY"
    assert Instrument.objects.get(symbol="EURUSD").quote_currency == "USD"
    assert Instrument.objects.get(symbol="US30").quote_currency == "USD"


def test_the_positions_list_reads_like_a_statement(owner_browser):
    (position,) = open_book(make_signal(symbol="XAUUSD", entry="2650.50"), 1)
    OpenPosition.objects.filter(pk=position.pk).update(
        status=PositionStatus.CLOSED_TP,
        close_price=Decimal("2670.1"),
        realized_pnl=Decimal("195.999"),
        remaining_volume=0,
    )
    page = owner_browser.get("/admin/positions/openposition/?state=all").content.decode()
    assert "2670.10" in page
    assert "196.00 USD" in page
    assert "2670.1000000000" not in page
    assert "0.00000000" not in page


def test_timestamps_show_seconds_and_zone(owner_browser):
    make_signal()
    page = owner_browser.get("/admin/signals_app/auditevent/").content.decode()
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", page), "no timestamp with seconds"
    assert " p.m." not in page
    assert " a.m." not in page


def test_a_timestamp_reads_the_same_from_a_datetime_or_iso_text():
    from datetime import UTC, datetime

    moment = datetime(2026, 11, 30, 7, 8, 9, tzinfo=UTC)
    assert formatting.timestamp(moment) == "2026-11-30 07:08:09 UTC"
    assert formatting.timestamp(moment.isoformat()) == "2026-11-30 07:08:09 UTC"
    assert formatting.timestamp(None) == "—"
