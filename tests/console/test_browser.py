"""The owner console in a real headless Chromium against a live server: log in, read the
dashboard, close a position through the confirmation page, test a breach, rotate a
device secret. Screenshots go to test-artifacts/ for a person to look at.

Debian's chromium and chromedriver, started explicitly (never Selenium Manager, which
would try to download a browser). The tests skip only when no Chromium or chromedriver
is installed at all; ``make test`` installs them when it can (root with apt-get).
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from django.contrib.auth import get_user_model
from django.utils import timezone
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

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
from tests.console.helpers import command_at
from tests.ea_helpers import make_device, signed_headers
from tests.factories import make_signal, open_book
from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.slow]

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1800",
)
OWNER_PASSWORD = "a-long-test-password-for-the-owner"
WAIT_SECONDS = 15


def _installed(candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = _installed(CHROMIUM), _installed(CHROMEDRIVER)
    if chromium is None or chromedriver is None:
        missing = " and ".join(
            name for name, path in (("Chromium", chromium), ("chromedriver", chromedriver)) if path is None
        )
        pytest.skip(
            f"no {missing} on this machine (looked for {', '.join(CHROMIUM + CHROMEDRIVER)}); "
            "`make test` installs Debian's chromium and chromium-driver when run as root with apt-get"
        )
    options = Options()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager never downloads
        driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture
def owner_session(browser, live_server, redis_client):
    """A browser logged in as the owner through the real login form."""
    get_user_model().objects.create_superuser("owner", "owner@example.com", OWNER_PASSWORD)
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys("owner")
    browser.find_element(By.ID, "id_password").send_keys(OWNER_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
    _wait_for(browser, By.ID, "monitor-dashboard-link")  # the admin index, with the dashboard link
    return browser


def _wait_for(browser, by: str, value: str):
    return WebDriverWait(browser, WAIT_SECONDS).until(
        expected_conditions.presence_of_element_located((by, value))
    )


def _screenshot(browser, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert browser.save_screenshot(str(path))
    return path


def _assert_png(path: Path) -> None:
    assert path.is_file()
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


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
    _wait_for(browser, By.ID, "figure-monitor")
    assert browser.current_url == f"{live_server.url}/admin/monitor/"

    # then
    assert browser.find_element(By.CSS_SELECTOR, "#figure-monitor .value").text == "running"
    assert browser.find_element(By.CSS_SELECTOR, "#figure-open_positions .value").text == "4"
    assert browser.find_element(By.CSS_SELECTOR, "#figure-open_alerts .value").text == "1"
    closing = browser.find_element(By.CSS_SELECTOR, "#figure-closing_positions .value").text
    assert closing == "0 closing · 1 close failed"
    refresh = browser.find_element(By.CSS_SELECTOR, 'meta[http-equiv="refresh"]')
    assert refresh.get_attribute("content") == "10"
    for chart in ("chart-activity", "chart-sweeps"):
        drawn = browser.find_element(By.CSS_SELECTOR, f"#{chart} svg.chart")
        assert drawn.size["width"] > 300
        assert drawn.size["height"] > 80
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-activity svg rect")) >= 10
    assert len(browser.find_elements(By.CSS_SELECTOR, "#chart-sweeps svg rect")) == 120
    path = _screenshot(browser, "console-dashboard.png")
    _assert_png(path)

    # and the open-alerts figure leads to the open alerts
    browser.find_element(By.CSS_SELECTOR, "#figure-open_alerts .value a").click()
    _wait_for(browser, By.ID, "result_list")
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
    _wait_for(browser, By.ID, "close-form")
    assert "1 of 1 position(s) will get a close command" in browser.find_element(By.ID, "close-summary").text
    assert not CloseCommand.objects.exists()  # the confirmation page closes nothing
    _assert_png(_screenshot(browser, "console-close-confirmation.png"))
    Select(browser.find_element(By.ID, "id_reason")).select_by_value("news")
    browser.find_element(By.ID, "id_note").send_keys("FOMC in ten minutes")
    browser.find_element(By.ID, "confirm-close").click()
    message = _wait_for(browser, By.CSS_SELECTOR, "ul.messagelist li")

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
    _wait_for(browser, By.ID, "test-breach-form")
    browser.find_element(By.ID, "id_price").send_keys("2644.80")
    browser.find_element(By.ID, "run-test-breach").click()
    verdict = _wait_for(browser, By.ID, "breach-verdict")

    # then
    assert verdict.text == "Would trigger: stop-loss"
    assert browser.find_element(By.ID, "judged-price").text == "2644.80 (the bid)"
    assert browser.find_element(By.ID, "hidden-sl").text == "2645.00"
    assert browser.find_element(By.ID, "breach-open-positions").text.startswith("3 open position(s)")
    path = _screenshot(browser, "console-test-breach.png")
    _assert_png(path)
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
    shown = _wait_for(browser, By.ID, "device-secret").text

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
