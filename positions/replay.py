"""Market data for replay: bid/ask ticks from OHLC or bid/ask CSV files.

Plain Python (csv, datetime): no pandas needed to read the files, including
the real EURUSD and BTCUSD history that ships inside the ``backtesting``
package (``backtesting:EURUSD`` names it).
"""

from __future__ import annotations

import csv
import importlib.util
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path


class ReplayError(ValueError):
    pass


@dataclass(frozen=True)
class Tick:
    at: datetime  # market time of the tick (from the file)
    bid: Decimal
    ask: Decimal


def resolve(source: str) -> Path:
    """A file path, or ``backtesting:NAME`` for a file shipped in that package."""
    if source.startswith("backtesting:"):
        spec = importlib.util.find_spec("backtesting")  # located, not imported (it pulls in bokeh)
        if spec is None or not spec.submodule_search_locations:
            raise ReplayError("the backtesting package is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / "test" / f"{source.split(':', 1)[1]}.csv"
    else:
        path = Path(source)
    if not path.is_file():
        raise ReplayError(f"no such file: {path}")
    return path


def _parse_time(text: str) -> datetime:
    try:
        return datetime.fromisoformat(text.strip())
    except ValueError:
        try:
            return datetime.fromtimestamp(float(text))
        except ValueError:
            raise ReplayError(f"unreadable time {text[:40]!r}") from None


def _price(text: str, column: str, line: int) -> Decimal:
    try:
        price = Decimal(text.strip())
    except InvalidOperation:
        raise ReplayError(f"line {line}: {column} is not a number: {text[:40]!r}") from None
    if not price.is_finite() or price <= 0:
        raise ReplayError(f"line {line}: {column} must be a positive number")
    return price


def ticks(path: Path, *, spread: Decimal) -> Iterator[Tick]:
    """Ticks from ``path``. OHLC bars become four ticks (open, the nearer extreme,
    the other extreme, close) with ``spread`` added for the ask; bid/ask files
    are taken as they are."""
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = [name.strip().lower() for name in next(reader, [])]
        columns = {name: index for index, name in enumerate(header)}
        time_column = (
            0 if header and header[0] in ("", "time", "date", "datetime", "ts", "timestamp") else None
        )
        if time_column is None:
            raise ReplayError("the first column must be the time (header '', time, date, datetime or ts)")
        is_ohlc = {"open", "high", "low", "close"} <= set(columns)
        if not is_ohlc and not {"bid", "ask"} <= set(columns):
            raise ReplayError("need columns open, high, low, close or bid, ask")
        for line, row in enumerate(reader, start=2):
            if not row:
                continue
            at = _parse_time(row[time_column])
            if not is_ohlc:
                bid, ask = _price(row[columns["bid"]], "bid", line), _price(row[columns["ask"]], "ask", line)
                if ask < bid:
                    raise ReplayError(f"line {line}: ask below bid")
                yield Tick(at, bid, ask)
                continue
            open_, high, low, close = (
                _price(row[columns[name]], name, line) for name in ("open", "high", "low", "close")
            )
            first, second = (low, high) if open_ - low <= high - open_ else (high, low)
            for price in (open_, first, second, close):
                yield Tick(at, price, price + spread)
