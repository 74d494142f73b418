"""The live book in a real headless Chromium (1366x900): the owner follows the monitor
dashboard's link to the live book, reads each signal's and client's live figures, then
the positions table's live columns. Screenshots: test-artifacts/console-live-book.png
and console-positions-live.png."""

from __future__ import annotations

from decimal import Decimal

import pytest
from selenium.webdriver.common.by import By

from ea_gateway.models import Device
from ea_gateway.services import device_heartbeat
from tests.console.browser import no_sideways_scroll, screenshot, wait_for
from tests.factories import make_signal, open_book
from tests.positions.test_scanner import put_quote

pytestmark = [pytest.mark.slow]


def _book():
    gold = make_signal(
        symbol="XAUUSD",
        entry="2650.50",
        sl="2645.00",
        tp="2670.00",
        partial_take_profits=[{"price": "2660.00", "fraction": "0.5"}],
    )
    yen = make_signal(symbol="USDJPY", side="sell", entry="150.000", sl="150.500", tp="149.000")
    gold_positions = open_book(gold, 3)
    yen_positions = open_book(yen, 2, clients=[position.client for position in gold_positions[:2]])
    put_quote("XAUUSD", "2651.20", "2651.60")
    put_quote("USDJPY", "149.780", "149.800")
    for position in gold_positions:
        device = Device.objects.get(client=position.client)
        tickets = [position.broker_ticket]
        device_heartbeat(
            device=device, balance=Decimal(10000), equity=Decimal("10000.00"), open_tickets=tickets
        )
        device_heartbeat(
            device=device, balance=Decimal(10000), equity=Decimal("9850.00"), open_tickets=tickets
        )
    return gold, yen, gold_positions, yen_positions


def test_the_owner_reads_the_live_book_and_the_live_positions(owner_session, live_server, redis_client):
    # given
    gold, yen, gold_positions, yen_positions = _book()
    browser = owner_session

    # when: from the monitor dashboard to the live book
    browser.get(f"{live_server.url}/admin/monitor/")
    browser.find_element(By.ID, "live-book-link").click()
    wait_for(browser, By.ID, "live-signals")

    # then: per signal, bid/ask, P&L with its currency, pips to each level
    assert browser.current_url == f"{live_server.url}/admin/positions/openposition/live/"
    gold_row = browser.find_element(By.ID, f"live-signal-{gold.pk}").text
    assert "2651.20 / 2651.60" in gold_row
    assert "21.00 USD" in gold_row  # 3 x 0.10 lot x 100 oz x 0.70, on the bid
    assert "62.0 pips" in gold_row  # to the stop-loss
    assert "88.0 pips" in gold_row  # to the partial take-profit
    assert "188.0 pips" in gold_row  # to the take-profit
    yen_row = browser.find_element(By.ID, f"live-signal-{yen.pk}").text
    assert "4,000.00 JPY" in yen_row
    assert "70.0 pips" in yen_row
    # per client, the equity its heartbeats reported and the floating P&L per currency
    client = gold_positions[0].client
    client_row = browser.find_element(By.ID, f"live-client-{client.pk}").text
    assert "9,850.00" in client_row
    assert "1.50 %" in client_row
    assert "2,000.00 JPY · 7.00 USD" in client_row
    refresh = browser.find_element(By.ID, "auto-refresh")  # reloads itself, unless paused
    assert refresh.get_attribute("data-seconds") == "5"
    assert browser.find_element(By.ID, "pause-refresh").is_displayed()
    assert no_sideways_scroll(browser)
    screenshot(browser, "console-live-book.png")

    # and the positions table, with its live columns
    browser.get(f"{live_server.url}/admin/positions/openposition/")
    wait_for(browser, By.ID, "result_list")
    headers = browser.find_element(By.CSS_SELECTOR, "#result_list thead").text.upper()
    for header in ("Bid/Ask", "Float P&L", "To stop", "To TP"):
        assert header.upper() in headers  # the admin shows them in capitals
    row = browser.find_element(By.XPATH, f'//input[@value="{yen_positions[0].pk}"]/ancestor::tr').text
    assert "149.780\n149.800" in row  # bid over ask: a narrow column
    assert "2,000.00 JPY" in row
    assert "70.0 pips" in row
    assert "80.0 pips" in row
    # room for the live figures: no ticket, close price or realized P&L on live positions
    assert "TICKET" not in headers
    assert "REALIZED" not in headers
    assert browser.find_element(By.ID, "live-book-tool").is_displayed()
    # every column in the window at 1366 px, the levels' at the table's right end
    assert no_sideways_scroll(browser)
    live_cell = browser.find_element(By.CSS_SELECTOR, "#result_list td.field-live_levels")
    assert live_cell.is_displayed()
    assert live_cell.rect["x"] + live_cell.rect["width"] <= 1366
    screenshot(browser, "console-positions-live.png")
