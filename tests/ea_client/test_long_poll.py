"""The reference client long-polls by default: ``?wait=N`` signed like any query, an HTTP
timeout longer than the wait, a close executed as soon as the server hands it out, a
fallback to plain polling, and no spinning on a server that answers early."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from ea_client.__main__ import build_parser
from ea_client.client import CLOSE_COMMANDS_PATH, POLL_PATH, EAClient
from ea_client.executors import SimulatedBroker
from ea_client.transport import SignedTransport
from tests.ea_client.signed_server import KEY, SECRET, SERVER_NOW, FakeVeilstop, Serve, SignedServer, Sleeps


def gold(instrument: str) -> tuple[Decimal, Decimal]:
    return Decimal("2650.1"), Decimal("2650.4")


@pytest.fixture
def api() -> FakeVeilstop:
    return FakeVeilstop()


@pytest.fixture
def api_server(serve: Serve, api: FakeVeilstop) -> SignedServer:
    return serve(handler=api)


def make_client(server: SignedServer, *, wait: int, timeout: float = 10) -> tuple[EAClient, SimulatedBroker]:
    transport = SignedTransport(
        server.url, KEY, SECRET, timeout=timeout, max_retries=0, clock=lambda: SERVER_NOW, sleep=Sleeps()
    )
    broker = SimulatedBroker(price_source=gold)
    return EAClient(transport, broker, long_poll_seconds=wait), broker


def gets(server: SignedServer, path: str) -> list[str]:
    return [seen.query_string for seen in server.seen if seen.method == "GET" and seen.path == path]


def until(condition, timeout: float = 5.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, "condition not met in time"
        time.sleep(0.005)
    return time.monotonic() - started


def test_a_long_poll_is_signed_with_its_wait_and_outlasts_the_transport_timeout(
    api: FakeVeilstop, api_server: SignedServer
) -> None:
    # given: a transport whose own timeout is shorter than the server will take to answer
    client, broker = make_client(api_server, wait=3, timeout=0.5)
    position = broker.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2650"))
    threading.Timer(1.0, api.add_command, args=(7,), kwargs={"ticket": position.ticket}).start()

    # when
    started = time.monotonic()
    [delivery] = client.execute_close_commands(wait=3)

    # then: the answer came when the command did, on a request signed with wait=3
    assert 1.0 <= time.monotonic() - started < 2.5
    assert delivery.reply == {"command_id": 7, "status": "executed"}
    assert gets(api_server, CLOSE_COMMANDS_PATH) == ["wait=3"]
    assert all(seen.authenticated for seen in api_server.seen)
    assert broker.open_positions() == []


def test_run_forever_long_polls_and_trades_as_soon_as_the_server_answers(
    api: FakeVeilstop, api_server: SignedServer
) -> None:
    client, broker = make_client(api_server, wait=20)
    position = broker.place("XAUUSD", "sell", Decimal("0.10"), Decimal("2650"))
    stop = threading.Event()
    runner = threading.Thread(target=client.run_forever, args=(0.2, stop))
    runner.start()
    try:
        until(lambda: gets(api_server, CLOSE_COMMANDS_PATH) and gets(api_server, POLL_PATH))

        # when: a command and an approval arrive while both polls wait
        api.add_command(3, ticket=position.ticket)
        closed_in = until(lambda: 3 in api.close_acks)
        api.add_approval(4)
        placed_in = until(lambda: 4 in api.acks)

        # then: each was carried out at once, not at a next poll
        assert closed_in < 1.0
        assert placed_in < 1.0
        assert set(gets(api_server, CLOSE_COMMANDS_PATH)) == {"wait=20"}
        assert set(gets(api_server, POLL_PATH)) == {"wait=20"}
        until(lambda: len(api.heartbeats) >= 3)  # on their own clock meanwhile
        [new] = broker.open_positions()
        until(lambda: api.heartbeats[-1]["open_tickets"] == [new.ticket])
    finally:
        stop.set()
        runner.join(5)
    assert not runner.is_alive()  # a stop does not wait for the long-polls in flight


def test_wait_0_falls_back_to_plain_polling(api: FakeVeilstop, api_server: SignedServer) -> None:
    client, _ = make_client(api_server, wait=0)
    stop = threading.Event()
    runner = threading.Thread(target=client.run_forever, args=(0.05, stop))
    runner.start()
    until(lambda: len(gets(api_server, POLL_PATH)) >= 3)
    stop.set()
    runner.join(5)

    assert set(gets(api_server, CLOSE_COMMANDS_PATH)) == {""}
    assert set(gets(api_server, POLL_PATH)) == {""}


def test_a_server_answering_at_once_is_not_hammered(api: FakeVeilstop, api_server: SignedServer) -> None:
    api.honor_wait = False  # a server that ignores wait answers every long-poll empty at once
    client, _ = make_client(api_server, wait=25)
    stop = threading.Event()
    runner = threading.Thread(target=client.run_forever, args=(0.25, stop))

    runner.start()
    time.sleep(1.0)
    stop.set()
    runner.join(5)

    # about one request per interval and path, not one per round trip
    assert 2 <= len(gets(api_server, CLOSE_COMMANDS_PATH)) <= 6
    assert 2 <= len(gets(api_server, POLL_PATH)) <= 6


def test_a_wait_beyond_the_protocols_bound_is_refused(api_server: SignedServer) -> None:
    with pytest.raises(ValueError, match="0 to 30"):
        make_client(api_server, wait=31)


def test_the_command_line_waits_25_by_default_and_takes_0_to_30(capsys) -> None:
    base = ["--server", "http://127.0.0.1:1", "--key", KEY, "--secret", SECRET]

    assert build_parser().parse_args(base).wait == 25
    assert build_parser().parse_args([*base, "--wait", "0"]).wait == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--wait", "31"])
    assert "--wait" in capsys.readouterr().err
