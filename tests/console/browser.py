"""The owner console in a real headless Chromium: the driver, the owner's login and the
helpers every browser test uses. Fixtures ``browser`` and ``owner_session`` live in
tests/console/conftest.py; screenshots go to test-artifacts/ at 1366x900, the smallest
laptop screen the console is built for.

Debian's chromium and chromedriver, started explicitly (never Selenium Manager, which
would try to download a browser). The tests skip only when no Chromium or chromedriver
is installed at all; ``make test`` installs them when it can (root with apt-get).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.helpers import REPO_ROOT

ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER = ("/usr/bin/chromedriver", "chromedriver")
WIDTH, HEIGHT = 1366, 900
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    f"--window-size={WIDTH},{HEIGHT}",
)
OWNER_PASSWORD = "a-long-test-password-for-the-owner"
WAIT_SECONDS = 15


def _installed(candidates: tuple[str, ...]) -> str | None:
    for candidate in candidates:
        path = candidate if os.path.isabs(candidate) else shutil.which(candidate)
        if path and os.access(path, os.X_OK):
            return path
    return None


def chromium_driver(profile_dir: Path) -> Iterator[webdriver.Chrome]:
    """A headless Chromium at 1366x900, or a skip naming what is not installed."""
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
    options.add_argument(f"--user-data-dir={profile_dir}")
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("SE_OFFLINE", "true")  # belt and braces: Selenium Manager never downloads
        driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
    driver.set_page_load_timeout(30)
    # The page's own viewport at 1366x900: a headless window of that size keeps some of it
    # for the browser's frame (1366x757 seen), so the viewport is set, not the window.
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False},
    )
    yield driver
    driver.quit()


def log_in(browser, base_url: str, username: str, password: str) -> None:
    """Through the real login form (the admin index, with the dashboard link, answers)."""
    browser.delete_all_cookies()
    browser.get(f"{base_url}/admin/login/")
    browser.find_element(By.ID, "id_username").send_keys(username)
    browser.find_element(By.ID, "id_password").send_keys(password)
    browser.find_element(By.CSS_SELECTOR, "input[type=submit], button[type=submit]").click()
    wait_for(browser, By.ID, "monitor-dashboard-link")


def wait_for(browser, by: str, value: str):
    return WebDriverWait(browser, WAIT_SECONDS).until(
        expected_conditions.presence_of_element_located((by, value))
    )


def screenshot(browser, name: str) -> Path:
    """The viewport (1366x900) as test-artifacts/<name>, checked to be a real PNG of that size."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert browser.save_screenshot(str(path))
    assert _png_size(path.read_bytes()) == (WIDTH, HEIGHT)
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return path


def no_sideways_scroll(browser) -> bool:
    """The page fits the window's width: nothing to scroll sideways to read."""
    return browser.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


def _png_size(data: bytes) -> tuple[int, int]:
    # The IHDR chunk, first after the signature: width and height, 4 bytes each, big-endian.
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
