"""Long-polls under a real gunicorn with the worker class of config/gunicorn.py (gevent):
one worker holds 200 waiting EAs with a handful of threads and no more database
connections than its request slots, still answers other requests at once, and hands a
command only to the EA it is for, and never to one that has hung up."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from django.db import connection

from positions.choices import CloseCommandStatus
from positions.closes import positions_close_manual
from positions.models import CloseCommand, OpenPosition
from signals_app.events import Actor
from tests.ea_helpers import signed_headers
from tests.factories import make_signal, open_book
from tests.helpers import current_database_url, start_process, stop_process, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

WAITING = 200
SLOTS = 8
CLOSES = "/api/v1/client/close-commands"


def _request(port: int, key: str, path: str, query: str = "", timeout: float = 30) -> tuple[int, dict, float]:
    headers = signed_headers(key=key, secret="s", method="GET", path=path, query_string=query)
    started = time.monotonic()
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        client.request("GET", f"{path}?{query}" if query else path, headers=headers)
        reply = client.getresponse()
        return reply.status, json.loads(reply.read() or b"{}"), time.monotonic() - started
    finally:
        client.close()


def _raw_long_poll(port: int, key: str) -> socket.socket:
    """A long-poll sent on a socket the test can close (the EA hanging up)."""
    query = "wait=20"
    headers = signed_headers(key=key, secret="s", method="GET", path=CLOSES, query_string=query)
    head = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {CLOSES}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n{head}\r\n".encode())
    return sock


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


SERVER_NAME = "longpoll-gunicorn"  # the server's connections, as pg_stat_activity names them


def _connections_of_the_server() -> int:
    """The gunicorn server's database connections (its application_name): not those other
    tests of this process may still hold."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [SERVER_NAME],
        )
        return cursor.fetchone()[0]


def _named(url: str, name: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={name}"


@pytest.fixture
def server(tmp_path, unused_tcp_port, redis_client):
    process = start_process(
        ["-m", "gunicorn", "config.wsgi", "--config", "python:config.gunicorn"],
        tmp_path / "gunicorn.log",
        WEB_PORT=str(unused_tcp_port),
        WEB_CONCURRENCY="1",
        WEB_REQUEST_SLOTS=str(SLOTS),
        DEBUG="false",
        DATABASE_URL=_named(current_database_url(), SERVER_NAME),
    )

    def answers() -> bool:
        try:
            return _request(unused_tcp_port, "nobody", "/api/v1/client/poll", timeout=2)[0] == 401
        except OSError:
            return False

    try:
        wait_for(answers, timeout=60)
        worker_pid = int(Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()[0])
        yield unused_tcp_port, process.pid, worker_pid
    finally:
        stop_process(process)
        print((tmp_path / "gunicorn.log").read_text()[-3000:])


def test_one_gevent_worker_holds_200_waiting_eas_and_still_serves(server):
    port, master_pid, worker_pid = server
    gold = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    open_book(gold, WAITING + 2)
    positions = list(OpenPosition.objects.select_related("device").order_by("pk"))
    waiters, hung_up, idle = positions[:WAITING], positions[WAITING], positions[WAITING + 1]
    answers: dict[int, tuple[int, dict, float]] = {}

    def wait_for_commands(position: OpenPosition) -> None:
        try:
            answers[position.pk] = _request(port, position.device.key_id, CLOSES, "wait=20")
        except OSError as error:
            answers[position.pk] = (0, {"error": str(error)}, 0.0)

    # given: 200 EAs waiting on one worker
    # (daemon threads: the ones still waiting end when the server stops)
    threads = [threading.Thread(target=wait_for_commands, args=(p,), daemon=True) for p in waiters]
    for thread in threads:
        thread.start()
    time.sleep(3)
    assert answers == {}  # all still waiting

    # then: a few threads and at most a slot's worth of database connections hold them
    assert _threads(worker_pid) < 10
    assert _connections_of_the_server() <= SLOTS

    # and another EA's plain request is answered at once
    for _ in range(5):
        status, body, took = _request(port, idle.device.key_id, CLOSES)
        assert (status, body) == (200, {"commands": []})
        assert took < 0.5

    # when: one waiting EA's position is closed, and another EA hangs up before its close
    sock = _raw_long_poll(port, hung_up.device.key_id)
    time.sleep(0.5)
    sock.close()
    chosen = waiters[37]
    closed_at = time.monotonic()
    positions_close_manual(position_ids=[chosen.pk, hung_up.pk], reason="desk", note="", by=Actor.system("t"))

    # then: only that EA is answered, promptly, with its command
    wait_for(lambda: chosen.pk in answers, timeout=5, interval=0.01)
    answered_in = time.monotonic() - closed_at
    status, body, _ = answers[chosen.pk]
    assert status == 200
    assert [command["position_id"] for command in body["commands"]] == [chosen.pk]
    assert answered_in < 1.0
    time.sleep(1)
    assert list(answers) == [chosen.pk]
    # nothing was leased to the EA that hung up: its command waits for its next request
    assert CloseCommand.objects.get(position=hung_up).status == CloseCommandStatus.PENDING
    status, body, _ = _request(port, hung_up.device.key_id, CLOSES)
    assert [command["position_id"] for command in body["commands"]] == [hung_up.pk]
    assert Decimal(body["commands"][0]["volume"]) == hung_up.volume
    # the leases went through the server's own connections (counted above by their name)
    assert 1 <= _connections_of_the_server() <= SLOTS

    # when: the server is stopped (a restart, a deploy)
    os.kill(master_pid, signal.SIGTERM)

    # then: every EA still waiting is answered at once, empty, not cut off after the graceful timeout
    wait_for(lambda: len(answers) == WAITING, timeout=5, interval=0.05)
    others = [answers[p.pk][:2] for p in waiters if p.pk != chosen.pk]
    assert [answer for answer in others if answer != (200, {"commands": []})] == []
