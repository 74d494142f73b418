"""The EA API served by gunicorn as config/gunicorn.py sets it up, in its own process:
a revoke made elsewhere reaches a worker's cached device at once, and a database
connection the server dropped costs at most the one request that finds it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.db import connection

from ea_gateway.services import IssuedCredentials, device_revoke
from signals_app.events import Actor
from tests.ea_helpers import make_device, signed_headers
from tests.helpers import current_database_url, start_process, stop_process, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

# The server's connections carry this name, so the test drops those and no other.
APPLICATION_NAME = "veilstop-test-gunicorn"
POLL = "/api/v1/client/poll"
HEARTBEAT = "/api/v1/client/heartbeat"


def _status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 - our own local server
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def gunicorn(tmp_path: Path, unused_tcp_port: int, redis_client) -> Iterator[Callable[..., str]]:
    """Start ``gunicorn config.wsgi --config python:config.gunicorn`` (one worker); its URL."""
    processes = []

    def start(**environment: str) -> str:
        process = start_process(
            ["-m", "gunicorn", "config.wsgi", "--config", "python:config.gunicorn"],
            tmp_path / "gunicorn.log",
            WEB_PORT=str(unused_tcp_port),
            WEB_CONCURRENCY="1",
            DATABASE_URL=_named(current_database_url()),
            DEBUG="false",
            LOG_LEVEL="WARNING",
            **environment,
        )
        processes.append(process)
        url = f"http://127.0.0.1:{unused_tcp_port}"
        wait_for(lambda: process.poll() is not None or _answers(url), timeout=60)
        assert process.poll() is None, (tmp_path / "gunicorn.log").read_text()
        return url

    yield start
    for process in processes:
        stop_process(process)


def _named(database_url: str) -> str:
    """The URL with the server's application_name (the embedded default's URL already has a
    query: its socket directory)."""
    return f"{database_url}{'&' if '?' in database_url else '?'}application_name={APPLICATION_NAME}"


def _answers(url: str) -> bool:
    try:
        _status(url + "/healthz")
    except OSError:
        return False
    return True


def _poll(url: str, credentials: IssuedCredentials) -> int:
    headers = signed_headers(
        key=credentials.device.key_id, secret=credentials.secret, method="GET", path=POLL
    )
    return _status(url + POLL, headers)


def _heartbeat(url: str, credentials: IssuedCredentials) -> int:
    body = json.dumps({"balance": "1.00", "equity": "1.00", "open_tickets": []}).encode()
    headers = signed_headers(
        key=credentials.device.key_id, secret=credentials.secret, method="POST", path=HEARTBEAT, body=body
    )
    request = urllib.request.Request(  # noqa: S310 - our own local server
        url + HEARTBEAT, data=body, headers={**headers, "Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_revoke_reaches_a_worker_that_cached_the_device(gunicorn):
    url = gunicorn()
    credentials = make_device()
    assert [_poll(url, credentials) for _ in range(3)] == [200, 200, 200]  # the worker holds it now

    device_revoke(device=credentials.device, by=Actor.system("t"))

    assert _poll(url, credentials) == 401


def _drop_server_connections() -> int:
    """What a PostgreSQL restart or an idle timeout does to the worker's kept connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            [APPLICATION_NAME],
        )
        return cursor.fetchone()[0]


@pytest.mark.parametrize(
    ("health_checks", "allowed_failures"),
    [
        # The default: no check query per request. The request that finds the dead
        # connection fails (one per kept connection: a worker's request slots each keep
        # one); Django closes it as that request ends; the next one reconnects.
        ("false", 1),
        # With checks on, the dead connection is found before it is used.
        ("true", 0),
    ],
)
def test_a_dropped_database_connection_costs_at_most_one_request(gunicorn, health_checks, allowed_failures):
    url = gunicorn(DATABASE_CONN_MAX_AGE="60", DATABASE_CONN_HEALTH_CHECKS=health_checks)
    credentials = make_device()
    # A heartbeat always writes: the worker opens a connection and keeps it.
    assert _heartbeat(url, credentials) == 200

    assert _drop_server_connections() == 1
    statuses = [_heartbeat(url, credentials) for _ in range(3)]

    failures = [status for status in statuses if status != 200]
    assert len(failures) <= allowed_failures, statuses
    assert set(failures) <= {500, 503}  # a server error the EA retries, never a 4xx
    assert statuses[-2:] == [200, 200]
