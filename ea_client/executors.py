"""Where orders actually go: a simulated broker, or a MetaTrader 5 terminal."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any, Protocol

DIRECTIONS = ("buy", "sell")
CENT = Decimal("0.01")

# Units per 1.00 lot, as the server's instrument table has them; anything not
# listed trades on a 1-unit contract (indices, crypto).
DEFAULT_CONTRACT_SIZES: dict[str, Decimal] = {
    **{
        symbol: Decimal("100000")
        for symbol in ("EURUSD", "GBPUSD", "AUDUSD", "NZDUSD", "USDCAD", "USDCHF", "USDJPY")
    },
    "XAUUSD": Decimal("100"),
    "XAGUSD": Decimal("5000"),
}


class ExecutionError(Exception):
    """The broker refused or could not carry out an order."""

    def __init__(self, message: str, retcode: int | None = None) -> None:
        super().__init__(message if retcode is None else f"retcode {retcode}: {message}")
        self.retcode = retcode


@dataclass(frozen=True)
class Fill:
    ticket: str
    price: Decimal
    volume: Decimal


@dataclass(frozen=True)
class CloseFill:
    price: Decimal
    volume: Decimal


@dataclass(frozen=True)
class Account:
    balance: Decimal
    equity: Decimal
    open_tickets: list[str]


class Executor(Protocol):
    def place(self, instrument: str, direction: str, volume: Decimal, entry_price: Decimal) -> Fill:
        """Open a market position; raise ExecutionError when the broker refuses."""
        ...

    def close(self, ticket: str, volume: Decimal) -> CloseFill:
        """Close ``volume`` lots of the position ``ticket``; raise ExecutionError when refused."""
        ...

    def closing_fills(self, ticket: str) -> list[CloseFill]:
        """Every fill so far that reduced or closed the position ``ticket``, oldest
        first (empty for a ticket never closed). A restarted EA compares their
        number with the one it noted before a close to learn whether that close
        went through."""
        ...

    def account(self) -> Account: ...


@dataclass
class SimulatedPosition:
    ticket: str
    instrument: str
    direction: str
    volume: Decimal
    open_price: Decimal


class SimulatedBroker:
    """An in-memory broker for the demo and the tests.

    Buys fill at the ask and close at the bid, sells the other way round, as
    on a real book. ``price_source(instrument)`` returns ``(bid, ask)``; with
    none, orders fill at the requested entry and positions close where they
    opened. Money is kept to the cent, like a broker's statement.
    ``price_source`` is called under the broker's lock, so it must not call
    back into the broker.

    With ``state_path`` the account lives in that JSON file, as a real
    broker's outlives the terminal: loaded at start (``balance`` is then only
    for a new file) and replaced atomically (temporary file, fsync, rename)
    after every order, so an EA restarted on the same file finds its
    positions and closing fills.
    """

    def __init__(
        self,
        balance: Decimal = Decimal("10000"),
        price_source: Callable[[str], tuple[Decimal, Decimal]] | None = None,
        contract_sizes: Mapping[str, Decimal] | None = None,
        state_path: str | Path | None = None,
    ) -> None:
        self._balance = Decimal(balance)
        self._price_source = price_source
        self._contract_sizes = dict(DEFAULT_CONTRACT_SIZES if contract_sizes is None else contract_sizes)
        self._positions: dict[str, SimulatedPosition] = {}
        self._fills: dict[str, list[CloseFill]] = {}
        self._last_ticket = 0
        self._lock = threading.Lock()
        self._state_path = None if state_path is None else Path(state_path)
        if self._state_path is not None and self._state_path.exists():
            self._load(self._state_path)

    def place(self, instrument: str, direction: str, volume: Decimal, entry_price: Decimal) -> Fill:
        if direction not in DIRECTIONS:
            raise ExecutionError(f"unknown direction {direction!r}")
        if volume <= 0:
            raise ExecutionError(f"volume must be positive, got {volume}")
        with self._lock:
            if self._price_source is None:
                price = entry_price
            else:
                bid, ask = self._quote(instrument)
                price = ask if direction == "buy" else bid
            self._last_ticket += 1
            ticket = str(self._last_ticket)
            self._positions[ticket] = SimulatedPosition(ticket, instrument, direction, volume, price)
            self._save()
            return Fill(ticket=ticket, price=price, volume=volume)

    def close(self, ticket: str, volume: Decimal) -> CloseFill:
        if volume <= 0:
            raise ExecutionError(f"volume must be positive, got {volume}")
        with self._lock:
            position = self._positions.get(ticket)
            if position is None:
                raise ExecutionError(f"no open position with ticket {ticket}")
            if volume > position.volume:
                raise ExecutionError(f"cannot close {volume} lots of ticket {ticket}: {position.volume} open")
            price = self._exit_price(position)
            self._balance += self._profit(position, price, volume).quantize(CENT, ROUND_HALF_EVEN)
            position.volume -= volume
            if position.volume == 0:
                del self._positions[ticket]
            fill = CloseFill(price=price, volume=volume)
            self._fills.setdefault(ticket, []).append(fill)
            self._save()
            return fill

    def closing_fills(self, ticket: str) -> list[CloseFill]:
        with self._lock:
            return list(self._fills.get(ticket, []))

    def account(self) -> Account:
        with self._lock:
            floating = sum(
                (
                    self._profit(position, self._exit_price(position), position.volume)
                    for position in self._positions.values()
                ),
                Decimal(0),
            )
            return Account(
                balance=self._balance.quantize(CENT, ROUND_HALF_EVEN),
                equity=(self._balance + floating).quantize(CENT, ROUND_HALF_EVEN),
                open_tickets=sorted(self._positions, key=int),
            )

    def open_positions(self) -> list[SimulatedPosition]:
        """A snapshot of the open positions, oldest first."""
        with self._lock:
            return [
                SimulatedPosition(p.ticket, p.instrument, p.direction, p.volume, p.open_price)
                for p in sorted(self._positions.values(), key=lambda p: int(p.ticket))
            ]

    def _save(self) -> None:
        if self._state_path is None:
            return
        state = {
            "balance": str(self._balance),
            "last_ticket": self._last_ticket,
            "positions": [
                [p.ticket, p.instrument, p.direction, str(p.volume), str(p.open_price)]
                for p in self._positions.values()
            ],
            "fills": {
                ticket: [[str(fill.price), str(fill.volume)] for fill in fills]
                for ticket, fills in self._fills.items()
            },
        }
        temporary = self._state_path.with_name(f"{self._state_path.name}.{os.getpid()}.tmp")
        with open(temporary, "w") as file:
            json.dump(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self._state_path)

    def _load(self, path: Path) -> None:
        state = json.loads(path.read_text())
        self._balance = Decimal(state["balance"])
        self._last_ticket = int(state["last_ticket"])
        self._positions = {
            ticket: SimulatedPosition(ticket, instrument, direction, Decimal(volume), Decimal(open_price))
            for ticket, instrument, direction, volume, open_price in state["positions"]
        }
        self._fills = {
            ticket: [CloseFill(price=Decimal(price), volume=Decimal(volume)) for price, volume in fills]
            for ticket, fills in state["fills"].items()
        }

    def _quote(self, instrument: str) -> tuple[Decimal, Decimal]:
        price_source = self._price_source
        if price_source is None:
            raise ExecutionError(f"no price source for {instrument}")
        try:
            bid, ask = price_source(instrument)
        except Exception as error:
            raise ExecutionError(f"no price for {instrument}: {error}") from error
        return Decimal(bid), Decimal(ask)

    def _exit_price(self, position: SimulatedPosition) -> Decimal:
        if self._price_source is None:
            return position.open_price
        bid, ask = self._quote(position.instrument)
        return bid if position.direction == "buy" else ask

    def _profit(self, position: SimulatedPosition, exit_price: Decimal, volume: Decimal) -> Decimal:
        move = (
            exit_price - position.open_price
            if position.direction == "buy"
            else position.open_price - exit_price
        )
        return move * volume * self._contract_sizes.get(position.instrument, Decimal(1))


# MQL5's SYMBOL_FILLING_* flags in symbol_info().filling_mode; the Python
# package exports the ORDER_FILLING_* values but not these bits.
_SYMBOL_FILLING_FOK = 1
_SYMBOL_FILLING_IOC = 2


class MT5Executor:
    """Trades through a running MetaTrader 5 terminal with the official
    ``MetaTrader5`` package (Windows only). Market orders only: the EA never
    sets a stop-loss or take-profit, those stay on the server."""

    def __init__(
        self,
        login: int | None = None,
        password: str | None = None,
        server: str | None = None,
        path: str | None = None,
        deviation: int = 20,
        magic: int = 7_345_001,
    ) -> None:
        # Imported here, not at module level: the package exists only on
        # Windows, and the rest of ea_client must import everywhere.
        import MetaTrader5 as mt5  # type: ignore[import-not-found]

        self._mt5: Any = mt5
        self.deviation = deviation
        self.magic = magic
        credentials: dict[str, Any] = {}
        if login is not None:
            credentials["login"] = int(login)
        if password is not None:
            credentials["password"] = password
        if server is not None:
            credentials["server"] = server
        initialized = mt5.initialize(path, **credentials) if path else mt5.initialize(**credentials)
        if not initialized:
            raise ExecutionError(f"MetaTrader 5 initialize failed: {mt5.last_error()}")

    def place(self, instrument: str, direction: str, volume: Decimal, entry_price: Decimal) -> Fill:
        mt5 = self._mt5
        if direction not in DIRECTIONS:
            raise ExecutionError(f"unknown direction {direction!r}")
        if not mt5.symbol_select(instrument, True):
            raise ExecutionError(f"symbol {instrument} unavailable: {mt5.last_error()}")
        tick = self._tick(instrument)
        buy = direction == "buy"
        price = tick.ask if buy else tick.bid
        result = self._send(
            {
                "symbol": instrument,
                "volume": float(volume),
                "type": mt5.ORDER_TYPE_BUY if buy else mt5.ORDER_TYPE_SELL,
                "price": price,
            }
        )
        # MT5 gives a position the ticket of the order that opened it (on a
        # netting account a deal may instead add to an existing position).
        return Fill(
            ticket=str(result.order),
            price=_decimal(result.price or price),
            volume=_decimal(result.volume or float(volume)),
        )

    def close(self, ticket: str, volume: Decimal) -> CloseFill:
        mt5 = self._mt5
        positions = mt5.positions_get(ticket=int(ticket))
        if not positions:
            raise ExecutionError(f"no open position with ticket {ticket}")
        position = positions[0]
        tick = self._tick(position.symbol)
        closing_a_buy = position.type == mt5.POSITION_TYPE_BUY
        price = tick.bid if closing_a_buy else tick.ask
        result = self._send(
            {
                "symbol": position.symbol,
                "volume": float(volume),
                "type": mt5.ORDER_TYPE_SELL if closing_a_buy else mt5.ORDER_TYPE_BUY,
                "position": int(ticket),
                "price": price,
            }
        )
        return CloseFill(
            price=_decimal(result.price or price), volume=_decimal(result.volume or float(volume))
        )

    def account(self) -> Account:
        mt5 = self._mt5
        info = mt5.account_info()
        if info is None:
            raise ExecutionError(f"account_info failed: {mt5.last_error()}")
        positions = mt5.positions_get()
        if positions is None:
            raise ExecutionError(f"positions_get failed: {mt5.last_error()}")
        # Every open ticket, not only ours: the server reconciles the ones it
        # knows and would take a missing one for a position closed by hand.
        return Account(
            balance=_decimal(info.balance),
            equity=_decimal(info.equity),
            open_tickets=[str(position.ticket) for position in positions],
        )

    def closing_fills(self, ticket: str) -> list[CloseFill]:
        mt5 = self._mt5
        # The deals of a position are found by its id (= its ticket) with no date range.
        deals = mt5.history_deals_get(position=int(ticket))
        if deals is None:
            raise ExecutionError(f"history_deals_get failed: {mt5.last_error()}")
        closing = (mt5.DEAL_ENTRY_OUT, mt5.DEAL_ENTRY_OUT_BY)
        return [
            CloseFill(price=_decimal(deal.price), volume=_decimal(deal.volume))
            for deal in sorted(deals, key=lambda deal: (deal.time_msc, deal.ticket))
            if deal.entry in closing
        ]

    def shutdown(self) -> None:
        self._mt5.shutdown()

    def _tick(self, instrument: str) -> Any:
        tick = self._mt5.symbol_info_tick(instrument)
        if tick is None:
            raise ExecutionError(f"no price for {instrument}: {self._mt5.last_error()}")
        return tick

    def _send(self, order: dict[str, Any]) -> Any:
        mt5 = self._mt5
        request = {
            "action": mt5.TRADE_ACTION_DEAL,
            "deviation": self.deviation,
            "magic": self.magic,
            "comment": "veilstop",
            "type_time": mt5.ORDER_TIME_GTC,
            "type_filling": self._filling(order["symbol"]),
            **order,
        }
        result = mt5.order_send(request)
        if result is None:
            raise ExecutionError(f"order_send failed: {mt5.last_error()}")
        if result.retcode != mt5.TRADE_RETCODE_DONE:
            raise ExecutionError(result.comment or "order rejected", retcode=result.retcode)
        return result

    def _filling(self, instrument: str) -> int:
        # Brokers accept different filling policies per symbol; sending one the
        # symbol does not allow is rejected (retcode 10030).
        mt5 = self._mt5
        info = mt5.symbol_info(instrument)
        flags = info.filling_mode if info is not None else 0
        if flags & _SYMBOL_FILLING_IOC:
            return mt5.ORDER_FILLING_IOC
        if flags & _SYMBOL_FILLING_FOK:
            return mt5.ORDER_FILLING_FOK
        return mt5.ORDER_FILLING_RETURN


def _decimal(value: float) -> Decimal:
    # str() first: Decimal(0.1) would carry the float's binary noise.
    return Decimal(str(value))
