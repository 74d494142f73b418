from __future__ import annotations

from django.core.management.base import BaseCommand

from signals_app.encryption import hidden_levels_backfill
from signals_app.events import Actor


class Command(BaseCommand):
    help = (
        "Move sl/tp/stop_loss/take_profit out of legacy signal payloads into the encrypted "
        "owner_only. Idempotent; --dry-run reports without changing anything."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true")

    def handle(self, *args, dry_run: bool, **options) -> None:
        changes = hidden_levels_backfill(dry_run=dry_run, by=Actor.system("manage.py backfill_hidden_levels"))
        verb = "would move" if dry_run else "moved"
        for change in changes:
            if change.conflict:
                self.stdout.write(
                    self.style.WARNING(f"signal #{change.signal_id}: skipped, {change.conflict}")
                )
            else:
                self.stdout.write(f"signal #{change.signal_id}: {verb} {', '.join(change.moved_keys)}")
        done = sum(1 for change in changes if not change.conflict)
        skipped = len(changes) - done
        self.stdout.write(f"{done} signal(s) {'to change' if dry_run else 'changed'}, {skipped} skipped")
