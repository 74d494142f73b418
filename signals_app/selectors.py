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
