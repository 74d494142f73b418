"""The owner's guard settings: a client's exposure and risk limits and an instrument's
market guard, saved from the console with an audit event of what changed."""

from __future__ import annotations

from django.db import transaction

from signals_app.choices import AuditAction
from signals_app.events import Actor, audit
from signals_app.models import Client, Instrument

GUARD_FIELDS: dict[type, tuple[str, ...]] = {
    Client: (
        "max_open_positions",
        "max_volume_per_instrument",
        "drawdown_limit_percent",
        "daily_loss_limit_percent",
    ),
    Instrument: (
        "market_guard_mode",
        "market_guard_spread_factor",
        "market_guard_gap_pips",
        "market_guard_quote_timeout_seconds",
    ),
}


def guard_settings_save(*, obj: Client | Instrument, by: Actor) -> dict[str, list[str | None]]:
    """Save a validated client or instrument; audit its guard fields that changed
    (field -> [before, after]) and return them."""
    fields = GUARD_FIELDS[type(obj)]
    with transaction.atomic():
        before = (
            type(obj).objects.select_for_update().filter(pk=obj.pk).values(*fields).first()
            if obj.pk is not None
            else None
        )
        obj.save()
        changes = {
            name: [_text(before[name]) if before else None, _text(getattr(obj, name))]
            for name in fields
            if (before[name] != getattr(obj, name) if before else getattr(obj, name) is not None)
        }
        if changes:
            audit(by=by, action=AuditAction.GUARD_SETTINGS_CHANGED, subject=obj, data={"changes": changes})
    return changes


def _text(value) -> str | None:
    return None if value is None else str(value)
