"""A signal's chart in the console: the owner sees its candles, hidden levels, effective
stop, fills and closes, written by the real feed, sweep and close paths; nobody without
``signals_app.view_hidden_levels`` gets any of it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.utils import timezone

from positions.bars import Timeframe
from positions.candles import candles_between, candles_record
from positions.quotes import Quote
from positions.signal_chart import MARGIN_BARS, MAX_CANDLES
from positions.signal_exit import signal_exit
from signals_app.events import Actor
from tests.console.chart_story import BIDS, LEVELS, STOPS, trade_story
from tests.factories import UserFactory, make_signal
from tests.secrecy import find_levels, response_text

pytestmark = pytest.mark.django_db


def chart_url(signal) -> str:
    return f"/admin/positions/openposition/signal/{signal.pk}/chart/"


def signal_page_url(signal) -> str:
    return f"/admin/signals_app/signal/{signal.pk}/change/"


def this_minute() -> datetime:
    return timezone.now().astimezone(UTC).replace(second=0, microsecond=0)


@pytest.fixture
def story(redis_client):
    return trade_story(this_minute())


def record(symbol: str, prices: list[tuple[datetime, str]]) -> None:
    """Quotes through the candles' own writer (the feed's path calls it the same way)."""
    from signals_app.models import Instrument

    ids = {symbol: Instrument.objects.get(symbol=symbol).pk}
    candles_record(
        instrument_ids_by_symbol=ids,
        quotes=[Quote(symbol, Decimal(bid), Decimal(bid) + 1, moment.timestamp()) for moment, bid in prices],
    )


def test_the_owner_sees_the_signals_life_on_its_candles(owner_browser, story):
    # when: the owner opens the chart a minute after the story ended
    with time_machine.travel(story.end + timedelta(minutes=1), tick=False):
        response = owner_browser.get(chart_url(story.signal))

    # then: one candle per minute of quotes, in the default (shortest fitting) timeframe
    assert response.status_code == 200
    chart = response.context["chart"]
    assert chart.timeframe == Timeframe.M1
    assert [bar.start for bar in chart.bars] == [story.start + timedelta(minutes=n) for n in range(len(BIDS))]
    assert [bar.high for bar in chart.bars] == [max(map(Decimal, bids)) for bids in BIDS]
    page = response.content.decode()
    start = page.index('class="signal-chart"')
    svg = page[start : page.index("</svg>", start)]
    assert svg.count('class="candle-body"') == len(BIDS)
    # the levels, at the instrument's five digits
    for kind, text in (
        ("entry", "Entry 1.10000"),
        ("sl", "Stop-loss 1.09800"),
        ("tp", "Take-profit 1.10600"),
        ("partial", "Partial TP #0 (50%) 1.10200"),
    ):
        assert f'class="level level-{kind}"' in svg
        assert text in svg
    # the effective stop as the sweeps moved it, one step per minute it moved in, ended with the plan
    stops = [((step.at - story.start) // timedelta(minutes=1), step.price) for step in chart.stop_steps]
    assert [Decimal(price) for _, price in stops[:-1]] == [Decimal(price) for price in STOPS.values()]
    assert [minute for minute, _ in stops[1:-1]] == list(STOPS)[1:]
    assert stops[-1][1] is None
    assert svg.count('class="effective-stop"') == len(STOPS)
    assert "Effective stop 1.10200 (trailing)" in svg
    # one fill (▲, a buy) and the two closes with their reasons
    assert svg.count('class="fill-marker fill-buy"') == 1
    closes = re.findall(r'class="close-marker"><title>([^<]*)</title>', svg)
    assert len(closes) == 2
    assert closes[0].startswith("1 close(s): Hidden partial take-profit hit, at 1.10250 (mean), 0.05 lots")
    assert closes[1].startswith("1 close(s): Hidden trailing stop hit, at 1.10190 (mean), 0.05 lots")
    # the table of levels
    assert (
        '<td id="chart-stop">none now: the plan has ended (its last stop was 1.10200, '
        "after 3 move(s) in this period)</td>"
    ) in page
    assert '<td id="chart-fills">1</td>' in page
    assert '<td id="chart-closes">2</td>' in page


def test_a_longer_timeframe_folds_the_minutes(owner_browser, story):
    with time_machine.travel(story.end + timedelta(minutes=1), tick=False):
        response = owner_browser.get(chart_url(story.signal), {"timeframe": "m5"})

    chart = response.context["chart"]
    assert chart.timeframe == Timeframe.M5
    bars = chart.bars
    assert all(bar.start.minute % 5 == 0 for bar in bars)
    assert min(bar.low for bar in bars) == Decimal("1.09990")
    assert max(bar.high for bar in bars) == Decimal("1.10300")
    assert "selected>M5</option>" in response.content.decode()


@pytest.mark.parametrize("value", ["M7", "<script>alert(1)</script>", "h", " "])
def test_a_bad_timeframe_is_named_and_the_default_shown(owner_browser, value):
    signal = make_signal()
    start = this_minute()
    record("XAUUSD", [(start, "2650.10"), (start + timedelta(minutes=1), "2651.20")])

    with time_machine.travel(start + timedelta(minutes=2), tick=False):
        response = owner_browser.get(chart_url(signal), {"timeframe": value})

    assert response.status_code == 200
    assert response.context["chart"].timeframe == Timeframe.M1
    page = response.content.decode()
    if value.strip():
        assert "is not a timeframe; choose one of M1, M5, M15, H1, H4, D1" in page
        assert "<script>alert(1)</script>" not in page
    else:
        assert 'id="timeframe-error"' not in page  # empty: simply the default
    assert page.count('class="candle-body"') == 2


def test_a_signal_with_no_positions_and_no_prices_says_so(owner_browser):
    signal = make_signal(symbol="EURUSD", entry="1.10000", sl="1.09500", tp="1.11000")

    response = owner_browser.get(chart_url(signal))

    assert response.status_code == 200
    page = response.content.decode()
    assert "No prices recorded for EURUSD in this period" in page
    assert 'class="signal-chart"' not in page
    assert "Stop-loss</th><td>1.09500</td>" in page  # the owner still reads the levels
    assert '<td id="chart-fills">0</td>' in page


def test_a_signal_with_no_positions_is_charted_from_its_publication(owner_browser):
    signal = make_signal(symbol="XAUUSD")
    start = this_minute()
    record("XAUUSD", [(start - timedelta(hours=1), "2600.00")])  # before the signal: not shown
    record("XAUUSD", [(start + timedelta(minutes=n), f"265{n}.00") for n in range(3)])

    with time_machine.travel(start + timedelta(minutes=3), tick=False):
        response = owner_browser.get(chart_url(signal))

    chart = response.context["chart"]
    assert [bar.open for bar in chart.bars] == [Decimal("2650.00"), Decimal("2651.00"), Decimal("2652.00")]
    assert chart.fills == []
    assert chart.stop_steps[0].price == Decimal("2645.00")


def test_staff_without_the_hidden_levels_permission_get_nothing(client, staff_with, story):
    client.force_login(staff_with("positions.view_openposition", "signals_app.view_signal"))

    with time_machine.travel(story.end + timedelta(minutes=1), tick=False):
        responses = [
            client.get(chart_url(story.signal)),
            client.get(chart_url(story.signal), {"timeframe": "M5"}),
            client.get(chart_url(story.signal), {"timeframe": "bad"}),
        ]
        signal_page = client.get(signal_page_url(story.signal))

    # the stop-loss, the take-profit, the partial and every stop the trailing rule set
    hidden = {Decimal(LEVELS["sl"]), Decimal(LEVELS["tp"]), *map(Decimal, STOPS.values()), Decimal("1.10170")}
    for response in responses:
        assert response.status_code == 403
        page = response_text(response)
        assert "signal-chart" not in page
        assert find_levels(page, hidden) == []
    assert signal_page.status_code == 200
    assert 'id="signal-chart"' not in signal_page.content.decode()
    assert chart_url(story.signal) not in signal_page.content.decode()


def test_the_chart_is_linked_for_those_who_may_see_it(client, staff_with):
    signal = make_signal()
    client.force_login(
        staff_with("positions.view_openposition", "signals_app.view_signal", "signals_app.view_hidden_levels")
    )

    signal_page = client.get(signal_page_url(signal)).content.decode()
    breach_url = f"/admin/positions/openposition/signal/{signal.pk}/test-breach/"
    breach_page = client.get(breach_url).content.decode()
    chart_page = client.get(chart_url(signal))

    assert f'<a href="{chart_url(signal)}" id="signal-chart">' in signal_page
    assert f'<a href="{chart_url(signal)}" id="test-breach-chart">' in breach_page
    assert chart_page.status_code == 200


def test_access(client, staff_with):
    signal = make_signal()
    assert client.get(chart_url(signal)).status_code == 302  # anonymous: to the login
    client.force_login(UserFactory(is_staff=False))
    assert client.get(chart_url(signal))["Location"].startswith("/admin/login/")
    client.force_login(staff_with("signals_app.view_signal", "signals_app.view_hidden_levels"))
    assert client.get(chart_url(signal)).status_code == 403  # may not view positions
    client.force_login(
        staff_with("positions.view_openposition", "signals_app.view_signal", "signals_app.view_hidden_levels")
    )
    assert client.post(chart_url(signal)).status_code == 405  # it only reads
    assert client.get("/admin/positions/openposition/signal/999999/chart/").status_code == 404


def test_a_signal_whose_levels_do_not_decrypt_still_shows_its_prices(owner_browser):
    signal = make_signal()
    start = this_minute()
    record("XAUUSD", [(start, "2650.10")])
    with connection.cursor() as cursor:  # as if its Fernet key was dropped before `reencrypt`
        cursor.execute(
            "UPDATE signals_app_signal SET owner_only = 'not-a-fernet-token' WHERE id = %s", [signal.pk]
        )

    response = owner_browser.get(chart_url(signal))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'id="unreadable-levels"' in page
    assert page.count('class="candle-body"') == 1
    assert 'class="level ' not in page


def test_a_long_life_shows_the_newest_candles_and_says_so(owner_browser, owner):
    signal = make_signal()
    start = this_minute()
    record("XAUUSD", [(start + timedelta(minutes=n), "2650.00") for n in range(MAX_CANDLES + 20)])

    with time_machine.travel(start + timedelta(minutes=MAX_CANDLES + 20), tick=False):
        owner_browser.force_login(owner)  # hours later: a session of then, not one gone idle
        response = owner_browser.get(chart_url(signal), {"timeframe": "M1"})

    chart = response.context["chart"]
    assert chart.truncated
    assert len(chart.bars) == MAX_CANDLES
    assert chart.bars[-1].start == start + timedelta(minutes=MAX_CANDLES + 19)
    assert 'id="chart-truncated"' in response.content.decode()


def test_candles_between_reads_a_window_binned_on_the_timeframe():
    from tests.factories import instrument

    symbol_id = instrument("EURUSD").pk
    start = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    record("EURUSD", [(start + timedelta(minutes=n, seconds=5), f"1.10{n:03d}") for n in range(30)])

    def read(timeframe, since, until, limit=100):
        return candles_between(
            instrument_id=symbol_id, timeframe=timeframe, since=since, until=until, limit=limit
        )

    minutes = read("M1", start + timedelta(minutes=3), start + timedelta(minutes=6))
    assert [bar.start.minute for bar in minutes] == [3, 4, 5, 6]
    folded = read("M15", start + timedelta(minutes=7), start + timedelta(minutes=20))
    assert [(bar.start.minute, bar.open, bar.close) for bar in folded] == [
        (0, Decimal("1.10000"), Decimal("1.10014")),  # the bar holding ``since``, whole
        (15, Decimal("1.10015"), Decimal("1.10020")),  # up to ``until``
    ]
    newest = read("M1", start, start + timedelta(minutes=29), limit=3)
    assert [bar.start.minute for bar in newest] == [27, 28, 29]
    assert read("M1", start + timedelta(minutes=5), start) == []


def test_a_closed_signals_chart_ends_a_few_bars_after_its_last_close(owner_browser, owner, story):
    last_close = story.start + timedelta(minutes=len(BIDS) - 1, seconds=30)  # the trailing stop's

    with time_machine.travel(story.end + timedelta(hours=3), tick=False):
        owner_browser.force_login(owner)  # hours later: a session of then, not one gone idle
        chart = owner_browser.get(chart_url(story.signal)).context["chart"]

    assert chart.timeframe == Timeframe.M1
    assert chart.until == last_close + timedelta(minutes=MARGIN_BARS)
    assert chart.since == story.start + timedelta(minutes=1, seconds=10) - timedelta(minutes=MARGIN_BARS)
    assert len(chart.bars) == len(BIDS)


def test_the_strategys_exit_ends_the_stop_line_when_it_was_asked_for(owner_browser, redis_client):
    signal = make_signal()
    start = this_minute()
    record("XAUUSD", [(start + timedelta(minutes=n), f"265{n}.00") for n in range(3)])
    exit_at = start + timedelta(minutes=1, seconds=30)
    with time_machine.travel(exit_at, tick=False):
        signal_exit(signal_id=signal.pk, by=Actor.system("tests"))

    with time_machine.travel(start + timedelta(minutes=3), tick=False):
        chart = owner_browser.get(chart_url(signal)).context["chart"]

    steps = [(step.price, step.set_by) for step in chart.stop_steps]
    assert steps == [(Decimal("2645.00"), "sl"), (None, "")]
    assert chart.stop_steps[-1].at == exit_at
