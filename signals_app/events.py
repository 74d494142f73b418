"""The audit trail: who or what did what to which record.

Every service that changes domain state writes here in the same transaction
as the change, so a change without its record cannot commit.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection, models

from signals_app.choices import ActorKind, AuditAction
from signals_app.fields import json_encrypt
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


@dataclass(frozen=True)
class AuditEntry:
    action: AuditAction
    # The subject's model and id (not an instance: a sweep that ends a thousand plans
    # builds no thousand model instances to name them).
    subject: type[models.Model]
    subject_id: int
    data: dict[str, Any]
    secret_data: dict[str, Any] | None = None


_AUDIT_BULK = """
INSERT INTO {table} (occurred_at, actor_kind, actor, action, subject_type, subject_id, data, secret_data)
SELECT now(), %s, %s, e.action, e.subject_type, e.subject_id, e.data, e.secret_data
  FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::jsonb[], %s::bytea[])
       AS e(action, subject_type, subject_id, data, secret_data)
"""


def audit_bulk(*, by: Actor, entries: list[AuditEntry]) -> int:
    """Several events, of any actions, in one set-based INSERT (no model instances: a
    sweep that ends thousands of plans audits them all); return how many."""
    if not entries:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            _AUDIT_BULK.format(table=AuditEvent._meta.db_table),
            [
                by.kind,
                by.name,
                [AuditAction(entry.action).value for entry in entries],
                [_subject_type(entry.subject) for entry in entries],
                [entry.subject_id for entry in entries],
                [json.dumps(entry.data) for entry in entries],
                [None if entry.secret_data is None else json_encrypt(entry.secret_data) for entry in entries],
            ],
        )
    return len(entries)


def audit_insert_sql(
    *, cte: str, source: str, subject: type[models.Model], subject_id: str, data: str
) -> str:
    """A CTE named ``cte`` that inserts one audit event per row of ``source``, for a
    set-based statement that must audit in the same statement as its change.

    ``subject_id`` and ``data`` are SQL expressions over ``source``'s columns (``data``
    builds a jsonb object). The actor and action are bound parameters, filled in by
    ``audit_sql_params`` from an ``Actor`` and an ``AuditAction``: no statement
    writes an action string of its own.
    """
    table = AuditEvent._meta.db_table
    # Every piece is a constant of the calling module, never input.
    return f"""{cte} AS (
    INSERT INTO {table} (occurred_at, actor_kind, actor, action, subject_type, subject_id, data)
    SELECT now(), %(audit_actor_kind)s, %(audit_actor)s, %(audit_action)s, '{_subject_type(subject)}',
           {subject_id}, {data}
      FROM {source}
    RETURNING 1
)"""  # noqa: S608


def audit_sql_params(*, by: Actor, action: AuditAction) -> dict[str, str]:
    return {"audit_actor_kind": by.kind, "audit_actor": by.name, "audit_action": AuditAction(action).value}
