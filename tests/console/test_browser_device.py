"""The owner creates an EA device in a real Chromium: picks the client by name through the
autocomplete, saves, and reads the secret once on the page the save redirects to; a
reload of that page no longer shows it. Screenshot test-artifacts/console-device-created.png
(a throwaway secret of a test database)."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from ea_gateway.models import Device
from tests.console.browser import WAIT_SECONDS, no_sideways_scroll, screenshot, wait_for
from tests.factories import ClientFactory

pytestmark = [pytest.mark.slow]


def test_the_owner_creates_a_device_for_a_client_picked_by_name(owner_session, live_server):
    # given
    ClientFactory(name="Bob Marsh")
    alice = ClientFactory(name="Alice Brightwater")
    browser = owner_session
    browser.get(f"{live_server.url}/admin/ea_gateway/device/add/")

    # when: name, role, and the client found by typing part of its name
    browser.find_element(By.ID, "id_name").send_keys("Alice's MT5")
    browser.find_element(By.CSS_SELECTOR, "#id_client + .select2 .select2-selection").click()
    search = wait_for(browser, By.CSS_SELECTOR, ".select2-container--open .select2-search__field")
    search.send_keys("bright")
    WebDriverWait(browser, WAIT_SECONDS).until(
        expected_conditions.text_to_be_present_in_element(
            (By.CSS_SELECTOR, ".select2-results__option--highlighted"), "Alice Brightwater"
        )
    )
    search.send_keys(Keys.ENTER)
    browser.find_element(By.CSS_SELECTOR, "[type=submit][name=_save]").click()
    shown = wait_for(browser, By.ID, "device-secret")

    # then: one device, of Alice, whose secret the page shows once
    device = Device.objects.get()
    assert (device.name, device.client_id) == ("Alice's MT5", alice.pk)
    assert shown.text == device.secret
    assert no_sideways_scroll(browser)
    screenshot(browser, "console-device-created.png")
    browser.refresh()
    assert not browser.find_elements(By.ID, "device-secret")
    assert device.secret not in browser.page_source
    assert Device.objects.count() == 1
