"""EAClient end to end: a real signed transport, a local server with the EA
endpoints' semantics, and the simulated broker."""

from __future__ import annotations

import logging
import threading
import time
from decimal import Decimal

import pytest

from ea_client.client import (
    ACK_PATH,
    CLOSE_ACK_PATH,
    CLOSE_COMMANDS_PATH,
    HEARTBEAT_PATH,
    POLL_PATH,
    EAClient,
)
from ea_client.executors import Account, CloseFill, Fill, SimulatedBroker
from ea_client.store import ExecutedStore
from ea_client.transport import SignedTransport
from tests.ea_client.signed_server import KEY, SECRET, SERVER_NOW, FakeVeilstop, Serve, SignedServer, Sleeps

BID, ASK = Decimal("2650.1"), Decimal("2650.4")


def gold_only(instrument: str) -> tuple[Decimal, Decimal]:
    if instrument != "XAUUSD":
        raise LookupError(f"market closed for {instrument}")
    return BID, ASK


@pytest.fixture
def api() -> FakeVeilstop:
    return FakeVeilstop()


@pytest.fixture
def api_server(serve: Serve, api: FakeVeilstop) -> SignedServer:
    return serve(handler=api)


@pytest.fixture
def broker() -> SimulatedBroker:
    return SimulatedBroker(price_source=gold_only)


@pytest.fixture
def client(api_server: SignedServer, broker: SimulatedBroker) -> EAClient:
    # No transport-level retries: each cycle sees a fault exactly once.
    transport = SignedTransport(
        api_server.url, KEY, SECRET, max_retries=0, clock=lambda: SERVER_NOW, sleep=Sleeps()
    )
    return EAClient(transport, broker)


def requests_to(server: SignedServer, path: str) -> list[dict]:
    return [seen.json for seen in server.seen if seen.path == path and seen.method == "POST"]


def test_each_approval_is_placed_once_and_acknowledged_with_the_fill(
    client: EAClient, api: FakeVeilstop, broker: SimulatedBroker
) -> None:
    api.add_approval(1, direction="buy")
    api.add_approval(2, direction="sell")

    deliveries = client.poll_and_execute()
    client.poll_and_execute()

    buy, sell = broker.open_positions()
    assert (buy.direction, buy.open_price, buy.volume) == ("buy", ASK, Decimal("0.10"))
    assert (sell.direction, sell.open_price) == ("sell", BID)
    assert api.acks[1][0] == {
        "approval_id": 1,
        "status": "placed",
        "broker_ticket": buy.ticket,
        "entry_price": "2650.4",
        "volume": "0.10",
    }
    assert api.acks[2][0]["broker_ticket"] == sell.ticket
    assert [delivery.reply for delivery in deliveries] == [
        {"approval_id": 1, "status": "placed", "position_id": 9001},
        {"approval_id": 2, "status": "placed", "position_id": 9002},
    ]


def test_a_broker_rejection_is_acknowledged_as_failed(
    client: EAClient, api: FakeVeilstop, broker: SimulatedBroker
) -> None:
    api.add_approval(5, instrument="EURUSD")

    client.poll_and_execute()

    body, answer = api.acks[5]
    assert body["status"] == "failed"
    assert "market closed for EURUSD" in body["error"]
    assert set(body) == {"approval_id", "status", "error"}
    assert answer == {"approval_id": 5, "status": "failed"}
    assert broker.open_positions() == []


def test_invalid_execution_params_fail_without_trading(
    client: EAClient, api: FakeVeilstop, broker: SimulatedBroker
) -> None:
    api.add_approval(6, direction="hold")
    api.add_approval(7)
    api.approvals[7]["execution_params"]["volume"] = "-1"

    client.poll_and_execute()

    assert api.acks[6][0]["status"] == "failed"
    assert "direction" in api.acks[6][0]["error"]
    assert api.acks[7][0]["status"] == "failed"
    assert broker.open_positions() == []


def test_an_unexpected_executor_error_settles_the_approval_as_failed(
    api_server: SignedServer, api: FakeVeilstop
) -> None:
    class Broken:
        calls = 0

        def place(self, instrument: str, direction: str, volume: Decimal, entry_price: Decimal) -> Fill:
            Broken.calls += 1
            raise ConnectionError("terminal went away")

        def close(self, ticket: str, volume: Decimal) -> CloseFill:
            raise AssertionError("not called")

        def closing_fills(self, ticket: str) -> list[CloseFill]:
            raise AssertionError("not called")

        def account(self) -> Account:
            raise AssertionError("not called")

    transport = SignedTransport(api_server.url, KEY, SECRET, clock=lambda: SERVER_NOW, sleep=Sleeps())
    client = EAClient(transport, Broken())
    api.add_approval(8)

    client.poll_and_execute()
    client.poll_and_execute()

    assert Broken.calls == 1
    assert api.acks[8][0]["status"] == "failed"
    assert "ConnectionError: terminal went away" in api.acks[8][0]["error"]


def test_an_unconfirmed_ack_is_resent_and_the_order_is_not_placed_again(
    client: EAClient, api: FakeVeilstop, api_server: SignedServer, broker: SimulatedBroker
) -> None:
    # given the server is unavailable for the first two acks
    api.add_approval(1)
    api.inject(ACK_PATH, "unavailable", "unavailable")

    # when: cycle 1 places and fails to ack; cycle 2's re-send fails too while the
    # approval is offered again; cycle 3's re-send arrives
    first = client.poll_and_execute()
    second = client.poll_and_execute()
    third = client.poll_and_execute()

    # then one broker order, and three identical acks on the wire
    assert len(broker.open_positions()) == 1
    acks = requests_to(api_server, ACK_PATH)
    assert len(acks) == 3
    assert acks[0] == acks[1] == acks[2]
    assert acks[0]["broker_ticket"] == broker.open_positions()[0].ticket
    assert first[0].error is not None
    assert second[0].error is not None
    assert third[0].reply == {"approval_id": 1, "status": "placed", "position_id": 9001}
    assert client.poll_and_execute() == []


def test_a_lost_ack_answer_is_recovered_by_resending_the_same_body(
    client: EAClient, api: FakeVeilstop, api_server: SignedServer, broker: SimulatedBroker
) -> None:
    # given the server records the ack but its answer never arrives
    api.add_approval(1)
    api.inject(ACK_PATH, "lost")

    first = client.poll_and_execute()
    second = client.poll_and_execute()

    assert first[0].error is not None
    assert second[0].reply == {"approval_id": 1, "status": "placed", "position_id": 9001}
    acks = requests_to(api_server, ACK_PATH)
    assert len(acks) == 2
    assert acks[0] == acks[1]
    assert len(broker.open_positions()) == 1


def test_a_conflicting_ack_is_not_resent(
    client: EAClient, api: FakeVeilstop, api_server: SignedServer, broker: SimulatedBroker, caplog
) -> None:
    api.add_approval(1)
    api.inject(ACK_PATH, "conflict")

    with caplog.at_level(logging.ERROR, logger="ea_client"):
        [delivery] = client.poll_and_execute()
    del api.approvals[1]
    client.poll_and_execute()

    assert delivery.error is not None
    assert "409" in delivery.error
    assert len(requests_to(api_server, ACK_PATH)) == 1
    assert any("not re-sending" in record.getMessage() for record in caplog.records)
    assert len(broker.open_positions()) == 1


def test_an_approval_offered_again_gets_its_stored_ack_not_a_second_order(
    client: EAClient, api: FakeVeilstop, api_server: SignedServer, broker: SimulatedBroker
) -> None:
    api.add_approval(1)
    api.inject(ACK_PATH, "conflict")
    client.poll_and_execute()

    # the server still offers approval 1 (it recorded nothing)
    [delivery] = client.poll_and_execute()

    assert delivery.reply is not None
    assert delivery.reply["status"] == "placed"
    acks = requests_to(api_server, ACK_PATH)
    assert len(acks) == 2
    assert acks[0] == acks[1]
    assert len(broker.open_positions()) == 1


def test_a_close_command_is_executed_at_the_bid_and_acknowledged(
    client: EAClient, api: FakeVeilstop, broker: SimulatedBroker
) -> None:
    fill = broker.place("XAUUSD", "buy", Decimal("0.30"), Decimal("2650"))
    api.add_command(7, ticket=fill.ticket, volume="0.10")

    [delivery] = client.execute_close_commands()

    assert api.close_acks[7][0] == {
        "command_id": 7,
        "status": "executed",
        "close_price": "2650.1",
        "closed_volume": "0.10",
    }
    assert delivery.reply == {"command_id": 7, "status": "executed"}
    assert broker.open_positions()[0].volume == Decimal("0.20")


def test_a_close_for_an_unknown_ticket_is_acknowledged_as_failed(client: EAClient, api: FakeVeilstop) -> None:
    api.add_command(8, ticket="424242")

    client.execute_close_commands()

    body, _ = api.close_acks[8]
    assert body["status"] == "failed"
    assert "424242" in body["error"]


def test_a_redelivered_close_command_is_never_executed_twice(
    client: EAClient, api: FakeVeilstop, api_server: SignedServer, broker: SimulatedBroker
) -> None:
    # given a position and a close command whose first two acks do not get through
    fill = broker.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2650"))
    api.add_command(7, ticket=fill.ticket)
    api.inject(CLOSE_ACK_PATH, "unavailable", "unavailable")

    # when the lease expires and the command is delivered again
    client.execute_close_commands()
    api.expire_leases()
    client.execute_close_commands()
    client.execute_close_commands()

    # then it was closed once, and the same executed ack was sent each time
    close_gets = [seen for seen in api_server.seen if seen.path == CLOSE_COMMANDS_PATH]
    assert len(close_gets) == 3
    acks = requests_to(api_server, CLOSE_ACK_PATH)
    assert len(acks) == 3
    assert acks[0] == acks[1] == acks[2]
    assert acks[0]["status"] == "executed"
    assert api.close_acks[7][0] == acks[0]
    assert broker.account().open_tickets == []


def test_a_command_is_not_delivered_again_during_its_lease(
    client: EAClient, api: FakeVeilstop, api_server: SignedServer, broker: SimulatedBroker
) -> None:
    fill = broker.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2650"))
    api.add_command(7, ticket=fill.ticket)
    api.inject(CLOSE_ACK_PATH, "lost")

    client.execute_close_commands()
    [resent] = client.execute_close_commands()

    assert resent.reply == {"command_id": 7, "status": "executed"}
    acks = requests_to(api_server, CLOSE_ACK_PATH)
    assert acks[0] == acks[1]


def test_the_heartbeat_reports_the_account(
    client: EAClient, api: FakeVeilstop, broker: SimulatedBroker
) -> None:
    fill = broker.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2650"))

    server_time = client.send_heartbeat()

    assert server_time == api.server_time
    # Bought at the ask, marked at the bid: 0.3 x 0.10 x 100 = 3.00 down.
    assert api.heartbeats == [{"balance": "10000.00", "equity": "9997.00", "open_tickets": [fill.ticket]}]


def test_run_once_closes_first_then_trades_then_reports(
    client: EAClient, api: FakeVeilstop, api_server: SignedServer, broker: SimulatedBroker
) -> None:
    old = broker.place("XAUUSD", "sell", Decimal("0.10"), Decimal("2650"))
    api.add_command(3, ticket=old.ticket)
    api.add_approval(4)

    assert client.run_once() is True

    assert [(seen.method, seen.path) for seen in api_server.seen] == [
        ("GET", CLOSE_COMMANDS_PATH),
        ("POST", CLOSE_ACK_PATH),
        ("GET", POLL_PATH),
        ("POST", ACK_PATH),
        ("POST", HEARTBEAT_PATH),
    ]
    [new] = broker.open_positions()
    assert api.heartbeats[-1]["open_tickets"] == [new.ticket]


def test_run_once_carries_on_past_a_failing_step(
    client: EAClient, api: FakeVeilstop, api_server: SignedServer, caplog
) -> None:
    api.add_approval(4)
    api.inject(CLOSE_COMMANDS_PATH, "unavailable")

    with caplog.at_level(logging.ERROR, logger="ea_client"):
        ok = client.run_once()

    assert ok is False
    assert 4 in api.acks
    assert len(api.heartbeats) == 1
    assert any("execute_close_commands failed" in record.getMessage() for record in caplog.records)


def test_run_once_is_false_while_an_ack_is_unconfirmed(client: EAClient, api: FakeVeilstop) -> None:
    api.add_approval(4)
    api.inject(ACK_PATH, "unavailable")

    assert client.run_once() is False
    assert client.run_once() is True


def test_run_forever_cycles_until_stopped(client: EAClient, api: FakeVeilstop) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=client.run_forever, args=(0.01, stop))

    worker.start()
    deadline = time.monotonic() + 10
    while len(api.heartbeats) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    worker.join(timeout=10)

    assert not worker.is_alive()
    assert len(api.heartbeats) >= 3


def test_broker_float_noise_is_rounded_to_what_the_server_stores(
    api_server: SignedServer, api: FakeVeilstop
) -> None:
    class NoisyBroker:
        """What Decimal(str(float)) gives for an MT5 terminal's doubles."""

        def place(self, instrument: str, direction: str, volume: Decimal, entry_price: Decimal) -> Fill:
            return Fill(ticket="77", price=Decimal("1.0820000000000001"), volume=Decimal("0.1"))

        def close(self, ticket: str, volume: Decimal) -> CloseFill:
            return CloseFill(price=Decimal("1.08195"), volume=Decimal("0.10000000000000001"))

        def closing_fills(self, ticket: str) -> list[CloseFill]:
            return []

        def account(self) -> Account:
            return Account(balance=Decimal("10000.300000000001"), equity=Decimal("1E+4"), open_tickets=["77"])

    transport = SignedTransport(api_server.url, KEY, SECRET, clock=lambda: SERVER_NOW, sleep=Sleeps())
    client = EAClient(transport, NoisyBroker())
    api.add_approval(1, instrument="EURUSD")
    api.add_command(2, ticket="77")

    client.run_once()

    assert api.acks[1][0]["entry_price"] == "1.0820000000"
    assert api.acks[1][0]["volume"] == "0.1"
    assert api.close_acks[2][0]["close_price"] == "1.08195"
    assert api.close_acks[2][0]["closed_volume"] == "0.10"
    assert api.heartbeats == [{"balance": "10000.30", "equity": "10000.00", "open_tickets": ["77"]}]


def test_an_approval_begun_by_a_process_that_died_is_settled_as_failed_not_placed_again(
    api_server: SignedServer, api: FakeVeilstop, broker: SimulatedBroker, tmp_path
) -> None:
    # given: a store saying approval 1 was being placed when the process died
    store = ExecutedStore(tmp_path / "ea.sqlite3")
    store.begin("approval", 1, {})
    transport = SignedTransport(api_server.url, KEY, SECRET, clock=lambda: SERVER_NOW, sleep=Sleeps())
    client = EAClient(transport, broker, store=store)
    api.add_approval(1)

    # when
    client.run_once()

    # then: no order (a second position would be worse than none), and the owner learns why
    assert broker.open_positions() == []
    assert api.acks[1][0] == {
        "approval_id": 1,
        "status": "failed",
        "error": "outcome unknown: the EA stopped while placing it",
    }
    assert store.unconfirmed("approval") == []


def test_a_close_begun_before_a_restart_with_no_fill_since_is_executed_once(
    api_server: SignedServer, api: FakeVeilstop, broker: SimulatedBroker, tmp_path
) -> None:
    # given: a position, and a store whose close intent was written but the order never left
    ticket = broker.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2650.5")).ticket
    store = ExecutedStore(tmp_path / "ea.sqlite3")
    store.begin("close", 7, {"ticket": ticket, "fills_before": 0})
    transport = SignedTransport(api_server.url, KEY, SECRET, clock=lambda: SERVER_NOW, sleep=Sleeps())
    client = EAClient(transport, broker, store=store)
    api.add_command(7, ticket=ticket)

    # when: delivered, and delivered again after its lease
    client.run_once()
    api.expire_leases()
    client.run_once()

    # then
    assert len(broker.closing_fills(ticket)) == 1
    assert api.close_acks[7][0]["status"] == "executed"
