"""Keeping hidden levels encrypted at rest: the backfill that moves levels out of
old plaintext payloads into ``owner_only``, and re-encryption under the newest
key after a rotation (``manage.py backfill_hidden_levels`` / ``reencrypt``)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.apps import apps
from django.db import transaction
from django.utils import timezone
from fernet_fields import EncryptedField

from core.errors import DomainError
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit
from signals_app.models import Signal
from signals_app.services import instrument_plans_changed, signal_validate

LEGACY_LEVEL_KEYS = {"sl": "sl", "tp": "tp", "stop_loss": "sl", "take_profit": "tp"}


@dataclass(frozen=True)
class BackfillChange:
    signal_id: int
    moved_keys: list[str]
    conflict: str = ""


def hidden_levels_backfill(*, dry_run: bool, by: Actor) -> list[BackfillChange]:
    """Move legacy level keys (sl, tp, stop_loss, take_profit) out of payloads.

    Idempotent: a signal whose payload holds no such key is left alone. A
    legacy value that disagrees with a level already in ``owner_only`` is
    reported and left for the owner to settle, never overwritten.
    """
    changes: list[BackfillChange] = []
    candidates = (
        Signal.objects.filter(payload__has_any_keys=list(LEGACY_LEVEL_KEYS))
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    for signal_id in candidates.iterator():
        with transaction.atomic():
            signal = Signal.objects.select_for_update().get(pk=signal_id)
            change = _backfill_one(signal, dry_run=dry_run, by=by)
            if change:
                changes.append(change)
    return changes


def _backfill_one(signal: Signal, *, dry_run: bool, by: Actor) -> BackfillChange | None:
    moved = sorted(key for key in LEGACY_LEVEL_KEYS if key in signal.payload)
    if not moved:
        return None
    levels = dict(signal.owner_only or {})
    for key in moved:
        target = LEGACY_LEVEL_KEYS[key]
        value = str(signal.payload[key])
        if target in levels and Decimal(str(levels[target])) != Decimal(value):
            return BackfillChange(
                signal.pk, moved, conflict=f"payload {key} differs from owner_only {target}"
            )
        levels.setdefault(target, value)
    payload = {key: value for key, value in signal.payload.items() if key not in LEGACY_LEVEL_KEYS}
    try:
        parsed, payload = signal_validate(
            side=signal.side, entry_price=signal.entry_price, payload=payload, owner_only=levels
        )
    except DomainError as error:
        return BackfillChange(signal.pk, moved, conflict=f"levels invalid after the move: {error.fields}")
    if not dry_run:
        Signal.objects.filter(pk=signal.pk).update(
            payload=payload, owner_only=parsed.to_dict(), updated_at=timezone.now()
        )
        instrument_plans_changed(signal.instrument_id)
        audit(
            by=by,
            action=AuditAction.SIGNAL_LEVELS_BACKFILLED,
            subject=signal,
            data={"moved_keys": moved},
            secret_data={"old": signal.owner_only, "new": parsed.to_dict()},
        )
    return BackfillChange(signal.pk, moved)


def encrypted_fields() -> list[tuple[type, str]]:
    """Every (model, field name) stored Fernet-encrypted, across all apps."""
    return [
        (model, field.name)
        for model in apps.get_models()
        for field in model._meta.concrete_fields
        if isinstance(field, EncryptedField)
    ]


def encrypted_values_reencrypt(*, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every encrypted value under the first (newest) key of FERNET_KEYS.

    Reading decrypts with any configured key; writing encrypts with the first.
    Rows are locked a batch at a time, so the command runs beside live traffic.
    """
    counts: dict[str, int] = {}
    for model, field_name in encrypted_fields():
        label = f"{model._meta.label}.{field_name}"
        counts[label] = 0
        last_pk = 0
        while True:
            with transaction.atomic():
                rows = list(
                    model.objects.select_for_update()
                    .filter(pk__gt=last_pk)
                    .exclude(**{f"{field_name}__isnull": True})
                    .order_by("pk")
                    .values_list("pk", field_name)[:batch_size]
                )
                for pk, value in rows:
                    model.objects.filter(pk=pk).update(**{field_name: value})
            if not rows:
                break
            counts[label] += len(rows)
            last_pk = rows[-1][0]
    return counts
