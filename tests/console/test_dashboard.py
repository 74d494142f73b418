"""The monitor dashboard: staff only, read-only, every monitor figure, charts from real data."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from monitoring import charts, dashboard
from monitoring.models import Heartbeat
from positions.alerts import alert_raise
from positions.choices import AlertKind, CloseCommandStatus, CloseReason
from positions.quotes import Quote, quote_store
from positions.sweep_history import SweepSummary, sweep_record
from tests.console.helpers import command_at
from tests.factories import UserFactory, make_signal, open_book

pytestmark = pytest.mark.django_db

URL = "/admin/monitor/"
FIGURES = [
    "monitor",
    "last_sweep",
    "beat",
    "open_positions",
    "closing_positions",
    "close_commands",
    "sweep_time",
    "breaches",
    "close_success",
    "latency",
    "devices_offline",
    "stale_quotes",
    "open_alerts",
]


def _healthy_monitor(redis_client, durations_seconds: list[float]) -> None:
    Heartbeat.objects.create(name="beat", last_seen_at=timezone.now())
    for index, seconds in enumerate(durations_seconds):  # recorded oldest first, as sweeps happen
        sweep_record(
            SweepSummary(
                at=time.time() - len(durations_seconds) + index,
                seconds=seconds,
                signals=1,
                commands=0,
                dry_run=False,
            )
        )


def test_anonymous_and_non_staff_users_are_sent_to_the_login(client):
    assert client.get(URL).status_code == 302
    client.force_login(UserFactory(is_staff=False))
    response = client.get(URL)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_staff_without_any_permission_sees_it(client, staff_with, redis_client):
    client.force_login(staff_with())
    assert client.get(URL).status_code == 200


def test_it_has_its_own_admin_url(owner_browser, redis_client):
    assert reverse("monitor-dashboard") == URL
    # The heartbeat table is a plain table: no dashboard hangs off it. Its old address is
    # now read as a heartbeat's id, which the admin answers by going back to the index.
    assert owner_browser.get("/admin/monitoring/heartbeat/").status_code == 200
    old = owner_browser.get("/admin/monitoring/heartbeat/dashboard/", follow=True)
    assert old.redirect_chain[-1] == ("/admin/", 302)
    assert "figure-monitor" not in old.content.decode()


def test_it_only_reads(owner_browser, redis_client):
    assert owner_browser.head(URL).status_code == 200
    assert owner_browser.post(URL).status_code == 405
    assert owner_browser.put(URL).status_code == 405


def test_the_admin_index_links_to_it(owner_browser, redis_client):
    page = owner_browser.get("/admin/").content.decode()
    assert f'href="{URL}"' in page


def test_every_figure_from_real_data(owner_browser, redis_client):
    # given: a running monitor, 3 open positions on XAUUSD with one fresh quote, an SL and
    # a TP breach in the last hour, one executed and one expired close today, an open alert
    _healthy_monitor(redis_client, [0.010, 0.020, 0.030, 0.040])
    signal = make_signal(sl="2645.00", tp="2670.00")
    positions = open_book(signal, 5)
    quote_store(
        Quote("XAUUSD", bid=Decimal("2650"), ask=Decimal("2650.5"), ts=time.time()),
        received_at=time.time(),
    )
    command_at(positions[0], reason=CloseReason.STOP_LOSS, created_ago=timedelta(minutes=10))
    command_at(
        positions[1],
        reason=CloseReason.TAKE_PROFIT,
        created_ago=timedelta(minutes=20),
        status=CloseCommandStatus.EXECUTED,
        completed_ago=timedelta(minutes=19),
        trigger_received_ago=timedelta(minutes=20, seconds=2),
    )
    command_at(
        positions[2],
        reason=CloseReason.MANUAL,
        created_ago=timedelta(hours=3),
        status=CloseCommandStatus.EXPIRED,
        completed_ago=timedelta(hours=2),
    )
    alert_raise(kind=AlertKind.SPIKE, dedupe_key="spike:XAUUSD", message="XAUUSD jumped")

    # when
    response = owner_browser.get(URL)

    # then
    assert response.status_code == 200
    figures = {figure.key: figure for figure in response.context["figures"]}
    assert list(figures) == FIGURES
    assert figures["monitor"].value == "running"
    assert figures["open_positions"].value == "2"  # 5 minus the three given a command
    assert figures["closing_positions"].value == "3 closing · 0 close failed"
    assert figures["close_commands"].value == "1 pending · 0 delivered"
    assert figures["sweep_time"].value == "avg 25 ms · p95 40 ms"
    assert figures["breaches"].value == "SL 1 · TP 1"
    assert figures["close_success"].value == "50.0 %"
    assert figures["latency"].value.startswith("median ")
    assert figures["devices_offline"].value == "5"  # the book's devices never called in
    assert figures["stale_quotes"].value == "0"
    assert figures["open_alerts"].value == "1"
    page = response.content.decode()
    assert 'id="auto-refresh" data-seconds="10"' in page  # reloads itself, unless paused
    assert "http-equiv" not in page  # never a reload the reader cannot stop (WCAG 2.2.1)
    assert '/admin/positions/alert/?acknowledged=no"' in page
    assert (
        page.count('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 720 210" role="img" class="chart">')
        == 2
    )
    assert "XAUUSD" in page
    assert "Cache-Control" in response
    assert "no-cache" in response["Cache-Control"]


def test_a_stopped_monitor_and_stale_quotes_show_red(owner_browser, redis_client):
    open_book(make_signal(symbol="EURUSD", entry="1.08500", sl="1.08000", tp="1.09500"), 1)

    response = owner_browser.get(URL)

    figures = {figure.key: figure for figure in response.context["figures"]}
    assert figures["monitor"].state == dashboard.BAD
    assert figures["last_sweep"].value == "never"
    assert figures["stale_quotes"].value == "1"
    assert figures["stale_quotes"].detail == "EURUSD"
    assert figures["stale_quotes"].state == dashboard.BAD
    assert "stale: breaches not judged" in response.content.decode()


def test_a_dry_run_is_said_even_while_redis_is_down(owner_browser, settings, unused_tcp_port):
    # given: the monitor in dry run (a setting, not a Redis figure) and Redis unreachable
    settings.POSITION_MONITOR_DRY_RUN = True
    settings.REDIS_URL = f"redis://127.0.0.1:{unused_tcp_port}/0"

    response = owner_browser.get(URL)

    # then: the monitor figure still warns that nothing is closed
    monitor = {figure.key: figure for figure in response.context["figures"]}["monitor"]
    assert monitor.value == "unavailable (dry run)"
    assert monitor.detail == "breaches are audited, nothing is closed"
    assert monitor.state == dashboard.BAD


def test_the_page_still_answers_when_redis_is_down(owner_browser, settings, unused_tcp_port):
    # given: 2 open positions in PostgreSQL
    open_book(make_signal(symbol="EURUSD", entry="1.08500", sl="1.08000", tp="1.09500"), 2)
    # and a real client pointed at a port where no Redis listens: the connection is refused
    settings.REDIS_URL = f"redis://127.0.0.1:{unused_tcp_port}/0"

    response = owner_browser.get(URL)

    # then: every figure is shown; those kept in Redis say they are unavailable, in red
    assert response.status_code == 200
    page = response.content.decode()
    assert "Redis is unreachable" in page
    assert "chart-activity" in page
    figures = {figure.key: figure for figure in response.context["figures"]}
    assert list(figures) == FIGURES
    for key in ("monitor", "last_sweep", "sweep_time", "stale_quotes"):
        assert figures[key].value == "unavailable", key
        assert figures[key].state == dashboard.BAD, key
    assert figures["open_positions"].value == "2"
    assert figures["beat"].value == "never"
    assert 'id="figure-open_positions"' in page
    assert "EURUSD" in page  # the open positions by instrument, without their quote state


def test_hourly_activity_puts_each_command_in_its_hour(redis_client):
    signal = make_signal()
    positions = open_book(signal, 5)
    now = timezone.now()
    command_at(positions[0], reason=CloseReason.STOP_LOSS, created_ago=timedelta(hours=2))
    command_at(positions[4], reason=CloseReason.STOP_LOSS, created_ago=timedelta(hours=2))
    command_at(positions[1], reason=CloseReason.TAKE_PROFIT, created_ago=timedelta(hours=2))
    command_at(
        positions[2],
        reason=CloseReason.STOP_LOSS,
        created_ago=timedelta(hours=30),  # outside the window
        status=CloseCommandStatus.EXECUTED,
        completed_ago=timedelta(minutes=1),
    )
    command_at(
        positions[3],
        reason=CloseReason.MANUAL,  # a manual close is no breach
        created_ago=timedelta(hours=5),
        status=CloseCommandStatus.FAILED,
        completed_ago=timedelta(hours=5),
    )

    activity = dashboard.hourly_activity(now=now)

    assert len(activity) == 24
    assert activity[-1].start == now.replace(minute=0, second=0, microsecond=0)
    by_hour = {hour.start: hour for hour in activity}
    two_hours_ago = (now - timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)
    # one signal's stop crossed, closing two positions, is one breach (as monitor_status counts)
    assert (by_hour[two_hours_ago].stop_loss, by_hour[two_hours_ago].take_profit) == (1, 1)
    assert activity[-1].executed == 1 or activity[-2].executed == 1  # a minute ago may be last hour
    five_hours_ago = (now - timedelta(hours=5)).replace(minute=0, second=0, microsecond=0)
    assert by_hour[five_hours_ago].failed == 1
    assert sum(hour.breaches for hour in activity) == 2
    assert sum(hour.closes for hour in activity) == 2


def test_charts_are_inline_svg_with_a_bar_per_count(redis_client):
    now = timezone.now()
    activity = [dashboard.HourActivity(start=now - timedelta(hours=23 - index)) for index in range(24)]
    activity[5] = dashboard.HourActivity(start=activity[5].start, stop_loss=3, take_profit=1, executed=4)

    svg = str(charts.activity_chart_svg(activity))
    sweeps = str(charts.sweep_chart_svg([1.0, 2.0, 9000.0], average_ms=3001.0, p95_ms=9000.0))

    assert svg.startswith("<svg")
    assert svg.endswith("</svg>")
    assert svg.count("<rect") == 3  # SL, TP, executed; empty segments draw nothing
    assert "3 stop-loss breaches" in svg
    assert "4 breaches, 4 closes finished" in svg
    assert sweeps.count("<rect") == 3
    assert sweeps.count('fill="#ba2121"') == 1  # the one sweep slower than the 5 s interval
    assert "p95 9000" in sweeps
    assert "avg 3001" in sweeps
    assert "<script" not in svg + sweeps
