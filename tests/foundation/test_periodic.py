"""Periodic tasks: declared once, synced into django-celery-beat, run by a real beat and worker."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.test import override_settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.celery import app
from monitoring.choices import HeartbeatName
from monitoring.models import Heartbeat
from positions.sweep_history import sweep_last
from tests.helpers import start_process, stop_process, wait_for


@pytest.mark.django_db
def test_sync_is_idempotent_and_disables_undeclared_tasks():
    stale_interval = IntervalSchedule.objects.create(every=99, period=IntervalSchedule.SECONDS)
    PeriodicTask.objects.create(name="veilstop:retired", task="x.y", interval=stale_interval)
    PeriodicTask.objects.create(name="someone-elses", task="x.y", interval=stale_interval)

    call_command("setup_periodic_tasks")
    call_command("setup_periodic_tasks")

    heartbeat = PeriodicTask.objects.get(name="veilstop:beat-heartbeat")
    assert heartbeat.task == "monitoring.beat_heartbeat"
    assert heartbeat.interval.every == 15
    assert heartbeat.expire_seconds == 15  # a backlog is dropped, not replayed
    assert PeriodicTask.objects.filter(name="veilstop:beat-heartbeat").count() == 1
    assert PeriodicTask.objects.get(name="veilstop:retired").enabled is False
    assert PeriodicTask.objects.get(name="someone-elses").enabled is True


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_beat_schedules_the_heartbeat_and_a_worker_runs_it(tmp_path, redis_client):
    # given: the schedule in the database, at one second so the test is quick
    with override_settings(BEAT_HEARTBEAT_INTERVAL_SECONDS=1):
        call_command("setup_periodic_tasks")
    worker = start_process(
        ["-m", "celery", "-A", "config", "worker", "--pool=solo", "--hostname=testworker@%h", "-l", "INFO"],
        tmp_path / "worker.log",
    )
    beat = start_process(["-m", "celery", "-A", "config", "beat", "-l", "INFO"], tmp_path / "beat.log")
    try:
        # when / then: a heartbeat row appears, written by our worker
        heartbeat = wait_for(lambda: Heartbeat.objects.filter(name=HeartbeatName.BEAT).first(), timeout=60)
        assert heartbeat.worker.startswith("testworker@")
        first_seen = heartbeat.last_seen_at
        # and it keeps beating
        wait_for(
            lambda: Heartbeat.objects.get(name=HeartbeatName.BEAT).last_seen_at > first_seen,
            timeout=30,
        )
    except AssertionError:
        print((tmp_path / "worker.log").read_text()[-3000:])
        print((tmp_path / "beat.log").read_text()[-3000:])
        raise
    finally:
        stop_process(beat)
        stop_process(worker)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sweeps_have_their_own_queue(tmp_path, redis_client):
    # given: a worker that takes only the sweep queue (as a production sweep node runs)
    worker = start_process(
        ["-m", "celery", "-A", "config", "worker", "--pool=solo", "-Q", "sweeps", "-l", "INFO"],
        tmp_path / "worker.log",
    )
    try:
        # when: a sweep and another task are sent as the product sends them (by name)
        app.send_task("positions.sweep_instrument", args=["EURUSD"])
        app.send_task("positions.refresh_gauges")

        # then: the sweep runs there; the other task waits in the default queue
        wait_for(sweep_last, timeout=60)
        assert redis_client.llen("celery") == 1
        assert redis_client.llen("sweeps") == 0
    except AssertionError:
        print((tmp_path / "worker.log").read_text()[-3000:])
        raise
    finally:
        stop_process(worker)
