"""Changelists stay cheap and robust on big tables."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import override_settings

from core.paginator import EstimatedCountPaginator
from signals_app.models import AuditEvent
from tests.factories import OwnerFactory, make_signal

pytestmark = pytest.mark.django_db


def test_an_unfiltered_big_table_is_estimated_and_a_filtered_one_counted():
    AuditEvent.objects.bulk_create(
        [
            AuditEvent(actor_kind="system", actor="t", action="x", subject_type="s", subject_id=n)
            for n in range(12_000)
        ]
    )
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE signals_app_auditevent")
        cursor.execute("UPDATE pg_class SET reltuples = 5000000 WHERE relname = 'signals_app_auditevent'")

    assert EstimatedCountPaginator(AuditEvent.objects.all(), 100).count == 5_000_000  # the planner's figure
    assert EstimatedCountPaginator(AuditEvent.objects.filter(subject_id__lt=10), 100).count == 10  # exact


def test_the_signal_list_survives_a_signal_that_no_longer_decrypts(client):
    with override_settings(FERNET_KEYS=["a-key-this-server-has-since-dropped-00000001"]):
        lost = make_signal()
    make_signal()
    client.force_login(OwnerFactory())

    response = client.get("/admin/signals_app/signal/")

    assert response.status_code == 200
    assert f">{lost.pk}<" in response.content.decode()


def test_the_change_page_of_an_undecryptable_signal_explains_instead_of_failing(client):
    with override_settings(FERNET_KEYS=["a-key-this-server-has-since-dropped-00000001"]):
        lost = make_signal()
    client.force_login(OwnerFactory())

    response = client.get(f"/admin/signals_app/signal/{lost.pk}/change/", follow=True)

    assert response.status_code == 200
    assert "do not decrypt with FERNET_KEYS" in response.content.decode()
