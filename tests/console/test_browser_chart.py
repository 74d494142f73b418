"""A signal's chart in a real headless Chromium: the owner goes from the signal's page to
its chart, drawn from a life that went through the real feed, sweep and close paths.
Screenshot: test-artifacts/console-signal-chart.png (1366x900)."""

from __future__ import annotations

from datetime import UTC, timedelta

import pytest
import time_machine
from django.utils import timezone
from selenium.webdriver.common.by import By

from tests.console.browser import no_sideways_scroll, screenshot, wait_for
from tests.console.chart_story import BIDS, trade_story

pytestmark = [pytest.mark.slow]


def test_the_owner_opens_a_signals_chart(owner_session, live_server, redis_client):
    # given: a signal's life from this minute on (filled, a partial, the trailing stop), the
    # server's clock a minute after its end (the database's clock stamps commands as it runs)
    story = trade_story(timezone.now().astimezone(UTC).replace(second=0, microsecond=0))
    browser = owner_session
    with time_machine.travel(story.end + timedelta(minutes=1), tick=True):
        # when: the owner opens the signal and follows its chart link
        browser.get(f"{live_server.url}/admin/signals_app/signal/{story.signal.pk}/change/")
        browser.find_element(By.ID, "signal-chart").click()
        chart = wait_for(browser, By.CSS_SELECTOR, "svg.signal-chart")

    # then: the candles and the level lines are drawn, and the chart fits the window
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.candle-body")) == len(BIDS)
    levels = {
        element.get_attribute("class"): element.find_element(By.CSS_SELECTOR, "text").text
        for element in chart.find_elements(By.CSS_SELECTOR, "g.level")
    }
    assert levels == {
        "level level-entry": "Entry 1.10000",
        "level level-sl": "Stop-loss 1.09800",
        "level level-tp": "Take-profit 1.10600",
        "level level-partial": "Partial TP #0 (50%) 1.10200",
    }
    assert len(chart.find_elements(By.CSS_SELECTOR, "path.effective-stop")) >= 2
    assert len(chart.find_elements(By.CSS_SELECTOR, "path.fill-marker")) == 1
    assert len(chart.find_elements(By.CSS_SELECTOR, "path.close-marker")) == 2
    box = chart.rect
    assert box["width"] > 900  # drawn at the page's width, not a thumbnail
    assert box["x"] + box["width"] <= browser.execute_script("return document.documentElement.clientWidth")
    assert no_sideways_scroll(browser)
    # the page's title and the whole chart on one screen
    assert chart.rect["y"] + chart.rect["height"] <= 900
    screenshot(browser, "console-signal-chart.png")
