"""Accessibility of the console's main pages, checked by axe-core in a real Chromium: no
violation of impact "serious" or "critical" (missing labels, text below WCAG AA contrast,
unnamed buttons and links, ...) on the login page, the two-factor code page, the index,
the monitor dashboard, the positions list (all, and the live one with the owner's live
columns), the live book, a signal's chart, a signal's and a device's page, the guards
page and test-breach.

axe-core is pinned in tests/a11y/package.json (its package-lock.json committed) and
installed by ``make browser-deps`` (``npm ci --prefix tests/a11y``); without it, as
without Chromium, these tests skip and say why.
"""

from __future__ import annotations

import time

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.console.browser import OWNER_PASSWORD, no_sideways_scroll, screenshot, wait_for
from tests.console.helpers import a_busy_desk
from tests.helpers import REPO_ROOT

pytestmark = [pytest.mark.slow]

AXE = REPO_ROOT / "tests" / "a11y" / "node_modules" / "axe-core" / "axe.min.js"
BLOCKING = {"serious", "critical"}

# (rule, selector) pairs let through, each because the markup is django-unfold's own (its
# templates, not ours) and nothing our templates or CSS can change fixes it; say why next to
# each. Empty: every violation found so far was ours, and is fixed.
UNFOLD_EXCEPTIONS: set[tuple[str, str]] = set()

RUN_AXE = """
const done = arguments[arguments.length - 1];
const tags = ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'best-practice'];
const options = {runOnly: {type: 'tag', values: tags}};
axe.run(document, options)
  .then(results => done(results.violations.map(violation => ({
    id: violation.id,
    impact: violation.impact,
    help: violation.help,
    nodes: violation.nodes.map(node => ({target: node.target.join(' '), summary: node.failureSummary})),
  }))))
  .catch(error => done([{id: 'axe-error', impact: 'critical', help: String(error), nodes: []}]));
"""


@pytest.fixture(scope="module")
def axe_source() -> str:
    if not AXE.exists():
        pytest.skip(
            f"axe-core is not installed ({AXE.relative_to(REPO_ROOT)} missing): "
            "`make browser-deps` installs it (npm ci --prefix tests/a11y), which needs npm"
        )
    return AXE.read_text()


def _violations(browser, axe_source: str) -> list[dict]:
    browser.set_script_timeout(60)
    browser.execute_script(axe_source)
    blocking = []
    for violation in browser.execute_async_script(RUN_AXE):
        nodes = [
            node for node in violation["nodes"] if (violation["id"], node["target"]) not in UNFOLD_EXCEPTIONS
        ]
        if violation["impact"] in BLOCKING and (nodes or not violation["nodes"]):
            blocking.append({**violation, "nodes": nodes})
    return blocking


def _report(page: str, violations: list[dict]) -> str:
    lines = [f"{page}: {len(violations)} serious or critical accessibility violation(s)"]
    for violation in violations:
        lines.append(f"- {violation['id']} ({violation['impact']}): {violation['help']}")
        lines.extend(f"    {node['target']} :: {node['summary']}" for node in violation["nodes"][:5])
    return "\n".join(lines)


def test_the_login_page_is_accessible(browser, live_server, axe_source, db):
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/")
    wait_for(browser, By.ID, "id_username")

    violations = _violations(browser, axe_source)
    screenshot(browser, "a11y-login.png")

    assert violations == [], _report("login", violations)


@override_settings(STAFF_TWO_FACTOR=True)
def test_the_two_factor_page_is_accessible(browser, live_server, axe_source, redis_client):
    # given: the password step done, the owner has no authenticator yet
    get_user_model().objects.create_superuser("owner", "owner@example.com", OWNER_PASSWORD)
    browser.delete_all_cookies()
    browser.get(f"{live_server.url}/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys("owner")
    browser.find_element(By.ID, "id_password").send_keys(OWNER_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]").click()
    wait_for(browser, By.ID, "two-factor-qr")
    failures = []
    for state in ("enrolment", "wrong code"):
        if state == "wrong code":
            browser.find_element(By.ID, "id_otp_token").send_keys("000000")
            browser.find_element(By.CSS_SELECTOR, "#two-factor-form input[type=submit]").click()
            wait_for(browser, By.CLASS_NAME, "errornote")

        # when
        violations = _violations(browser, axe_source)

        # then (no screenshot: the enrolment page holds the secret)
        assert no_sideways_scroll(browser), state
        if violations:
            failures.append(_report(f"two-factor {state}", violations))
    assert failures == [], "\n\n".join(failures)


def test_the_main_console_pages_are_accessible(owner_session, live_server, axe_source, settings):
    # given
    settings.OWNER_ALERT_EMAILS = ["owner@veilstop-example.com"]
    desk = a_busy_desk()
    signal, device = desk.signals[0], desk.devices[0]
    pages = {
        "admin index": ("/admin/", "monitor-dashboard-link"),
        "monitor dashboard": ("/admin/monitor/", "figure-monitor"),
        "positions list": ("/admin/positions/openposition/?state=all", "result_list"),
        "live positions list": ("/admin/positions/openposition/", "result_list"),
        "live book": ("/admin/positions/openposition/live/", "live-signals"),
        "signal chart": (f"/admin/positions/openposition/signal/{signal.pk}/chart/", "chart-levels"),
        "signal page": (f"/admin/signals_app/signal/{signal.pk}/change/", "test-breach"),
        "device page": (f"/admin/ea_gateway/device/{device.pk}/change/", "rotate-secret"),
        "guards page": ("/admin/guards/", "client-guards"),
        "test breach": (f"/admin/positions/openposition/signal/{signal.pk}/test-breach/", "test-breach-form"),
        "close confirmation": (f"/admin/positions/openposition/{desk.positions[-1].pk}/close/", "close-form"),
    }
    failures = []
    for page, (path, element) in pages.items():
        # when
        owner_session.get(f"{live_server.url}{path}")
        wait_for(owner_session, By.ID, element)
        violations = _violations(owner_session, axe_source)
        screenshot(owner_session, f"a11y-{page.replace(' ', '-')}.png")

        # then
        if violations:
            failures.append(_report(page, violations))

    # and the page a rotated secret is shown on once (no screenshot: it holds the secret)
    owner_session.get(f"{live_server.url}/admin/ea_gateway/device/{device.pk}/change/")
    wait_for(owner_session, By.ID, "rotate-secret").click()
    wait_for(owner_session, By.ID, "device-secret")
    violations = _violations(owner_session, axe_source)
    if violations:
        failures.append(_report("device secret", violations))
    assert failures == [], "\n\n".join(failures)


def test_the_dashboard_refreshes_itself_until_the_reader_pauses_it(owner_session, live_server, monkeypatch):
    # given: a short interval (the page reads it on each request)
    monkeypatch.setattr("monitoring.dashboard.REFRESH_SECONDS", 2)
    browser = owner_session
    browser.get(f"{live_server.url}/admin/monitor/")
    wait_for(browser, By.ID, "pause-refresh")
    browser.execute_script("window.loadedBefore = true")

    # when: nothing is done, the page loads again
    WebDriverWait(browser, 10).until(lambda driver: driver.execute_script("return !window.loadedBefore"))
    wait_for(browser, By.ID, "pause-refresh")

    # then: paused, it stays as it is
    browser.execute_script("window.loadedBefore = true")
    browser.find_element(By.ID, "pause-refresh").click()
    assert browser.find_element(By.ID, "pause-refresh").get_attribute("aria-pressed") == "true"
    time.sleep(4)
    assert browser.execute_script("return window.loadedBefore") is True
    assert browser.find_element(By.ID, "auto-refresh").get_attribute("data-state") == "paused"


@pytest.mark.urls("tests.console.plain_page_urls")
def test_a_new_page_in_plain_html_fits_the_theme(owner_session, live_server, axe_source):
    """How other console pages are written (README, The owner console): this one shows the
    theme gives their plain HTML its look, and an accessible one."""
    browser = owner_session
    browser.get(f"{live_server.url}/admin/plain/")
    wait_for(browser, By.ID, "plain-table")

    style = browser.execute_script(
        """
        const css = (selector, property) => getComputedStyle(document.querySelector(selector))[property];
        return {
          body: document.body.className,
          title: document.querySelector('#header-inner h1').textContent.trim(),
          module_border: css('#plain-module', 'borderTopWidth'),
          heading_weight: css('#plain-module h2', 'fontWeight'),
          cell_padding: css('#plain-table td', 'paddingTop'),
          row_line: css('#plain-table td', 'borderBottomWidth'),
          link_line: css('#content-main p a', 'textDecorationLine'),
          tool: document.getElementById('plain-tool').closest('#header-inner') !== null,
        };
        """
    )
    assert "console-page" in style["body"].split()
    assert style["title"] == "A plain page"
    assert style["module_border"] == "1px"
    assert style["heading_weight"] == "600"
    assert style["cell_padding"] != "0px"
    assert style["row_line"] == "1px"
    assert style["link_line"] == "underline"
    assert style["tool"]  # nav-global: in the header's action bar
    assert no_sideways_scroll(browser)
    screenshot(browser, "console-plain-page.png")
    violations = _violations(browser, axe_source)
    assert violations == [], _report("plain page", violations)
