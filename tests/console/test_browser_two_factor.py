"""Two-factor login in a real Chromium (STAFF_TWO_FACTOR on): the owner enrols by the
enrolment page's secret, logs in with a code, and a new login asks for the code again.
Screenshots: test-artifacts/console-two-factor-enroll.png (QR page) and
console-two-factor-login.png (code page), 1366x900."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings
from django_otp.plugins.otp_totp.models import TOTPDevice
from selenium.webdriver.common.by import By

from signals_app.choices import AuditAction
from tests.console.auth_helpers import audited, code_for, key_from_secret
from tests.console.browser import OWNER_PASSWORD, no_sideways_scroll, screenshot, wait_for

pytestmark = [pytest.mark.slow]


def _password_step(browser, base_url: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{base_url}/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys("owner")
    browser.find_element(By.ID, "id_password").send_keys(OWNER_PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]").click()


def _enter_code(browser, code: str) -> None:
    field = browser.find_element(By.ID, "id_otp_token")
    field.clear()
    field.send_keys(code)
    browser.find_element(By.CSS_SELECTOR, "#two-factor-form input[type=submit]").click()


@override_settings(STAFF_TWO_FACTOR=True)
def test_enrol_and_log_in_with_two_factors(browser, live_server, redis_client):
    owner = get_user_model().objects.create_superuser("owner", "owner@example.com", OWNER_PASSWORD)

    # the password step leads a user without an authenticator to enrolment
    _password_step(browser, live_server.url)
    wait_for(browser, By.ID, "two-factor-qr")
    qr = browser.find_element(By.CSS_SELECTOR, "#two-factor-qr svg")
    assert qr.size["width"] >= 150
    assert browser.find_element(By.CSS_SELECTOR, "label[for=id_otp_token]").text
    assert no_sideways_scroll(browser)
    screenshot(browser, "console-two-factor-enroll.png")

    # the app is set up from the secret the page shows; its code confirms the device
    key = key_from_secret(browser.find_element(By.ID, "two-factor-secret").text)
    assert key == TOTPDevice.objects.get(user=owner).bin_key
    _enter_code(browser, code_for(key))
    wait_for(browser, By.ID, "monitor-dashboard-link")
    assert TOTPDevice.objects.get(user=owner).confirmed

    # a new login: the password, then the code page
    _password_step(browser, live_server.url)
    wait_for(browser, By.ID, "two-factor-form")
    assert "/admin/two-factor/" in browser.current_url
    assert not browser.find_elements(By.ID, "two-factor-qr")  # no secret shown again
    assert no_sideways_scroll(browser)
    screenshot(browser, "console-two-factor-login.png")
    _enter_code(browser, code_for(key, steps_ahead=1))  # the enrolment's code is spent
    wait_for(browser, By.ID, "monitor-dashboard-link")
    browser.get(f"{live_server.url}/admin/monitor/")
    assert browser.find_elements(By.CSS_SELECTOR, ".monitor-foot, #content")

    assert len(audited(AuditAction.AUTH_TWO_FACTOR_ENROLLED, subject_id=owner.pk)) == 1
    assert len(audited(AuditAction.AUTH_TWO_FACTOR_PASSED, subject_id=owner.pk)) == 1
