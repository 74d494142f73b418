"""The audit trail: who or what did what to which record.

Every service that changes domain state writes here in the same transaction
as the change, so a change without its record cannot commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import models

from signals_app.choices import ActorKind
from signals_app.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    kind: str
    name: str
    user_id: int | None = None

    @classmethod
    def user(cls, user, kind: str = ActorKind.OWNER) -> Actor:
        return cls(kind=kind, name=user.get_username(), user_id=user.pk)

    @classmethod
    def system(cls, component: str) -> Actor:
        return cls(kind=ActorKind.SYSTEM, name=component)


def _subject_type(subject: models.Model | type[models.Model]) -> str:
    return subject._meta.model_name


def audit(
    *,
    by: Actor,
    action: str,
    subject: models.Model,
    data: dict[str, Any] | None = None,
    secret_data: dict[str, Any] | None = None,
) -> AuditEvent:
    return AuditEvent.objects.create(
        actor_kind=by.kind,
        actor=by.name,
        action=action,
        subject_type=_subject_type(subject),
        subject_id=subject.pk,
        data=data or {},
        secret_data=secret_data,
    )


def audit_many(
    *,
    by: Actor,
    action: str,
    subjects: Iterable[models.Model],
    data_for=lambda subject: {},
) -> list[AuditEvent]:
    """One event per subject, in one INSERT."""
    return AuditEvent.objects.bulk_create(
        [
            AuditEvent(
                actor_kind=by.kind,
                actor=by.name,
                action=action,
                subject_type=_subject_type(subject),
                subject_id=subject.pk,
                data=data_for(subject),
            )
            for subject in subjects
        ]
    )
