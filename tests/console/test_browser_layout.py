"""The console's lists in a real Chromium at 1366x900, the smallest laptop screen it is
built for: with a working day's rows (long client names, every status), each list fits
the window's width (nothing to scroll sideways to), its status badges stay on one line
and whole, and every resource a page loads comes from the console's own origin (no CDN,
no web font from elsewhere). Screenshots go to test-artifacts/.

The browser and the owner's login: tests/console/browser.py and conftest.py.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from positions.models import OpenPosition
from tests.console.browser import no_sideways_scroll, screenshot, wait_for
from tests.console.helpers import CLIENT_NAMES, a_busy_desk

pytestmark = [pytest.mark.slow]

# (changelist path, screenshot or None, text the list must show)
LISTS = [
    ("/admin/positions/openposition/?state=all", "console-positions.png", CLIENT_NAMES[1]),
    # the owner's default view: live positions, with the live columns (bid/ask, P&L, levels)
    ("/admin/positions/openposition/", None, "Float P&L"),
    ("/admin/positions/openposition/?state=closed", None, CLIENT_NAMES[0]),
    ("/admin/positions/closecommand/", "console-close-commands.png", "Expired"),
    ("/admin/ea_gateway/device/", "console-devices.png", "Owner price feed (LMAX)"),
    ("/admin/signals_app/auditevent/", "console-audit.png", "signal.published"),
    ("/admin/signals_app/signal/", None, "XAUUSD"),
    ("/admin/signals_app/approval/", None, CLIENT_NAMES[0]),
    ("/admin/signals_app/outboxmessage/", None, "desk0@northwind-example.com"),
    ("/admin/positions/alert/", None, "XAUUSD jumped 3.1 %"),
]

# Every badge (unfold's label, a span or link with "uppercase" among its classes) in the
# list: its text on one line (one client rect) and not cut (nothing hidden past its width).
BADGES_WHOLE = """
const badges = [...document.querySelectorAll('#result_list td span.uppercase, #result_list td a.uppercase')];
return badges.map(badge => ({
  text: badge.textContent.trim(),
  lines: badge.getClientRects().length,
  height: badge.getBoundingClientRect().height,
  cut: badge.scrollWidth > badge.clientWidth + 1,
}));
"""

COLUMN_WIDTHS = """
return [...document.querySelectorAll('#result_list thead th')].map(
  th => `${th.textContent.trim()}: ${Math.round(th.getBoundingClientRect().width)}`);
"""

# Every resource the page asked for: what the browser fetched (the Resource Timing
# entries), and the stylesheets, scripts, fonts and images the document names.
RESOURCES = """
const urls = performance.getEntriesByType('resource').map(entry => entry.name);
for (const sheet of document.styleSheets) { if (sheet.href) urls.push(sheet.href); }
for (const script of document.scripts) { if (script.src) urls.push(script.src); }
for (const element of document.querySelectorAll('link[href], img[src], iframe[src], source[src]')) {
  urls.push(element.href || element.src);
}
return urls;
"""


@pytest.fixture
def busy_desk(settings):
    settings.OWNER_ALERT_EMAILS = ["owner@veilstop-example.com"]  # alerts reach the outbox too
    return a_busy_desk()


def test_every_list_fits_1366_pixels_with_whole_status_badges(owner_session, live_server, busy_desk):
    browser = owner_session
    assert browser.execute_script("return window.innerWidth") == 1366
    for path, picture, expected in LISTS:
        # when
        browser.get(f"{live_server.url}{path}")
        table = wait_for(browser, By.ID, "result_list")

        # then
        assert expected.lower() in table.text.lower(), path  # badges are upper case
        assert no_sideways_scroll(browser), f"{path} scrolls sideways at 1366 px"
        table_right = browser.execute_script(
            "return document.getElementById('result_list').getBoundingClientRect().right"
        )
        widths = browser.execute_script(COLUMN_WIDTHS)
        assert table_right <= 1366, f"{path}: the table ends at {table_right} px; columns {widths}"
        badges = browser.execute_script(BADGES_WHOLE)
        assert badges, f"{path} shows no status badge"
        for badge in badges:
            assert badge["lines"] == 1, f"{path}: badge {badge} wraps"
            assert badge["height"] < 30, f"{path}: badge {badge} wraps"
            assert not badge["cut"], f"{path}: badge {badge} is cut"
        if picture:
            screenshot(browser, picture)


def test_the_console_loads_nothing_from_another_origin(owner_session, live_server, busy_desk):
    browser = owner_session
    origin = urlsplit(live_server.url)
    pages = {
        "/admin/monitor/": "figure-monitor",
        "/admin/positions/openposition/": "result_list",
        f"/admin/signals_app/signal/{busy_desk.signals[0].pk}/change/": "signal_form",
    }
    for path, element in pages.items():
        browser.get(f"{live_server.url}{path}")
        wait_for(browser, By.ID, element)
        browser.execute_script("return document.fonts.ready")  # the web fonts asked for

        urls = browser.execute_script(RESOURCES)

        # unfold's own CSS, fonts and scripts, served here
        assert any("/static/unfold/css/styles.css" in url for url in urls), path
        assert any(url.endswith(".woff2") for url in urls), f"{path} loaded no font of its own"
        foreign = [
            url
            for url in urls
            if not url.startswith("data:")
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (origin.scheme, origin.netloc)
        ]
        assert foreign == [], f"{path} loads from another origin: {foreign}"


def test_our_list_filters_work_in_the_themes_filter_panel(owner_session, live_server, busy_desk):
    # given
    browser = owner_session
    client = busy_desk.positions[0].client
    browser.get(f"{live_server.url}/admin/positions/openposition/?state=all")
    wait_for(browser, By.ID, "result_list")

    # when: the panel opens, and the client filter (an id typed in) is used
    browser.find_element(By.XPATH, "//a[starts-with(normalize-space(), 'Filters')]").click()
    client_id = browser.find_element(By.CSS_SELECTOR, '#changelist-filter input[name="client"]')
    WebDriverWait(browser, 5).until(lambda driver: client_id.is_displayed())
    assert browser.find_element(By.CSS_SELECTOR, 'input[type="date"][name="opened_at_from"]').is_displayed()
    screenshot(browser, "console-positions-filters.png")
    client_id.send_keys(str(client.pk))
    client_id.submit()
    WebDriverWait(browser, 10).until(lambda driver: f"client={client.pk}" in driver.current_url)
    wait_for(browser, By.ID, "result_list")

    # then
    assert f"client={client.pk}" in browser.current_url
    assert "state=all" in browser.current_url  # the other filters are kept
    rows = browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr")
    assert len(rows) == OpenPosition.objects.filter(client=client).count() == 3
    assert all(client.name in row.text for row in rows)
