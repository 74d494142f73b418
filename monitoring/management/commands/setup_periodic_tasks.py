from __future__ import annotations

from django.core.management.base import BaseCommand

from monitoring.services import periodic_tasks_sync


class Command(BaseCommand):
    help = "Write the periodic tasks declared in config/schedule.py into django-celery-beat."

    def handle(self, *args, **options) -> None:
        for change in periodic_tasks_sync():
            self.stdout.write(change)
