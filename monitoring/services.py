from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from config.schedule import PREFIX, periodic_tasks
from monitoring.models import Heartbeat


def heartbeat_record(*, name: str, worker: str) -> Heartbeat:
    """Upsert the heartbeat row (one statement, safe from any number of workers)."""
    (heartbeat,) = Heartbeat.objects.bulk_create(
        [Heartbeat(name=name, last_seen_at=timezone.now(), worker=worker[:255])],
        update_conflicts=True,
        unique_fields=["name"],
        update_fields=["last_seen_at", "worker"],
    )
    return heartbeat


@transaction.atomic
def periodic_tasks_sync() -> list[str]:
    """Make django-celery-beat's tables match ``config.schedule``; return what changed."""
    changes = []
    declared = set()
    for spec in periodic_tasks():
        declared.add(spec.name)
        interval, _ = IntervalSchedule.objects.get_or_create(
            every=spec.every_seconds, period=IntervalSchedule.SECONDS
        )
        _, created = PeriodicTask.objects.update_or_create(
            name=spec.name,
            defaults={
                "task": spec.task,
                "interval": interval,
                "crontab": None,
                "solar": None,
                "clocked": None,
                "expire_seconds": spec.expire_seconds,
                "enabled": True,
                "one_off": False,
                "description": spec.why,
            },
        )
        changes.append(f"{'created' if created else 'updated'} {spec.name} every {spec.every_seconds}s")
    stale = PeriodicTask.objects.filter(name__startswith=PREFIX, enabled=True).exclude(name__in=declared)
    for name in stale.values_list("name", flat=True):
        changes.append(f"disabled {name} (no longer declared)")
    stale.update(enabled=False)
    return changes
