"""SimulatedBroker's book, P&L and locking; MT5Executor against a stand-in
for the Windows-only MetaTrader5 package."""

from __future__ import annotations

import subprocess
import sys
import threading
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from ea_client.executors import CloseFill, ExecutionError, MT5Executor, SimulatedBroker


class Prices:
    """A settable (bid, ask) per instrument."""

    def __init__(self, **quotes: tuple[str, str]) -> None:
        self.quotes = {symbol: (Decimal(bid), Decimal(ask)) for symbol, (bid, ask) in quotes.items()}

    def set(self, symbol: str, bid: str, ask: str) -> None:
        self.quotes[symbol] = (Decimal(bid), Decimal(ask))

    def __call__(self, symbol: str) -> tuple[Decimal, Decimal]:
        return self.quotes[symbol]


def test_a_buy_fills_at_the_ask_and_a_sell_at_the_bid() -> None:
    broker = SimulatedBroker(price_source=Prices(XAUUSD=("2650.1", "2650.4")))

    buy = broker.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2600"))
    sell = broker.place("XAUUSD", "sell", Decimal("0.20"), Decimal("2600"))

    assert (buy.price, buy.volume) == (Decimal("2650.4"), Decimal("0.10"))
    assert (sell.price, sell.volume) == (Decimal("2650.1"), Decimal("0.20"))
    assert buy.ticket != sell.ticket
    assert int(sell.ticket) == int(buy.ticket) + 1


def test_without_a_price_source_orders_fill_at_the_requested_entry_and_close_flat() -> None:
    broker = SimulatedBroker()

    fill = broker.place("XAUUSD", "sell", Decimal("0.10"), Decimal("2650.5"))
    closed = broker.close(fill.ticket, Decimal("0.10"))

    assert fill.price == Decimal("2650.5")
    assert closed.price == Decimal("2650.5")
    assert broker.account().balance == Decimal("10000.00")


def test_closing_a_buy_at_the_bid_books_pnl_with_the_contract_size() -> None:
    prices = Prices(XAUUSD=("2650.1", "2650.4"))
    broker = SimulatedBroker(price_source=prices)
    fill = broker.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2650.5"))
    prices.set("XAUUSD", "2660.1", "2660.4")

    closed = broker.close(fill.ticket, Decimal("0.10"))

    # (2660.1 bid - 2650.4 ask) x 0.10 lot x 100 oz
    assert closed.price == Decimal("2660.1")
    assert broker.account().balance == Decimal("10097.00")
    assert broker.account().open_tickets == []


def test_closing_a_sell_at_the_ask_books_pnl() -> None:
    prices = Prices(EURUSD=("1.08000", "1.08010"))
    broker = SimulatedBroker(balance=Decimal("5000"), price_source=prices)
    fill = broker.place("EURUSD", "sell", Decimal("0.50"), Decimal("1.08"))
    prices.set("EURUSD", "1.08190", "1.08200")

    closed = broker.close(fill.ticket, Decimal("0.50"))

    # (1.08000 bid - 1.08200 ask) x 0.50 lot x 100,000: a 100.00 loss
    assert closed.price == Decimal("1.08200")
    assert broker.account().balance == Decimal("4900.00")


def test_contract_sizes_can_be_given_and_unknown_symbols_trade_one_unit() -> None:
    prices = Prices(XAUUSD=("100", "100"), US500=("5000", "5000"))
    broker = SimulatedBroker(price_source=prices, contract_sizes={"XAUUSD": Decimal("10")})
    gold = broker.place("XAUUSD", "buy", Decimal("1"), Decimal("100"))
    index = broker.place("US500", "buy", Decimal("2"), Decimal("5000"))
    prices.set("XAUUSD", "101", "101")
    prices.set("US500", "5010", "5010")

    broker.close(gold.ticket, Decimal("1"))
    broker.close(index.ticket, Decimal("2"))

    assert broker.account().balance == Decimal("10000") + Decimal("10") + Decimal("20")


def test_a_partial_close_leaves_the_rest_open() -> None:
    prices = Prices(XAUUSD=("2650", "2650"))
    broker = SimulatedBroker(price_source=prices)
    fill = broker.place("XAUUSD", "buy", Decimal("0.30"), Decimal("2650"))
    prices.set("XAUUSD", "2651", "2651")

    broker.close(fill.ticket, Decimal("0.10"))

    [position] = broker.open_positions()
    assert position.volume == Decimal("0.20")
    assert broker.account().balance == Decimal("10010.00")
    assert broker.account().open_tickets == [fill.ticket]


def test_equity_is_balance_plus_floating_pnl_on_the_closing_side() -> None:
    prices = Prices(XAUUSD=("2650.1", "2650.4"))
    broker = SimulatedBroker(price_source=prices)
    broker.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2650"))
    broker.place("XAUUSD", "sell", Decimal("0.10"), Decimal("2650"))

    before = broker.account()
    prices.set("XAUUSD", "2640.1", "2640.4")
    after = broker.account()

    # Just opened, both lose the spread: buy at 2650.4 marked at 2650.1, sell at 2650.1 marked at 2650.4.
    assert before.balance == Decimal("10000.00")
    assert before.equity == Decimal("10000") - Decimal("3") - Decimal("3")
    # Buy: (2640.1 - 2650.4) x 10 = -103; sell: (2650.1 - 2640.4) x 10 = +97.
    assert after.equity == Decimal("10000") - Decimal("103") + Decimal("97")
    assert after.balance == Decimal("10000.00")
    assert len(after.open_tickets) == 2


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda broker: broker.place("XAUUSD", "hold", Decimal("1"), Decimal("1")), "direction"),
        (lambda broker: broker.place("XAUUSD", "buy", Decimal("0"), Decimal("1")), "positive"),
        (lambda broker: broker.place("GBPJPY", "buy", Decimal("1"), Decimal("1")), "no price"),
        (lambda broker: broker.close("999", Decimal("1")), "no open position"),
    ],
)
def test_refusals_are_execution_errors(call: Any, message: str) -> None:
    broker = SimulatedBroker(price_source=Prices(XAUUSD=("1", "1")))

    with pytest.raises(ExecutionError, match=message):
        call(broker)

    assert broker.open_positions() == []


def test_closing_more_than_is_open_is_refused_and_changes_nothing() -> None:
    broker = SimulatedBroker(price_source=Prices(XAUUSD=("1", "1")))
    fill = broker.place("XAUUSD", "buy", Decimal("0.10"), Decimal("1"))

    with pytest.raises(ExecutionError, match="cannot close"):
        broker.close(fill.ticket, Decimal("0.20"))

    assert broker.open_positions()[0].volume == Decimal("0.10")


def test_concurrent_trading_keeps_tickets_unique_and_money_exact() -> None:
    # given a one-point spread on a 1-unit contract: each round trip loses 1.00
    broker = SimulatedBroker(price_source=Prices(X=("100", "101")), contract_sizes={"X": Decimal("1")})
    threads, rounds = 8, 150
    tickets: list[str] = []
    tickets_lock = threading.Lock()
    start = threading.Barrier(threads)
    previous_interval = sys.getswitchinterval()

    def trade() -> None:
        start.wait()
        for _ in range(rounds):
            fill = broker.place("X", "buy", Decimal("1"), Decimal("100"))
            with tickets_lock:
                tickets.append(fill.ticket)
            broker.close(fill.ticket, Decimal("1"))

    # when many threads trade at once, switching as often as the interpreter can
    sys.setswitchinterval(1e-6)
    try:
        workers = [threading.Thread(target=trade) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
    finally:
        sys.setswitchinterval(previous_interval)

    # then
    assert len(tickets) == threads * rounds
    assert len(set(tickets)) == threads * rounds
    account = broker.account()
    assert account.open_tickets == []
    assert account.balance == Decimal("10000") - threads * rounds


def test_importing_ea_client_never_imports_metatrader5() -> None:
    code = (
        "import sys, ea_client.executors, ea_client.client, ea_client.transport, ea_client.__main__;"
        "sys.exit(1 if 'MetaTrader5' in sys.modules else 0)"
    )

    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stderr


class FakeMT5:
    """Just enough of the MetaTrader5 module's surface, recording order_send calls."""

    TRADE_ACTION_DEAL = 1
    ORDER_TYPE_BUY = 0
    ORDER_TYPE_SELL = 1
    POSITION_TYPE_BUY = 0
    POSITION_TYPE_SELL = 1
    ORDER_TIME_GTC = 0
    ORDER_FILLING_FOK = 0
    ORDER_FILLING_IOC = 1
    ORDER_FILLING_RETURN = 2
    TRADE_RETCODE_DONE = 10009
    DEAL_ENTRY_IN = 0
    DEAL_ENTRY_OUT = 1
    DEAL_ENTRY_INOUT = 2
    DEAL_ENTRY_OUT_BY = 3

    def __init__(self) -> None:
        self.initialize_args: tuple[tuple[Any, ...], dict[str, Any]] | None = None
        self.sent: list[dict[str, Any]] = []
        self.retcode = self.TRADE_RETCODE_DONE
        self.filling_mode = 2
        self.positions = [
            SimpleNamespace(ticket=555, symbol="XAUUSD", type=self.POSITION_TYPE_BUY, volume=0.1)
        ]

    def initialize(self, *args: Any, **kwargs: Any) -> bool:
        self.initialize_args = (args, kwargs)
        return True

    def last_error(self) -> tuple[int, str]:
        return (-1, "fake error")

    def symbol_select(self, symbol: str, enable: bool) -> bool:
        return symbol == "XAUUSD"

    def symbol_info(self, symbol: str) -> SimpleNamespace:
        return SimpleNamespace(filling_mode=self.filling_mode)

    def symbol_info_tick(self, symbol: str) -> SimpleNamespace | None:
        return SimpleNamespace(bid=2650.1, ask=2650.4) if symbol == "XAUUSD" else None

    def order_send(self, request: dict[str, Any]) -> SimpleNamespace:
        self.sent.append(request)
        return SimpleNamespace(
            retcode=self.retcode,
            order=777,
            price=request["price"],
            volume=request["volume"],
            comment="Requote",
        )

    def positions_get(self, ticket: int | None = None) -> tuple[SimpleNamespace, ...]:
        return tuple(p for p in self.positions if ticket is None or p.ticket == ticket)

    def history_deals_get(self, position: int) -> tuple[SimpleNamespace, ...]:
        deal = SimpleNamespace
        deals = {
            555: (
                deal(ticket=3, time_msc=3000, entry=self.DEAL_ENTRY_OUT, price=2651.0, volume=0.05),
                deal(ticket=1, time_msc=1000, entry=self.DEAL_ENTRY_IN, price=2650.4, volume=0.1),
                deal(ticket=2, time_msc=2000, entry=self.DEAL_ENTRY_OUT, price=2650.9, volume=0.05),
            )
        }
        return deals.get(position, ())

    def account_info(self) -> SimpleNamespace:
        return SimpleNamespace(balance=10000.0, equity=10012.5)

    def shutdown(self) -> None:
        pass


@pytest.fixture
def mt5(monkeypatch: pytest.MonkeyPatch) -> FakeMT5:
    fake = FakeMT5()
    monkeypatch.setitem(sys.modules, "MetaTrader5", fake)
    return fake


def test_mt5_initializes_with_only_the_given_credentials(mt5: FakeMT5) -> None:
    MT5Executor(login=123, server="Demo")

    assert mt5.initialize_args == ((), {"login": 123, "server": "Demo"})


def test_mt5_places_a_market_deal_at_the_ask_without_stops(mt5: FakeMT5) -> None:
    executor = MT5Executor(deviation=15, magic=42)

    fill = executor.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2650.5"))

    [request] = mt5.sent
    assert request["action"] == mt5.TRADE_ACTION_DEAL
    assert request["type"] == mt5.ORDER_TYPE_BUY
    assert request["price"] == 2650.4
    assert request["volume"] == 0.1
    assert (request["deviation"], request["magic"]) == (15, 42)
    assert request["type_filling"] == mt5.ORDER_FILLING_IOC
    assert "sl" not in request
    assert "tp" not in request
    assert fill.ticket == "777"
    assert fill.price == Decimal("2650.4")
    assert fill.volume == Decimal("0.1")


def test_mt5_closes_with_an_opposite_deal_on_the_position(mt5: FakeMT5) -> None:
    mt5.filling_mode = 1
    executor = MT5Executor()

    closed = executor.close("555", Decimal("0.05"))

    [request] = mt5.sent
    assert request["position"] == 555
    assert request["type"] == mt5.ORDER_TYPE_SELL
    assert request["price"] == 2650.1
    assert request["volume"] == 0.05
    assert request["type_filling"] == mt5.ORDER_FILLING_FOK
    assert closed.price == Decimal("2650.1")


def test_mt5_a_retcode_other_than_done_is_an_execution_error(mt5: FakeMT5) -> None:
    mt5.retcode = 10004
    executor = MT5Executor()

    with pytest.raises(ExecutionError) as raised:
        executor.place("XAUUSD", "sell", Decimal("0.10"), Decimal("2650.5"))

    assert raised.value.retcode == 10004
    assert "Requote" in str(raised.value)


def test_mt5_refuses_an_unknown_ticket_or_symbol(mt5: FakeMT5) -> None:
    executor = MT5Executor()

    with pytest.raises(ExecutionError, match="no open position"):
        executor.close("1", Decimal("0.1"))
    with pytest.raises(ExecutionError, match="unavailable"):
        executor.place("NOPE", "buy", Decimal("0.1"), Decimal("1"))
    assert mt5.sent == []


def test_mt5_account_lists_every_open_ticket(mt5: FakeMT5) -> None:
    account = MT5Executor().account()

    assert account.balance == Decimal("10000.0")
    assert account.equity == Decimal("10012.5")
    assert account.open_tickets == ["555"]


def test_mt5_closing_fills_are_the_positions_out_deals_oldest_first(mt5: FakeMT5) -> None:
    executor = MT5Executor()

    assert executor.closing_fills("555") == [
        CloseFill(price=Decimal("2650.9"), volume=Decimal("0.05")),
        CloseFill(price=Decimal("2651.0"), volume=Decimal("0.05")),
    ]
    assert executor.closing_fills("556") == []


def test_a_simulated_broker_with_a_state_file_outlives_its_process(tmp_path) -> None:
    # given: a broker that opened two positions and closed half of one
    path = tmp_path / "broker.json"
    broker = SimulatedBroker(balance=Decimal("5000"), state_path=path)
    first = broker.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2650.5"))
    broker.place("XAUUSD", "sell", Decimal("0.20"), Decimal("2650.5"))
    broker.close(first.ticket, Decimal("0.04"))

    # when: another one starts on the same file
    again = SimulatedBroker(balance=Decimal("1"), state_path=path)

    # then: same positions, fills, balance, and the ticket numbers go on
    assert again.open_positions() == broker.open_positions()
    assert again.closing_fills(first.ticket) == [CloseFill(price=Decimal("2650.5"), volume=Decimal("0.04"))]
    assert again.account() == broker.account()
    assert again.place("XAUUSD", "buy", Decimal("0.10"), Decimal("2650.5")).ticket == "3"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
