"""Exactly-once with real Celery processes: duplicated beats and workers, and a
worker killed in the middle of a sweep."""

from __future__ import annotations

import random
import time
from decimal import Decimal

import psycopg2
import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from positions.choices import CloseCommandStatus, CloseReason
from positions.close_delivery import CloseResult, close_command_ack
from positions.models import CloseCommand, OpenPosition
from positions.quotes import Quote, quotes_ingest
from signals_app.events import Actor
from tests.factories import make_signal, open_book
from tests.helpers import CeleryProcesses, current_database_url, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAST_SCHEDULE = {"POSITION_MONITOR_INTERVAL_SECONDS": "1", "CELERY_VISIBILITY_TIMEOUT": "5"}


def _schedule_every_second() -> None:
    with override_settings(POSITION_MONITOR_INTERVAL_SECONDS=1):
        call_command("setup_periodic_tasks")


def _ingest(symbol: str, bid: str, spread: str = "0.00010") -> None:
    quotes_ingest(quotes=[Quote(symbol, Decimal(bid), Decimal(bid) + Decimal(spread), time.time())])


def _duplicated_active_commands() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM (SELECT position_id FROM positions_closecommand "
            "WHERE status IN ('pending', 'delivered') GROUP BY position_id HAVING count(*) > 1) doubled"
        )
        return cursor.fetchone()[0]


def test_two_beats_and_two_workers_for_a_minute_close_each_breach_once(tmp_path, redis_client):
    # given: four signals with 25 positions each, the market inside every level
    signals = {
        symbol: make_signal(symbol=symbol, side="buy", entry="1.10000", sl="1.09800", tp="1.10200")
        for symbol in ("EURUSD", "GBPUSD", "AUDUSD", "NZDUSD")
    }
    for signal in signals.values():
        open_book(signal, 25)
    _schedule_every_second()
    rng = random.Random(7)
    failed_acks: dict[int, int] = {}
    samples: list[int] = []

    with CeleryProcesses(tmp_path, **FAST_SCHEDULE) as celery:
        for name in ("beat-a", "beat-b"):
            celery.start_beat(name)
        for name in ("worker-a", "worker-b"):
            celery.start_worker(name, concurrency=2)
        # when: a minute of quotes wanders across the stops, and the EAs fail some closes
        # (a failed close reopens the position: a later crossing must close it again, once)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for symbol in signals:
                _ingest(symbol, str(Decimal("1.09800") + Decimal(rng.randint(-30, 30)) / Decimal(100000)))
            for command in CloseCommand.objects.filter(status=CloseCommandStatus.PENDING).order_by("?")[:3]:
                close_command_ack(
                    command_id=command.pk,
                    device_id=command.device_id,
                    result=CloseResult(executed=False, error="requote"),
                    by=Actor.system("test-ea"),
                )
                failed_acks[command.position_id] = failed_acks.get(command.position_id, 0) + 1
            samples.append(_duplicated_active_commands())
            time.sleep(0.05)
        # let the last triggered sweeps finish
        _ingest("EURUSD", "1.09700")
        time.sleep(3)
        logs = celery.logs()

    # then: never two active commands for one position, and every command accounted for
    assert max(samples) == 0
    assert _duplicated_active_commands() == 0
    assert failed_acks, "the test never exercised a reopened position"
    for position in OpenPosition.objects.all():
        commands = CloseCommand.objects.filter(position=position)
        active = commands.filter(status__in=["pending", "delivered"]).count()
        assert commands.filter(status="failed").count() == failed_acks.get(position.pk, 0)
        assert active == (1 if position.status == "closing" else 0), logs[-3000:]
    assert CloseCommand.objects.filter(reason=CloseReason.STOP_LOSS).count() >= 100


def test_a_worker_killed_mid_sweep_loses_and_doubles_nothing(tmp_path, redis_client):
    # given: 300 breached positions and a quote that crosses their stop
    signal = make_signal(symbol="EURUSD", side="buy", entry="1.10000", sl="1.09800", tp="1.10200")
    positions = open_book(signal, 300)
    _ingest("EURUSD", "1.10000")
    # an outside transaction holds one position's row, so the sweep's UPDATE blocks mid-statement
    blocker = psycopg2.connect(current_database_url().replace("postgres://", "postgresql://"))
    blocker.autocommit = False
    with blocker.cursor() as cursor:
        cursor.execute("SELECT id FROM positions_openposition WHERE id = %s FOR UPDATE", [positions[-1].pk])

    try:
        with CeleryProcesses(tmp_path, **FAST_SCHEDULE) as celery:
            celery.start_worker("doomed")
            _ingest("EURUSD", "1.09790")  # queues positions.sweep_instrument

            def sweep_is_blocked() -> bool:
                # Asked on our own autocommit connection: pg_stat_activity is a snapshot per transaction.
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                        "AND query LIKE %s",
                        # the close claim's statement (pg_stat_activity keeps its first 1 kB)
                        ["%WITH wanted(key, reason%"],
                    )
                    return cursor.fetchone()[0] > 0

            wait_for(sweep_is_blocked, timeout=30)

            # when: the worker dies with its sweep half done, and the row is released
            celery.kill("doomed")
            blocker.rollback()
            assert CloseCommand.objects.count() == 0  # the killed transaction committed nothing

            # then: a new worker and beat finish the job exactly once
            _schedule_every_second()
            celery.start_worker("survivor")
            celery.start_beat()
            wait_for(lambda: CloseCommand.objects.count() >= 300, timeout=60)
            time.sleep(3)  # more sweeps (beat, the redelivered message) must add nothing
    finally:
        blocker.close()

    assert CloseCommand.objects.count() == 300
    assert CloseCommand.objects.values("position").distinct().count() == 300
    assert set(OpenPosition.objects.values_list("status", flat=True)) == {"closing"}
