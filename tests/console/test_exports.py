"""Exports (issue 14): positions, close commands and audit events as CSV or XLSX, for a
date range, as the changelist filters them; bounded; never a hidden level, whoever
exports (the staff without the hidden-levels permission included)."""

from __future__ import annotations

import csv
import io
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.test import Client as HttpClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from positions.choices import CloseReason, PositionStatus
from positions.closes import close_command_request
from positions.models import CloseCommand, OpenPosition
from positions.quotes import Quote, quotes_ingest
from positions.scanner import sweep
from signals_app.events import Actor
from signals_app.models import AuditEvent
from tests.factories import make_signal, open_book
from tests.secrecy import find_levels

pytestmark = pytest.mark.django_db

POSITIONS = "/admin/positions/openposition/export/"
CSV_FORMAT, XLSX_FORMAT = "0", "1"


def _export(browser, url: str, fmt: str = CSV_FORMAT):
    return browser.post(url, {"format": fmt, "resource": "0"})


def _rows(response) -> list[dict[str, str]]:
    assert response.status_code == 200, response.content[:300]
    return list(csv.DictReader(io.StringIO(response.content.decode("utf-8-sig"))))


@pytest.fixture
def three_days():
    """Three gold positions opened on 1, 2 and 3 November; the second closed at a profit."""
    positions = open_book(make_signal(symbol="XAUUSD", entry="2650.50", sl="2645.00", tp="2670.00"), 3)
    for day, position in enumerate(positions, start=1):
        OpenPosition.objects.filter(pk=position.pk).update(opened_at=datetime(2026, 11, day, 12, tzinfo=UTC))
    OpenPosition.objects.filter(pk=positions[1].pk).update(
        status=PositionStatus.CLOSED_TP, close_price=Decimal("2670.1"), realized_pnl=Decimal("195.999")
    )
    return positions


def test_positions_export_as_csv_for_a_date_range(owner_browser, three_days):
    rows = _rows(
        _export(owner_browser, POSITIONS + "?state=all&opened_at_from=2026-11-02&opened_at_to=2026-11-03")
    )

    assert sorted(int(row["id"]) for row in rows) == sorted(p.pk for p in three_days[1:])
    closed = next(row for row in rows if int(row["id"]) == three_days[1].pk)
    assert closed["entry_price"] == "2650.50"  # at gold's two digits, not 2650.5000000000
    assert closed["close_price"] == "2670.10"
    assert closed["realized_pnl"] == "196.00"
    assert closed["P&L currency"] == "USD"
    assert closed["instrument"] == "XAUUSD"


def test_positions_export_as_xlsx_with_numbers(owner_browser, three_days):
    response = _export(owner_browser, POSITIONS + "?state=all", XLSX_FORMAT)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.openxmlformats")
    sheet = load_workbook(io.BytesIO(response.content)).active
    header = [cell.value for cell in sheet[1]]
    assert sheet.max_row == 1 + len(three_days)
    pnl = [row[header.index("realized_pnl")] for row in sheet.iter_rows(min_row=2, values_only=True)]
    assert 196 in pnl  # a number a spreadsheet can sum, not text


def test_a_bad_date_changes_nothing_and_is_no_server_error(owner_browser, three_days):
    response = owner_browser.get("/admin/positions/openposition/?opened_at_from=yesterday")
    assert response.status_code == 302
    assert "e=1" in response["Location"]


@pytest.mark.parametrize(
    "query", ["?bogus=1", "?opened_at_from=yesterday", "?state=maybe", "?opened_at_to=9999-12-31"]
)
def test_an_export_of_a_bad_filter_is_refused_without_a_server_error(owner_browser, three_days, query):
    response = _export(owner_browser, POSITIONS + query)
    assert response.status_code == 302
    assert "Nothing exported" in owner_browser.get(response["Location"]).content.decode()


def test_an_export_beyond_the_limit_is_refused_saying_how_to_narrow_it(owner_browser, three_days, settings):
    settings.EXPORT_MAX_ROWS = 2
    response = _export(owner_browser, POSITIONS + "?state=all")
    assert response.status_code == 302
    shown = owner_browser.get(response["Location"]).content.decode()
    assert "at most 2 (EXPORT_MAX_ROWS)" in shown


def test_exports_need_the_view_permission(staff_with, three_days):
    browser = HttpClient()
    browser.force_login(staff_with("signals_app.view_signal"))
    assert _export(browser, POSITIONS).status_code == 403


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    sl=st.decimals(min_value=Decimal("2600.00"), max_value=Decimal("2649.99"), places=2),
    tp=st.decimals(min_value=Decimal("2651.00"), max_value=Decimal("2700.00"), places=2),
)
def test_no_export_holds_a_hidden_level(staff_with, sl, tp):
    # given: a signal with hidden levels, its positions, a manual close, its audit trail
    signal = make_signal(symbol="XAUUSD", entry="2650.50", sl=str(sl), tp=str(tp))
    (position,) = open_book(signal, 1)
    close_command_request(position=position, reason=CloseReason.MANUAL, by=Actor.system("t"))
    browser = HttpClient()
    browser.force_login(
        staff_with(
            "positions.view_openposition", "positions.view_closecommand", "signals_app.view_auditevent"
        )
    )
    # when: every export, in both formats
    for url in (
        POSITIONS + "?state=all",
        "/admin/positions/closecommand/export/",
        "/admin/signals_app/auditevent/export/",
    ):
        for fmt in (CSV_FORMAT, XLSX_FORMAT):
            response = _export(browser, url, fmt)
            assert response.status_code == 200
            text = response.content.decode() if fmt == CSV_FORMAT else _xlsx_text(response.content)
            # then: no hidden level, in any spelling
            assert find_levels(text, [sl, tp]) == [], (url, fmt)


def _xlsx_text(content: bytes) -> str:
    sheet = load_workbook(io.BytesIO(content)).active
    return "\n".join(
        ",".join("" if v is None else str(v) for v in row) for row in sheet.iter_rows(values_only=True)
    )


def test_the_quote_that_triggered_a_close_is_only_for_those_who_see_the_levels(staff_with, owner_browser):
    # given: a hidden stop crossed by a quote exactly on it (the scanner's close, audited)
    sl = Decimal("2645.00")
    (position,) = open_book(make_signal(symbol="XAUUSD", entry="2650.50", sl=str(sl), tp="2670.00"), 1)
    quotes_ingest(quotes=[Quote("XAUUSD", sl, sl + Decimal("0.30"), time.time())], source="t")
    sweep()
    command = CloseCommand.objects.get(position=position)
    assert command.trigger_quote is not None
    event = AuditEvent.objects.filter(data__has_key="trigger_quote").latest("pk")
    browser = HttpClient()
    browser.force_login(staff_with("positions.view_closecommand", "signals_app.view_auditevent"))

    # then: neither the export nor the pages show it to staff without the levels' permission
    seen = [
        _export(browser, "/admin/signals_app/auditevent/export/").content.decode(),
        browser.get(f"/admin/signals_app/auditevent/{event.pk}/change/").content.decode(),
        browser.get(f"/admin/positions/closecommand/{command.pk}/change/").content.decode(),
    ]
    for text in seen:
        assert find_levels(text, [sl]) == []
    # while the owner, who may see the levels, sees where the close was triggered
    owner_page = owner_browser.get(f"/admin/positions/closecommand/{command.pk}/change/").content.decode()
    assert find_levels(owner_page, [sl])


def test_a_ticket_from_an_ea_is_exported_as_text_never_as_a_formula(owner_browser, three_days):
    OpenPosition.objects.filter(pk=three_days[0].pk).update(broker_ticket='=HYPERLINK("http://x")')
    sheet = load_workbook(io.BytesIO(_export(owner_browser, POSITIONS, XLSX_FORMAT).content)).active
    header = [cell.value for cell in sheet[1]]
    tickets = [row[header.index("broker_ticket")].value for row in sheet.iter_rows(min_row=2)]
    assert '\'=HYPERLINK("http://x")' in tickets
    formulas = [cell for row in sheet.iter_rows() for cell in row if cell.data_type == "f"]
    assert formulas == []
