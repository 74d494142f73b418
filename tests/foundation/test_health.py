from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from core.redis import _client_for
from monitoring.choices import HeartbeatName
from monitoring.models import Heartbeat
from monitoring.services import heartbeat_record

pytestmark = pytest.mark.django_db


def test_healthy_when_database_redis_and_beat_are_fine(client, redis_client):
    heartbeat_record(name=HeartbeatName.BEAT, worker="worker@test")

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"database": {"ok": True}, "redis": {"ok": True}, "beat": {"ok": True}},
        "failing": [],
    }


def test_unhealthy_without_any_beat_heartbeat(client, redis_client):
    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["beat"]
    assert "no beat heartbeat yet" in body["checks"]["beat"]["detail"]


@override_settings(HEALTH_BEAT_MAX_AGE_SECONDS=60)
def test_unhealthy_when_the_heartbeat_is_stale(client, redis_client):
    Heartbeat.objects.create(
        name=HeartbeatName.BEAT, last_seen_at=timezone.now() - timedelta(seconds=61), worker="w"
    )

    body = client.get("/healthz").json()

    assert body["failing"] == ["beat"]
    assert "limit 60 s" in body["checks"]["beat"]["detail"]


def test_unhealthy_when_redis_is_unreachable(client, unused_tcp_port):
    heartbeat_record(name=HeartbeatName.BEAT, worker="worker@test")
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{unused_tcp_port}/0"):
        response = client.get("/healthz")
    _client_for.cache_clear()

    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]
    assert response.json()["checks"]["redis"]["detail"] == "redis unreachable: ConnectionError"


def test_heartbeat_upsert_keeps_one_row():
    heartbeat_record(name=HeartbeatName.BEAT, worker="a")
    heartbeat_record(name=HeartbeatName.BEAT, worker="b")

    assert list(Heartbeat.objects.values_list("name", "worker")) == [("beat", "b")]


def test_healthz_is_get_only(client):
    assert client.post("/healthz").status_code == 405
