"""The owner console in a real headless Chromium against a live server: log in, read the
dashboard, close a position through the confirmation page, test a breach, rotate a
device secret. Screenshots go to test-artifacts/ for a person to look at.

The browser and the owner's login: tests/console/browser.py and conftest.py.
"""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.utils import timezone
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from ea_gateway.models import Device
from monitoring.models import Heartbeat
from positions.alerts import alert_raise
from positions.choices import (
    CLOSED_STATUS_FOR,
    AlertKind,
    CloseCommandStatus,
    CloseReason,
    PositionStatus,
)
from positions.models import CloseCommand, OpenPosition
from positions.quotes import Quote, quote_store
from positions.sweep_history import SweepSummary, sweep_record
from tests.console.browser import screenshot, wait_for
from tests.console.helpers import command_at
from tests.ea_helpers import make_device, signed_headers
from tests.factories import make_signal, open_book

pytestmark = [pytest.mark.slow]


def _some_history(redis_client) -> list[OpenPosition]:
    """A monitor with a day behind it: sweeps, breaches and closes over the hours, an alert."""
    Heartbeat.objects.create(name="beat", last_seen_at=timezone.now())
    for index in range(120):
        seconds = 0.004 + 0.003 * (index % 7) + (0.02 if index == 90 else 0)
        sweep_record(
            SweepSummary(at=time.time() - 122 + index, seconds=seconds, signals=14, commands=0, dry_run=False)
        )
    signal = make_signal(sl="2645.00", tp="2670.00")
    positions = open_book(signal, 14)
    now = time.time()
    quote_store(Quote("XAUUSD", bid=Decimal("2651.20"), ask=Decimal("2651.60"), ts=now), received_at=now)
    for index, position in enumerate(positions[:10]):
        hours_ago = timedelta(hours=2 * index + 0.5)
        reason = CloseReason.STOP_LOSS if index % 3 else CloseReason.TAKE_PROFIT
        expired = index == 4
        command_at(
            position,
            reason=reason,
            created_ago=hours_ago,
            status=CloseCommandStatus.EXPIRED if expired else CloseCommandStatus.EXECUTED,
            completed_ago=hours_ago - timedelta(seconds=2),
            trigger_received_ago=hours_ago + timedelta(seconds=1),
        )
        # where the ack (or the expiry) would have left the position
        OpenPosition.objects.filter(pk=position.pk).update(
            status=PositionStatus.CLOSE_FAILED if expired else CLOSED_STATUS_FOR[reason]
        )
    alert_raise(kind=AlertKind.SPIKE, dedupe_key="spike:XAUUSD", message="XAUUSD jumped 3 % in one quote")
    return positions[10:]


def test_the_owner_reads_the_dashboard(owner_session, live_server, redis_client):
    # given
    _some_history(redis_client)
    browser = owner_session
    browser.get(f"{live_server.url}/admin/")

    # when
    browser.find_element(By.ID, "monitor-dashboard-link").click()
    wait_for(browser, By.ID, "figure-monitor")
    assert browser.current_url == f"{live_server.url}/admin/monitor/"

    # then
    assert browser.find_element(By.CSS_SELECTOR, "#figure-monitor .value").text == "running"
    assert browser.find_element(By.CSS_SELECTOR, "#figure-open_positions .value").text == "4"
    assert browser.find_element(By.CSS_SELECTOR, "#figure-open_alerts .value").text == "1"
    closing = browser.find_element(By.CSS_SELECTOR, "#figure-closing_positions .value").text
    assert closing == "0 closing · 1 close failed"
    refresh = browser.find_element(By.ID, "auto-refresh")  # reloads itself, unless paused
    assert refresh.get_attribute("data-seconds") == "10"
    for chart in ("chart-activity", "chart-sweeps"):
        drawn = browser.find_element(By.CSS_SELECTOR, f"#{chart} svg.chart")
        assert drawn.size["width"] > 300
        assert drawn.size["height"] > 80
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-activity svg rect")) >= 10
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-sweeps svg rect")) == 120
    screenshot(browser, "console-dashboard.png")

    # and the open-alerts figure leads to the open alerts
    browser.find_element(By.CSS_SELECTOR, "#figure-open_alerts .value a").click()
    wait_for(browser, By.ID, "result_list")
    assert "XAUUSD jumped" in browser.find_element(By.ID, "result_list").text


def test_the_owner_closes_a_position_through_the_confirmation_page(owner_session, live_server):
    # given
    signal = make_signal(sl="2645.00", tp="2670.00")
    position, untouched = open_book(signal, 2)
    browser = owner_session
    browser.get(f"{live_server.url}/admin/positions/openposition/")

    # when: select it, choose the action, confirm with a reason
    browser.find_element(By.CSS_SELECTOR, f'input.action-select[value="{position.pk}"]').click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("close_selected")
    browser.find_element(By.CSS_SELECTOR, 'button[name="index"]').click()
    wait_for(browser, By.ID, "close-form")
    assert "1 of 1 position(s) will get a close command" in browser.find_element(By.ID, "close-summary").text
    assert not CloseCommand.objects.exists()  # the confirmation page closes nothing
    screenshot(browser, "console-close-confirmation.png")
    Select(browser.find_element(By.ID, "id_reason")).select_by_value("news")
    browser.find_element(By.ID, "id_note").send_keys("FOMC in ten minutes")
    browser.find_element(By.ID, "confirm-close").click()
    message = wait_for(browser, By.CSS_SELECTOR, "ul.messagelist li")

    # then
    assert message.text == "1 close command(s) queued."
    command = CloseCommand.objects.get()
    assert (command.position_id, command.reason, command.note) == (
        position.pk,
        CloseReason.MANUAL,
        "news: FOMC in ten minutes",
    )
    assert OpenPosition.objects.get(pk=position.pk).status == PositionStatus.CLOSING
    assert OpenPosition.objects.get(pk=untouched.pk).status == PositionStatus.OPEN


def test_the_owner_tests_a_breach_and_nothing_is_closed(owner_session, live_server):
    # given
    signal = make_signal(sl="2645.00", tp="2670.00")
    open_book(signal, 3)
    browser = owner_session
    browser.get(f"{live_server.url}/admin/signals_app/signal/{signal.pk}/change/")

    # when
    browser.find_element(By.ID, "test-breach").click()
    wait_for(browser, By.ID, "test-breach-form")
    browser.find_element(By.ID, "id_price").send_keys("2644.80")
    browser.find_element(By.ID, "run-test-breach").click()
    verdict = wait_for(browser, By.ID, "breach-verdict")

    # then
    assert verdict.text == "Would trigger: stop-loss"
    assert browser.find_element(By.ID, "judged-price").text == "2644.80 (the bid)"
    assert browser.find_element(By.ID, "hidden-sl").text == "2645.00"
    assert browser.find_element(By.ID, "breach-open-positions").text.startswith("3 open position(s)")
    screenshot(browser, "console-test-breach.png")
    assert not CloseCommand.objects.exists()
    assert set(OpenPosition.objects.values_list("status", flat=True)) == {PositionStatus.OPEN}


def test_the_owner_rotates_a_device_secret_and_only_the_new_one_works(owner_session, live_server):
    # given: an EA device whose current secret signs requests
    credentials = make_device(name="alice's EA")
    old_secret = credentials.secret
    assert _poll(live_server.url, credentials.device.key_id, old_secret) == 200
    browser = owner_session
    browser.get(f"{live_server.url}/admin/ea_gateway/device/{credentials.device.pk}/change/")

    # when
    browser.find_element(By.ID, "rotate-secret").click()
    shown = wait_for(browser, By.ID, "device-secret").text

    # then
    assert shown
    assert shown != old_secret
    assert Device.objects.get(pk=credentials.device.pk).secret == shown
    assert _poll(live_server.url, credentials.device.key_id, shown) == 200
    assert _poll(live_server.url, credentials.device.key_id, old_secret) == 401


def _poll(base_url: str, key: str, secret: str) -> int:
    path = "/api/v1/client/poll"
    headers = signed_headers(key=key, secret=secret, method="GET", path=path)
    return requests.get(f"{base_url}{path}", headers=headers, timeout=10).status_code
