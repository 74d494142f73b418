"""Audit events of the staff's logins (signals_app's append-only log).

Their subject is the user account (``user``, its id; 0 when the username typed names no
account). Their data is the client's IP address and what the step says; never a
password, a code or a TOTP secret.
"""

from __future__ import annotations

from typing import Any

from axes.helpers import get_client_ip_address
from django.contrib.auth import get_user_model

from signals_app.choices import ActorKind, AuditAction
from signals_app.events import Actor, AuditEntry, audit_bulk

NO_ACCOUNT = 0  # subject id of an event whose username names no account


def client_ip(request) -> str:
    """The address axes keys its lockout on (REMOTE_ADDR)."""
    return (get_client_ip_address(request) if request is not None else None) or ""


def auth_audit(
    *,
    action: AuditAction,
    request=None,
    user=None,
    username: str = "",
    by: Actor | None = None,
    data: dict[str, Any] | None = None,
) -> None:
    """One event about ``user`` (acting itself unless ``by`` says who did), or, without a
    user, about the account ``username`` names, by a visitor who is not logged in."""
    user_model = get_user_model()
    if user is not None:
        actor, subject_id = by or Actor.user(user), user.pk
    else:
        name = (username or "").strip()[:150]
        actor = by or Actor(kind=ActorKind.VISITOR, name=name or "(no username)")
        subject_id = (
            user_model.objects.filter(**{user_model.USERNAME_FIELD: name})
            .values_list("pk", flat=True)
            .first()
            or NO_ACCOUNT
        )
    details = {"ip": client_ip(request)} if request is not None else {}
    details.update(data or {})
    audit_bulk(
        by=actor,
        entries=[AuditEntry(action=action, subject=user_model, subject_id=subject_id, data=details)],
    )
