"""The per-process device cache of the EA authentication, and its one Redis round trip:
a cached device never outlives a revoke or a rotation, replays and throttling behave as
before, and a Redis outage is still a 503."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, connections
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from core.errors import DomainError
from core.redis import _client_for
from ea_gateway.api.admission import LAST_SEEN_KEY
from ea_gateway.models import Device
from ea_gateway.services import device_revoke, device_rotate_secret
from ea_protocol import signing
from signals_app.events import Actor
from tests.ea_helpers import EA, ea_for, encode, make_device, signed_headers
from tests.helpers import wait_for

pytestmark = pytest.mark.django_db

GENERIC_401 = {"error": {"code": "not_authenticated", "message": "Authentication failed."}}
POLL = "/api/v1/client/poll"
HEARTBEAT = "/api/v1/client/heartbeat"
ACCOUNT = {"balance": "1000.00", "equity": "1000.00", "open_tickets": []}


@pytest.fixture
def ea(redis_client) -> EA:
    return ea_for(make_device())


def _heartbeat_signed_with(ea: EA, secret: str) -> dict[str, str]:
    return signed_headers(
        key=ea.device.key_id, secret=secret, method="POST", path=HEARTBEAT, body=encode(ACCOUNT)
    )


def _send(ea: EA, headers: dict[str, str]):
    return ea.http.post(HEARTBEAT, encode(ACCOUNT), content_type="application/json", headers=headers)


def _device_reads(queries: CaptureQueriesContext) -> list[str]:
    return [query["sql"] for query in queries.captured_queries if 'FROM "ea_gateway_device"' in query["sql"]]


def test_a_device_in_the_cache_is_not_read_again(ea):
    # given: one request has read the device
    assert ea.poll().status_code == 200

    # when
    with CaptureQueriesContext(connection) as queries:
        response = ea.poll()

    # then
    assert response.status_code == 200
    assert _device_reads(queries) == []


@override_settings(EA_DEVICE_CACHE_SECONDS=0)
def test_with_the_cache_off_every_request_reads_the_device(ea):
    assert ea.poll().status_code == 200
    with CaptureQueriesContext(connection) as queries:
        assert ea.poll().status_code == 200
    assert len(_device_reads(queries)) == 1


def test_a_cached_device_is_refused_as_soon_as_it_is_revoked(ea):
    assert ea.poll().status_code == 200  # cached now

    device_revoke(device=ea.device, by=Actor.system("t"))
    response = ea.poll()

    assert response.status_code == 401
    assert response.json() == GENERIC_401


def test_after_a_rotation_the_old_secret_is_refused_by_a_process_that_cached_it(ea):
    # given: the process holds the device with its old secret
    old_secret = ea.credentials.secret
    assert _send(ea, _heartbeat_signed_with(ea, old_secret)).status_code == 200

    # when
    device_rotate_secret(device=ea.device, by=Actor.system("t"))
    response = _send(ea, _heartbeat_signed_with(ea, old_secret))

    # then: the old secret still verifies against the cached copy, but the copy is stale
    assert response.status_code == 401
    assert response.json() == GENERIC_401


def test_after_a_rotation_the_new_secret_is_accepted_at_once_and_only_once(ea):
    # given: the process holds the device with its old secret
    assert ea.poll().status_code == 200

    # when
    new_secret = device_rotate_secret(device=ea.device, by=Actor.system("t")).secret
    headers = _heartbeat_signed_with(ea, new_secret)

    # then: the cached copy cannot verify it; the device is read again, and it can
    assert _send(ea, headers).status_code == 200
    assert _send(ea, headers).status_code == 401  # the same nonce again
    assert _send(ea, _heartbeat_signed_with(ea, new_secret)).status_code == 200


def test_a_replay_is_refused_when_the_device_comes_from_the_cache(ea):
    assert ea.poll().status_code == 200
    headers = _heartbeat_signed_with(ea, ea.credentials.secret)

    assert _send(ea, headers).status_code == 200
    replayed = _send(ea, headers)

    assert replayed.status_code == 401
    assert replayed.json() == GENERIC_401


def test_a_forged_request_to_a_cached_device_does_not_burn_the_nonce(ea):
    assert ea.poll().status_code == 200
    headers = _heartbeat_signed_with(ea, ea.credentials.secret)

    assert _send(ea, {**headers, signing.HEADER_SIGNATURE: "0" * 64}).status_code == 401
    assert _send(ea, headers).status_code == 200


def test_an_unknown_key_gets_the_same_401_every_time(redis_client):
    ea = ea_for(make_device())
    headers = signed_headers(key="vsk_nobody_here", secret="x", method="POST", path=HEARTBEAT, body=b"{}")
    first = ea.http.post(HEARTBEAT, b"{}", content_type="application/json", headers=headers)
    with CaptureQueriesContext(connection) as queries:
        second = ea.http.post(HEARTBEAT, b"{}", content_type="application/json", headers=headers)

    assert (first.status_code, second.status_code) == (401, 401)
    assert first.json() == second.json() == GENERIC_401
    assert _device_reads(queries) == []  # remembered as unknown, like a known key is remembered


@override_settings(EA_DEVICE_CACHE_SECONDS=1)
def test_a_change_made_around_the_services_is_seen_within_the_cache_time(ea):
    assert ea.poll().status_code == 200
    Device.objects.filter(pk=ea.device.pk).update(active=False)  # no service: no generation moves

    assert ea.poll().status_code == 200  # the copy is still young: this is the bound
    time.sleep(1.05)
    assert ea.poll().status_code == 401


def test_redis_down_is_503_for_a_cached_device_too(ea, unused_tcp_port):
    assert ea.poll().status_code == 200
    try:
        with override_settings(REDIS_URL=f"redis://127.0.0.1:{unused_tcp_port}/0"):
            response = ea.poll()
    finally:
        _client_for.cache_clear()
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "unavailable"


def test_a_revoke_that_cannot_reach_redis_changes_nothing(ea, unused_tcp_port):
    assert ea.poll().status_code == 200
    try:
        with (
            override_settings(REDIS_URL=f"redis://127.0.0.1:{unused_tcp_port}/0"),
            pytest.raises(DomainError) as refused,
        ):
            device_revoke(device=ea.device, by=Actor.system("t"))
    finally:
        _client_for.cache_clear()
    assert refused.value.status_code == 503
    device = Device.objects.get(pk=ea.device.pk)
    assert (device.active, device.revoked_at) == (True, None)
    assert ea.poll().status_code == 200


@override_settings(EA_THROTTLE_RATE="2/s")
def test_the_throttle_is_a_sliding_window_with_retry_after(ea):
    statuses = [ea.poll().status_code for _ in range(2)]
    throttled = ea.poll()

    assert statuses == [200, 200]
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert throttled.json()["error"]["code"] == "throttled"
    # The window slides: once the first requests are a second old, there is room again.
    time.sleep(1.05)
    assert ea.poll().status_code == 200


@override_settings(EA_THROTTLE_RATE="1/min", FEED_THROTTLE_RATE="3/min")
def test_a_feed_counts_against_its_own_rate(redis_client):
    feed = ea_for(make_device(role="feed", name="feed"))
    statuses = [feed.quotes({"quotes": []}).status_code for _ in range(4)]
    assert 429 not in statuses[:3]
    assert statuses[3] == 429


def test_last_seen_is_written_at_most_once_per_resolution(ea, redis_client):
    # given: a first request marks the device seen
    assert ea.poll().status_code == 200
    first_seen = Device.objects.get(pk=ea.device.pk).last_seen_at
    assert first_seen is not None

    # when: more requests come within the resolution
    Device.objects.filter(pk=ea.device.pk).update(last_seen_at=None)
    assert ea.poll().status_code == 200

    # then: no write for them
    assert Device.objects.get(pk=ea.device.pk).last_seen_at is None
    # ... until the mark lapses
    redis_client.delete(LAST_SEEN_KEY.format(device=ea.device.pk))
    assert ea.poll().status_code == 200
    assert Device.objects.get(pk=ea.device.pk).last_seen_at is not None


@pytest.mark.django_db(transaction=True)
def test_a_copy_read_while_the_revoke_commits_is_dropped_after_the_commit(redis_client):
    """The revoke renews the generation before its transaction and again after the commit.
    A request that reads the device in between reads the old row under the new
    generation: only the second renewal keeps that copy from authenticating later."""
    ea = ea_for(make_device())
    assert ea.poll().status_code == 200
    # given: the device row is locked, so the revoke blocks after its first renewal
    holder = connections.create_connection("default")
    holder.set_autocommit(False)
    with holder.cursor() as cursor:
        cursor.execute("SELECT 1 FROM ea_gateway_device WHERE id = %s FOR UPDATE", [ea.device.pk])
    failures: list[BaseException] = []

    def revoke() -> None:
        try:
            device_revoke(device=Device.objects.get(pk=ea.device.pk), by=Actor.system("t"))
        except BaseException as error:  # reported by the test, not lost in the thread
            failures.append(error)
        finally:
            connections.close_all()

    revoking = threading.Thread(target=revoke)
    revoking.start()
    try:
        wait_for(lambda: redis_client.keys("veilstop:device:generation:*"), timeout=10, interval=0.01)
        wait_for(lambda: _blocked_on_a_lock(ea.device.pk), timeout=10, interval=0.01)
        # when: a request reads the device now (the old row, the new generation)
        assert ea.poll().status_code == 200
    finally:
        holder.rollback()
        holder.close()
        revoking.join(10)

    # then: once the revoke has committed, that copy authenticates nothing
    assert failures == []
    assert Device.objects.get(pk=ea.device.pk).revoked_at is not None
    response = ea.poll()
    assert response.status_code == 401
    assert response.json() == GENERIC_401


def _blocked_on_a_lock(device_id: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND query LIKE %s",
            ['UPDATE "ea_gateway_device"%'],
        )
        return cursor.fetchone()[0] == 1
