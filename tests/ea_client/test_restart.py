"""A reference client killed in the middle of a close and started again executes it once.

Real processes: ``python -m ea_client`` (or crashing_ea.py, which dies inside
the broker call) against a signature-checking server on 127.0.0.1, with the
simulated broker's account kept in a file so that it outlives the EA, as a
real broker's does. Each test counts the closing fills at the broker.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ea_client.store import ExecutedStore
from tests.ea_client.signed_server import DROP, KEY, SECRET, FakeVeilstop, Reply, Seen, SignedServer

REPO_ROOT = Path(__file__).resolve().parents[2]
CLOSE_ACK = "/api/v1/client/close-ack"


class Server:
    """FakeVeilstop on a real clock, with a hook run when a close-ack arrives."""

    def __init__(self) -> None:
        self.api = FakeVeilstop()
        self.on_close_ack: Callable[[Seen], Reply | object | None] | None = None
        self.http = SignedServer({KEY: SECRET}, self._handle).start()

    def _handle(self, seen: Seen) -> Reply | object:
        if seen.path == CLOSE_ACK and self.on_close_ack is not None:
            hook, self.on_close_ack = self.on_close_ack, None
            answer = hook(seen)
            if answer is not None:
                return answer
        return self.api(seen)


@pytest.fixture
def server() -> Iterator[Server]:
    started = Server()
    yield started
    started.http.stop()


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def start(processes: list[subprocess.Popen], arguments: list[str], log: Path) -> subprocess.Popen:
    environment = {**os.environ, "VEILSTOP_EA_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
    with open(log, "a") as output:
        process = subprocess.Popen(
            [sys.executable, *arguments], cwd=REPO_ROOT, env=environment, stdout=output, stderr=output
        )
    processes.append(process)
    return process


def reference_ea(url: str, tmp_path: Path) -> list[str]:
    return [
        "-m", "ea_client", "--server", url, "--key", KEY, "--simulated",
        "--simulated-state", str(tmp_path / "broker.json"), "--state", str(tmp_path / "ea.sqlite3"),
        "--wait", "1", "--interval", "0.2", "--max-retries", "0", "--log-level", "DEBUG",
    ]  # fmt: skip


def until(condition: Callable[[], object], timeout: float = 20, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def closing_fills(tmp_path: Path, ticket: str) -> list[list[str]]:
    return json.loads((tmp_path / "broker.json").read_text())["fills"].get(ticket, [])


def open_one_position(server: Server, processes: list[subprocess.Popen], tmp_path: Path) -> subprocess.Popen:
    server.api.add_approval(1)
    ea = start(processes, reference_ea(server.http.url, tmp_path), tmp_path / "ea.log")
    until(lambda: 1 in server.api.acks, what="the approval placed")
    assert server.api.acks[1][0]["broker_ticket"] == "1"
    return ea


@pytest.mark.parametrize("applied", [False, True], ids=["ack-never-arrived", "ack-applied-answer-lost"])
def test_killed_while_acknowledging_a_close_the_restarted_ea_resends_it_and_closes_once(
    server: Server, processes: list[subprocess.Popen], tmp_path: Path, applied: bool
) -> None:
    # given: an EA with an open position and a close command for half of it
    ea = open_one_position(server, processes, tmp_path)
    sent: list[dict] = []

    def kill_the_ea(seen: Seen) -> object:
        sent.append(seen.json)
        if applied:
            server.api(seen)
        ea.send_signal(signal.SIGKILL)  # the process dies with its ack in flight
        return DROP

    server.on_close_ack = kill_the_ea
    server.api.add_command(7, ticket="1", volume="0.05")

    # when: the EA is killed as its close-ack reaches the server, and started again
    until(lambda: sent, what="the first close-ack")
    assert ea.wait(10) == -signal.SIGKILL
    assert (7 in server.api.close_acks) == applied
    start(processes, reference_ea(server.http.url, tmp_path), tmp_path / "ea.log")
    until(
        lambda: 7 in server.api.close_acks and not ExecutedStore(tmp_path / "ea.sqlite3").unconfirmed("close")
    )

    # then: one closing fill at the broker, and the same acknowledgement as before the kill
    assert len(closing_fills(tmp_path, "1")) == 1
    assert server.api.close_acks[7][0] == sent[0]
    assert sent[0]["status"] == "executed"
    assert sent[0]["closed_volume"] == "0.05"


def test_killed_between_the_broker_fill_and_its_record_the_restarted_ea_does_not_close_again(
    server: Server, processes: list[subprocess.Popen], tmp_path: Path
) -> None:
    # given: a position of 0.10 lots, and an EA that dies as soon as its broker filled a close
    first = open_one_position(server, processes, tmp_path)
    first.kill()
    first.wait(10)
    time.sleep(1.5)  # the server answers the dead EA's long-poll (wait=1): it must not take the command
    crashing = start(
        processes,
        ["-m", "tests.ea_client.crashing_ea", server.http.url, KEY, str(tmp_path / "broker.json"),
         str(tmp_path / "ea.sqlite3")],
        tmp_path / "crashing.log",
    )  # fmt: skip

    # when: a close of half the position is delivered; the broker fills it and the EA dies
    server.api.add_command(7, ticket="1", volume="0.05")
    assert crashing.wait(20) == -signal.SIGKILL
    assert closing_fills(tmp_path, "1") == [["2650.5", "0.05"]]
    outcome = ExecutedStore(tmp_path / "ea.sqlite3").get("close", 7)
    assert outcome is not None
    assert outcome.result is None  # the intent, and no result
    assert 7 not in server.api.close_acks

    # and the reference EA starts on the same files once the command's lease has run out
    server.api.expire_leases()
    start(processes, reference_ea(server.http.url, tmp_path), tmp_path / "ea.log")
    until(lambda: 7 in server.api.close_acks, what="the close-ack after the restart")

    # then: still one closing fill (a second 0.05 would have gone through: 0.05 is still open),
    # acknowledged as executed at that fill's price
    time.sleep(1.5)  # a few more cycles: nothing more may happen
    assert closing_fills(tmp_path, "1") == [["2650.5", "0.05"]]
    assert server.api.close_acks[7][0] == {
        "command_id": 7,
        "status": "executed",
        "close_price": "2650.5",
        "closed_volume": "0.05",
    }
    log = (tmp_path / "ea.log").read_text()
    assert "had been executed before the restart" in log, log[-3000:]
