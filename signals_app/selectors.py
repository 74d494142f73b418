from __future__ import annotations

from django.db.models import Count

from signals_app.models import Signal


def signal_get_for_owner(*, signal_id: int) -> Signal | None:
    return Signal.objects.select_related("instrument").filter(pk=signal_id).first()


def signal_approval_counts(*, signal: Signal) -> dict[str, int]:
    rows = signal.approvals.values("status").annotate(count=Count("pk")).order_by("status")
    return {row["status"]: row["count"] for row in rows}


def user_sees_hidden_levels(user) -> bool:
    return bool(user and user.is_active and user.has_perm("signals_app.view_hidden_levels"))


# The quote that triggered a close sits on the level it crossed: what it reveals is a
# hidden level's, so only those who may see the levels see it (audit data, close commands).
TRIGGER_QUOTE = "trigger_quote"


def audit_data_shown(data: dict, *, sees_levels: bool) -> dict:
    """An audit event's public data as a reader may see it: without the triggering quote
    unless they may see the hidden levels."""
    if sees_levels or not isinstance(data, dict) or TRIGGER_QUOTE not in data:
        return data
    return {key: value for key, value in data.items() if key != TRIGGER_QUOTE}
