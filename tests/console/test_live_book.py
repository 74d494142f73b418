"""The live book (issue 14, owner only): the positions table's live columns and the
*Live book* page, with real quotes in Redis and real heartbeats; bounded reads; and none
of it for staff without ``signals_app.view_hidden_levels``."""

from __future__ import annotations

import csv
import io
import re
import time
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client as HttpClient
from django.test.utils import CaptureQueriesContext
from openpyxl import load_workbook
from redis.exceptions import ConnectionError as RedisConnectionError

import positions.admin.live
import positions.live
from ea_gateway.models import Device
from ea_gateway.services import device_heartbeat
from positions.choices import PositionStatus
from positions.exit_plan import TRAILING, PlanState
from positions.live import clients_live, positions_live, signals_live
from positions.models import OpenPosition, SignalPlan
from tests.factories import make_signal, open_book
from tests.positions.test_scanner import put_quote
from tests.secrecy import find_levels

pytestmark = pytest.mark.django_db

POSITIONS = "/admin/positions/openposition/"
LIVE_BOOK = "/admin/positions/openposition/live/"
GOLD_LEVELS = [Decimal("2645.00"), Decimal("2670.00"), Decimal("2660.00")]


def _headers(page: str) -> dict[str, str]:
    """The table's column headers as unfold renders them (a th with the column's class,
    the label in a span or a sort link): column name -> its label's text."""
    headers = {}
    header = r'<th class="[^"]*\bcolumn-(\w+)\b[^"]*" scope="col">(.*?)</th>'
    for column, cell in re.findall(header, page, re.S):
        text = re.sub(r"<[^>]+>", " ", cell.split('class="sortoptions', 1)[0])
        headers[column] = " ".join(text.split())
    return headers


def _row(page: str, marker: str) -> str:
    """The table row of the page holding ``marker``."""
    at = page.index(marker)
    return page[page.rindex("<tr", 0, at) : page.index("</tr>", at)]


@pytest.fixture
def book(redis_client):
    """A gold buy (entry 2650.50, SL 2645, partial 2660, TP 2670) with 2 positions and a
    USDJPY sell (entry 150.000, SL 150.500, TP 149.000) with 1; both quoted just now."""
    gold = make_signal(
        symbol="XAUUSD",
        entry="2650.50",
        sl="2645.00",
        tp="2670.00",
        partial_take_profits=[{"price": "2660.00", "fraction": "0.5"}],
    )
    yen = make_signal(symbol="USDJPY", side="sell", entry="150.000", sl="150.500", tp="149.000")
    gold_positions = open_book(gold, 2)
    yen_positions = open_book(yen, 1, clients=[gold_positions[0].client])
    put_quote("XAUUSD", "2651.20", "2651.60")
    put_quote("USDJPY", "149.780", "149.800")
    return gold, yen, gold_positions, yen_positions


def test_the_owner_sees_bid_ask_pnl_and_pips_on_the_positions_table(owner_browser, book):
    gold, yen, gold_positions, yen_positions = book

    page = owner_browser.get(POSITIONS).content.decode()

    headers = _headers(page)
    assert headers["live_quote"] == "Bid/Ask"
    assert headers["live_pnl"] == "Float P&amp;L"
    assert headers["live_levels"] == "To stop / To TP"  # one column, the stop over the targets
    # a live position has no close yet: those columns make room for the live ones
    for column in ("ticket", "close", "pnl"):
        assert f"column-{column}" not in page
    gold_row = _row(page, f'value="{gold_positions[0].pk}"')
    assert "2651.20<br>2651.60" in gold_row  # at gold's 2 digits, bid over ask
    assert "7.00 USD" in gold_row  # (2651.20 - 2650.50) x 0.10 lot x 100 oz, on the bid
    assert "62.0 pips" in gold_row  # to the stop-loss, from the bid
    assert "stop-loss" in gold_row
    assert "#0</span> 88.0 pips" in gold_row  # the partial take-profit
    assert "TP</span> 188.0 pips" in gold_row
    yen_row = _row(page, f'value="{yen_positions[0].pk}"')
    assert "149.780<br>149.800" in yen_row
    assert "2,000.00 JPY" in yen_row  # a sell, on the ask, in yen: no conversion
    assert "70.0 pips" in yen_row  # ask 149.800 to the stop 150.500, pip 0.01
    assert "TP</span> 80.0 pips" in yen_row


def test_a_stale_quote_shows_its_age_and_a_missing_one_says_no_quote(owner_browser, book, redis_client):
    gold, yen, gold_positions, yen_positions = book
    put_quote("XAUUSD", "2651.30", "2651.70", ts=time.time() - 300)  # older than the one held: ignored
    redis_client.delete("veilstop:quote:XAUUSD")
    put_quote("XAUUSD", "2651.30", "2651.70", ts=time.time() - 300)
    silver = open_book(make_signal(symbol="XAGUSD", entry="30.000", sl="29.000", tp="31.000"), 1)

    response = owner_browser.get(POSITIONS)

    assert response.status_code == 200
    page = response.content.decode()
    gold_row = _row(page, f'value="{gold_positions[0].pk}"')
    assert '<span class="live-stale">5 min old</span>' in gold_row
    assert "8.00 USD" in gold_row  # still valued, on the old quote
    silver_row = _row(page, f'value="{silver[0].pk}"')
    assert silver_row.count("no quote") >= 4  # bid/ask, P&L, the stop, the target
    assert "pips" not in silver_row


def test_closed_positions_have_no_live_figures(owner_browser, book):
    gold, yen, gold_positions, yen_positions = book
    OpenPosition.objects.filter(pk=gold_positions[1].pk).update(
        status=PositionStatus.CLOSED_TP, remaining_volume=0, close_price=Decimal("2670.10")
    )

    for view in ("?state=all", "?state=closed", "?status__exact=closed_tp"):
        page = owner_browser.get(POSITIONS + view).content.decode()

        # the record of a close instead of the live figures
        assert list(_headers(page))[-3:] == ["opened", "close", "pnl"], view
        closed_row = _row(page, f'value="{gold_positions[1].pk}"')
        assert "2670.10" in closed_row
        assert "pips" not in closed_row
        assert "2651.20" not in closed_row
    live_only = owner_browser.get(POSITIONS + "?status__exact=open").content.decode()
    assert "live_levels" in _headers(live_only)


def test_unreadable_levels_and_an_unreachable_redis_are_said_never_an_error(owner_browser, book, monkeypatch):
    gold, yen, gold_positions, yen_positions = book
    with connection.cursor() as cursor:  # a token no key opens (a key dropped before reencrypt)
        cursor.execute(
            "UPDATE signals_app_signal SET owner_only = 'not a token'::bytea WHERE id = %s", [gold.pk]
        )

    page = owner_browser.get(POSITIONS).content.decode()
    book_page = owner_browser.get(LIVE_BOOK).content.decode()

    assert "levels unreadable" in _row(page, f'value="{gold_positions[0].pk}"')
    assert "7.00 USD" in _row(page, f'value="{gold_positions[0].pk}"')  # the P&L needs no level
    assert "70.0 pips" in _row(page, f'value="{yen_positions[0].pk}"')
    assert "levels unreadable" in _row(book_page, f'id="live-signal-{gold.pk}"')

    def unreachable(symbols):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(positions.live, "quotes_latest", unreachable)
    for url in (POSITIONS, LIVE_BOOK):
        response = owner_browser.get(url)
        assert response.status_code == 200
        assert "no quote" in response.content.decode()


def test_the_plan_as_the_sweeps_left_it(owner_browser, book):
    """A stop moved by trailing and a partial already taken, read from SignalPlan."""

    gold, yen, gold_positions, yen_positions = book
    state = PlanState(
        last_seq=1,
        best=Decimal("2661.00"),
        moved_stop=Decimal("2650.00"),
        moved_by=TRAILING,
        partials_hit=(0,),
    )
    SignalPlan.objects.create(signal=gold, state=state.to_json())

    page = owner_browser.get(POSITIONS).content.decode()

    row = _row(page, f'value="{gold_positions[0].pk}"')
    assert "12.0 pips" in row  # bid 2651.20 to the trailing stop at 2650.00
    assert "trailing stop" in row
    assert "#0</span>" not in row  # the partial is taken
    assert "TP</span> 188.0 pips" in row

    ended = PlanState(**{**state.__dict__, "exit_kind": "tp"})
    SignalPlan.objects.filter(signal_id=gold.pk).update(state=ended.to_json(), exit_kind="tp")
    page = owner_browser.get(POSITIONS).content.decode()
    assert "plan ended: take-profit" in _row(page, f'value="{gold_positions[0].pk}"')


def test_the_live_book_per_signal_and_per_client(owner_browser, book):
    gold, yen, gold_positions, yen_positions = book
    both = gold_positions[0].client  # holds a gold buy and a yen sell
    device = Device.objects.get(client=both)
    tickets = [gold_positions[0].broker_ticket, yen_positions[0].broker_ticket]
    device_heartbeat(device=device, balance=Decimal(10000), equity=Decimal("10000.00"), open_tickets=tickets)
    device_heartbeat(device=device, balance=Decimal(10000), equity=Decimal("9500.00"), open_tickets=tickets)

    response = owner_browser.get(LIVE_BOOK)

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="auto-refresh" data-seconds="5"' in page  # reloads itself, unless paused
    assert 'http-equiv="refresh"' not in page  # a reload the reader cannot stop fails WCAG 2.2.1
    gold_row = _row(page, f'id="live-signal-{gold.pk}"')
    assert f'href="/admin/signals_app/signal/{gold.pk}/change/"' in gold_row
    assert ">2</a>" in gold_row  # two open positions
    assert "0.20" in gold_row  # lots
    assert "14.00 USD" in gold_row  # both positions, on the bid
    assert "62.0 pips" in gold_row
    assert "88.0 pips" in gold_row
    assert "188.0 pips" in gold_row
    yen_row = _row(page, f'id="live-signal-{yen.pk}"')
    assert "2,000.00 JPY" in yen_row
    assert "70.0 pips" in yen_row
    client_row = _row(page, f'id="live-client-{both.pk}"')
    assert f'href="/admin/signals_app/client/{both.pk}/change/"' in client_row
    assert "9,500.00" in client_row  # equity
    assert "10,000.00" in client_row  # peak
    assert "5.00 % (no limit)" in client_row  # drawdown from the peak
    assert "2,000.00 JPY · 7.00 USD" in client_row  # per currency, never converted
    other = gold_positions[1].client
    other_row = _row(page, f'id="live-client-{other.pk}"')
    assert "no heartbeat" in other_row
    assert "7.00 USD" in other_row


def test_the_dashboard_and_the_positions_table_lead_to_the_live_book(owner_browser, book):
    dashboard = owner_browser.get("/admin/monitor/").content.decode()
    table = owner_browser.get(POSITIONS).content.decode()

    assert f'<a href="{LIVE_BOOK}" id="live-book-link">' in dashboard
    assert f'<a href="{LIVE_BOOK}" id="live-book-tool">' in table


def _queries(browser, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        assert browser.get(url).status_code == 200
    return len(captured)


def test_the_live_figures_cost_one_query_and_one_redis_round_trip_per_page(
    owner_browser, book, monkeypatch, django_assert_max_num_queries
):
    gold, yen, gold_positions, yen_positions = book
    asked: list[list[str]] = []
    real = positions.live.quotes_latest

    def counted(symbols):
        asked.append(list(symbols))
        return real(symbols)

    monkeypatch.setattr(positions.live, "quotes_latest", counted)
    few = _queries(owner_browser, POSITIONS)
    few_book = _queries(owner_browser, LIVE_BOOK)
    # many more positions, on many more signals and instruments
    for symbol, entry in (("EURUSD", "1.08500"), ("GBPUSD", "1.27000"), ("XAUUSD", "2652.00")):
        for _ in range(4):
            open_book(make_signal(symbol=symbol, entry=entry, sl=None, tp=str(Decimal(entry) * 2)), 5)
    asked.clear()

    with django_assert_max_num_queries(few):
        owner_browser.get(POSITIONS)
    with django_assert_max_num_queries(few_book):
        owner_browser.get(LIVE_BOOK)

    # one quote read per page (the live book's two tables: one each), every instrument at once
    assert len(asked) == 3
    every = {"EURUSD", "GBPUSD", "USDJPY", "XAUUSD"}
    assert [set(symbols) for symbols in asked] == [every, every, every]


# --- secrecy: staff without signals_app.view_hidden_levels ------------------------------


@pytest.fixture
def staff_browser(staff_with):
    browser = HttpClient()
    browser.force_login(
        staff_with(
            "positions.view_openposition",
            "positions.view_closecommand",
            "positions.view_clientguard",
            "signals_app.view_signal",
            "signals_app.view_client",
        )
    )
    return browser


def test_staff_without_the_levels_permission_see_none_of_it(staff_browser, book):
    gold, yen, gold_positions, yen_positions = book

    table = staff_browser.get(POSITIONS)
    live_book = staff_browser.get(LIVE_BOOK)
    dashboard = staff_browser.get("/admin/monitor/")

    assert table.status_code == 200
    page = table.content.decode()
    for shown in ("Bid/Ask", "Float P&amp;L", "To stop", "To TP", "pips", "2651.20", "7.00 USD", "live-book"):
        assert shown not in page
    assert find_levels(page, [*GOLD_LEVELS, Decimal("150.500"), Decimal("149.000")]) == []
    assert live_book.status_code == 403
    assert find_levels(live_book.content.decode(), GOLD_LEVELS) == []
    assert dashboard.status_code == 200
    assert "live-book-link" not in dashboard.content.decode()


def _csv_header(response) -> list[str]:
    assert response.status_code == 200
    return next(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


def test_exports_carry_no_live_column_for_anyone(staff_browser, owner_browser, book):
    export = POSITIONS + "export/"
    for browser in (staff_browser, owner_browser):
        header = _csv_header(browser.post(export, {"format": "0", "resource": "0"}))
        xlsx = browser.post(export, {"format": "1", "resource": "0"})
        sheet = load_workbook(io.BytesIO(xlsx.content)).active
        assert [cell.value for cell in sheet[1]] == header
        for column in header:
            assert column not in ("Bid/Ask", "Float P&L", "To stop", "To TP")
            assert not column.startswith("live")
        text = xlsx.content.decode("latin-1") + " ".join(header)
        assert find_levels(" ".join(header), GOLD_LEVELS) == []
        assert "2651.20" not in text


def test_the_selectors_read_once_whatever_the_number_of_positions(book, django_assert_num_queries):
    gold, yen, gold_positions, yen_positions = book
    for _ in range(5):
        open_book(make_signal(symbol="EURUSD", entry="1.08500", sl="1.08000", tp="1.09000"), 4)
    put_quote("EURUSD", "1.08437", "1.08449")
    page = list(OpenPosition.objects.select_related("instrument"))
    assert len(page) == 23

    with django_assert_num_queries(1):  # the plans of the page's 7 signals
        figures = positions_live(page)
    with django_assert_num_queries(2):  # the books summed per signal, their plans
        signals = signals_live(limit=100)
    with django_assert_num_queries(6):  # the books per client and instrument, the guards' five reads
        clients = clients_live()

    assert len(figures) == 23
    assert {figure.plan.stop.pips for figure in figures.values()} == {
        Decimal("62.0"),
        Decimal("70.0"),
        Decimal("43.7"),
    }
    assert len(signals) == 7
    assert sum(client.positions for client in clients) == 23


def test_the_clients_half_needs_the_guards_permission_too(staff_with, book, monkeypatch):
    gold, yen, gold_positions, yen_positions = book
    browser = HttpClient()
    browser.force_login(staff_with("positions.view_openposition", "signals_app.view_hidden_levels"))
    monkeypatch.setattr(positions.admin.live, "SIGNALS_SHOWN", 1)

    page = browser.get(LIVE_BOOK).content.decode()

    assert f'id="live-signal-{yen.pk}"' in page  # the most recent signal only
    assert f'id="live-signal-{gold.pk}"' not in page
    assert 'id="live-signals-capped"' in page
    assert 'id="live-clients"' not in page
    assert gold_positions[0].client.name not in page
