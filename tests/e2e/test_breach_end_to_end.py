"""The whole path, through real processes: a quote from the owner's feed crosses a
hidden stop, a Celery worker's sweep queues the close, the reference EA client
executes it on its (simulated) broker and acknowledges, the position is closed_sl
with the right P&L, the audit names the quote, and the worker's metrics reach /metrics."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.test import Client as BrowserClient
from django.test import override_settings

from ea_client.client import EAClient
from ea_client.executors import SimulatedBroker
from ea_client.transport import SignedTransport
from ea_gateway.choices import DeviceRole
from positions.choices import PositionStatus
from positions.models import CloseCommand, OpenPosition
from signals_app.models import AuditEvent
from tests.ea_helpers import make_device
from tests.factories import ClientFactory, make_signal
from tests.helpers import CeleryProcesses, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_crossed_hidden_stop_is_closed_by_the_reference_ea(
    live_server, tmp_path, redis_client, monkeypatch
):
    # given: a client whose EA runs the reference client on a simulated broker
    client = ClientFactory(auto_approve=True, default_volume=Decimal("0.10"))
    ea_device = make_device(client=client)
    feed_device = make_device(role=DeviceRole.FEED, name="owner feed")
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    market = {"XAUUSD": (Decimal("2650.40"), Decimal("2650.70"))}
    ea = EAClient(
        SignedTransport(live_server.url, ea_device.device.key_id, ea_device.secret),
        SimulatedBroker(price_source=lambda symbol: market[symbol]),
    )
    feed = SignedTransport(live_server.url, feed_device.device.key_id, feed_device.secret)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    with override_settings(POSITION_MONITOR_INTERVAL_SECONDS=1):
        call_command("setup_periodic_tasks")

    with CeleryProcesses(tmp_path, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir)) as celery:
        celery.start_worker()
        celery.start_beat()

        # the EA copies the signal: fill at the ask
        assert ea.run_once()
        position = OpenPosition.objects.get(signal=signal)
        assert (position.entry_price, position.status) == (Decimal("2650.70"), PositionStatus.OPEN)

        # when: the owner's feed reports the bid through the hidden stop
        now = time.time()
        feed.request(
            "POST",
            "/api/v1/feed/quotes",
            body={"quotes": [{"instrument": "XAUUSD", "bid": "2650.40", "ask": "2650.70", "ts": now - 0.5}]},
        )
        sent_at = time.monotonic()
        feed.request("POST", "/api/v1/feed/quotes", body={"quotes": [
            {"instrument": "XAUUSD", "bid": "2644.80", "ask": "2645.10", "ts": now}]})  # fmt: skip
        try:
            command = wait_for(
                lambda: CloseCommand.objects.filter(position=position).first(), timeout=30, interval=0.01
            )
        except AssertionError:
            print(celery.logs())
            raise
        quote_to_command = time.monotonic() - sent_at

        # the EA executes the close at its broker's bid and acknowledges
        market["XAUUSD"] = (Decimal("2644.70"), Decimal("2645.00"))
        assert ea.run_once()

    # then
    position.refresh_from_db()
    assert position.status == PositionStatus.CLOSED_SL
    assert position.close_price == Decimal("2644.70")
    assert position.realized_pnl == Decimal("-60.00")  # (2644.70 - 2650.70) * 0.10 lot * 100 oz
    command.refresh_from_db()
    assert command.status == "executed"
    assert command.trigger_quote["bid"] == "2644.80"
    requested = AuditEvent.objects.get(action="position.close_requested", subject_id=position.pk)
    assert requested.actor == "scanner"
    assert requested.data["trigger_quote"]["bid"] == "2644.80"
    closed = AuditEvent.objects.get(action="position.closed", subject_id=position.pk)
    assert closed.data["close_price"] == "2644.70"
    assert closed.data["trigger_quote"]["bid"] == "2644.80"
    assert quote_to_command < 5  # triggered by the quote, not left for a later beat

    # and the sweep's metrics, recorded in the worker, are in the scrape
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    scrape = BrowserClient().get("/metrics").content.decode()
    assert 'position_breaches_total{type="sl"} 1.0' in scrape
    assert "position_monitor_duration_seconds_count" in scrape
