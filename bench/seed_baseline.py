"""The baseline: the position monitor of the seed (the original request for the older
FastAPI/SQLAlchemy codebase), built as the seed built it, on the bench's data.

Cited from ``/work/shared/seeds/`` (file: lines):

* ``000_6dde9637fb232431.txt: 104-143`` — ``OpenPosition`` keeps the owner's levels
  on the position, in plaintext: ``owner_sl`` / ``owner_tp`` (Float), copied from the
  decrypted signal when the EA acknowledges its fill (``220-237``). Its indexes:
  ``status``, ``(user_id, status)``, ``signal_id``.
* ``000: 245-290`` — ``monitor_all_positions()``: every open position loaded
  (``.filter(status == 0).all()``), then per position: ``get_current_price(instrument)``,
  ``check_sl_tp_breach(position, price)``, and on a breach ``close_position_remotely(...)``,
  then the position's status, close time, price and reason set and ``db.commit()`` —
  one position at a time.
* ``000: 294-315`` — ``check_sl_tp_breach``: buy: SL hit at price <= owner_sl, TP at
  price >= owner_tp; sell: the mirror.
* ``000: 319-343`` and ``001_1e937a1f8d4fa928.txt: 83-108`` — the close via the EA: a
  ``CloseCommand`` row (``close_commands``: id UUID, position_id, device_id, reason,
  expected_price, status 0 = PENDING, created_at, ...) the EA polls for.
* ``000: 701-705`` — "Price feed cached (updated every 1-5 seconds)"; and the batch
  fetch of ``004_72c88a9fd961b27e.txt: 102-118, 422-430`` (``get_current_prices(symbols)``
  once, then ``prices.get(symbol)`` per position): one price per instrument, held in the
  process and filled from the feed (here: the product's latest quotes in Redis) once per
  loop.

What is the same as the seed: the tables (``seed_open_positions``, ``seed_close_commands``,
created here in the bench's database, not Django models of the product), the loop,
the breach rule, one transaction per close (an INSERT of the command and an UPDATE
of the position, committed together, as ``db.commit()`` at ``000: 278`` commits both).

Where this baseline departs from the seed, it is always in the seed's favour or
neutral, never a slowdown:

* rows come back as tuples through psycopg2 (``PositionRow``), not as SQLAlchemy ORM
  objects; the ORM's cost (identity map, attribute instrumentation, and
  ``expire_on_commit`` reloading every remaining position after each close's commit)
  is not paid;
* ids are bigints (the product's ids), not ``String(36)`` UUIDs, except the command's
  UUID as the seed's table has it;
* a buy is judged on the bid and a sell on the ask (the seed used one price): the same
  outcome as the product, at the same cost;
* no staleness or spike guard, no tolerance, no audit row, no notification per close
  (the seed's loop shows none of them; the product pays for its audit rows);
* a quote-triggered sweep of one instrument has no counterpart in the seed (its loop
  always walks every open position): ``monitor_all_positions(instrument=...)`` walks
  that instrument's positions only, through an index on ``(instrument, status)`` the
  bench adds for it.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from django.db import connection, transaction

from bench.harness import BenchSignal, execute, vacuum_analyze

logger = logging.getLogger("bench.seed")

BUY, SELL = 0, 1  # the seed's side column (000: 116)
OPEN, CLOSED_SL, CLOSED_TP = 0, 1, 2  # the seed's status column (000: 126)
PENDING = 0  # close_commands.status (001: 92)

TABLES = ("seed_close_commands", "seed_open_positions")

# 000: 104-143 (the columns the seed's model maps; foreign keys to the product's rows
# stand in for its executions/users/devices tables) and 001: 84-96.
_CREATE = """
CREATE TABLE seed_open_positions (
    id bigint PRIMARY KEY,
    execution_id bigint NOT NULL,
    signal_id bigint NOT NULL REFERENCES signals_app_signal (id),
    approval_id bigint NOT NULL REFERENCES signals_app_approval (id),
    user_id bigint NOT NULL REFERENCES signals_app_client (id),
    device_id bigint NOT NULL REFERENCES ea_gateway_device (id),
    instrument varchar(20) NOT NULL,
    side integer NOT NULL,
    entry_price double precision NOT NULL,
    volume double precision NOT NULL,
    broker_ticket varchar(128),
    owner_sl double precision,
    owner_tp double precision,
    status integer NOT NULL DEFAULT 0,
    opened_at timestamp NOT NULL,
    closed_at timestamp,
    close_price double precision,
    close_reason varchar(255)
);
CREATE INDEX ix_open_positions_status ON seed_open_positions (status);
CREATE INDEX ix_open_positions_user_status ON seed_open_positions (user_id, status);
CREATE INDEX ix_open_positions_signal ON seed_open_positions (signal_id);
-- Not the seed's: for the per-instrument loop of a quote-triggered sweep (in its favour).
CREATE INDEX ix_open_positions_instrument_status ON seed_open_positions (instrument, status);

CREATE TABLE seed_close_commands (
    id uuid PRIMARY KEY,
    position_id bigint NOT NULL REFERENCES seed_open_positions (id),
    device_id bigint NOT NULL REFERENCES ea_gateway_device (id),
    reason varchar(50) NOT NULL,
    expected_price double precision NOT NULL,
    actual_close_price double precision,
    status integer NOT NULL,
    created_at timestamp,
    executed_at timestamp,
    error_message varchar(500)
);
"""

_SELECT_OPEN = """
SELECT id, execution_id, signal_id, approval_id, user_id, device_id, instrument, side,
       entry_price, volume, broker_ticket, owner_sl, owner_tp, status, opened_at, closed_at,
       close_price, close_reason
  FROM seed_open_positions WHERE status = %s
"""

_INSERT_COMMAND = """
INSERT INTO seed_close_commands (id, position_id, device_id, reason, expected_price, status, created_at)
VALUES (%s, %s, %s, %s, %s, %s, %s)
"""

_CLOSE_POSITION = """
UPDATE seed_open_positions SET status = %s, closed_at = %s, close_price = %s, close_reason = %s
 WHERE id = %s
"""


class PositionRow(NamedTuple):
    """A row of ``seed_open_positions`` (000: 104-131)."""

    id: int
    execution_id: int
    signal_id: int
    approval_id: int
    user_id: int
    device_id: int
    instrument: str
    side: int
    entry_price: float
    volume: float
    broker_ticket: str | None
    owner_sl: float | None
    owner_tp: float | None
    status: int
    opened_at: datetime
    closed_at: datetime | None
    close_price: float | None
    close_reason: str | None


@dataclass(frozen=True)
class BreachType:
    type: str  # "sl" | "tp"
    level: float


@dataclass(frozen=True)
class CloseResult:
    success: bool
    method: str | None = None
    error: str | None = None


# --- the seed's tables, filled from the product's book -----------------------------------


def create_tables() -> None:
    execute(_CREATE)


def load_book(signals: list[BenchSignal]) -> int:
    """Copy the product's open positions into ``seed_open_positions`` with their signal's
    levels in plaintext, as the seed's ack handler stored them (000: 220-237). Set-up,
    not measured."""
    execute("TRUNCATE seed_close_commands, seed_open_positions")
    execute(
        """
        INSERT INTO seed_open_positions
            (id, execution_id, signal_id, approval_id, user_id, device_id, instrument, side,
             entry_price, volume, broker_ticket, owner_sl, owner_tp, status, opened_at)
        SELECT p.id, p.approval_id, p.signal_id, p.approval_id, p.client_id, p.device_id, i.symbol,
               CASE WHEN p.side = 'buy' THEN 0 ELSE 1 END, p.entry_price, p.volume, p.broker_ticket,
               l.sl, l.tp, 0, p.opened_at
          FROM positions_openposition p
          JOIN signals_app_instrument i ON i.id = p.instrument_id
          JOIN unnest(%s::bigint[], %s::float8[], %s::float8[]) AS l (signal_id, sl, tp)
            ON l.signal_id = p.signal_id
         WHERE p.status = 'open'
        """,
        [
            [signal.pk for signal in signals],
            [float(signal.sl) for signal in signals],
            [float(signal.tp) for signal in signals],
        ],
    )
    vacuum_analyze(*TABLES)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM seed_open_positions")
        return cursor.fetchone()[0]


def reset() -> None:
    """Undo a breach run: every position open again, no close commands."""
    execute("DELETE FROM seed_close_commands")
    execute(
        "UPDATE seed_open_positions SET status = 0, closed_at = NULL, close_price = NULL, "
        "close_reason = NULL WHERE status <> 0"
    )
    vacuum_analyze(*TABLES)


def drop_positions_of(client_ids: list[int]) -> None:
    execute(
        "DELETE FROM seed_close_commands c USING seed_open_positions p "
        "WHERE c.position_id = p.id AND p.user_id = ANY(%s)",
        [client_ids],
    )
    execute("DELETE FROM seed_open_positions WHERE user_id = ANY(%s)", [client_ids])
    vacuum_analyze(*TABLES)


# --- the seed's price feed cache (000: 701-705; 004: 102-118) -------------------------------


class PriceCache:
    """One price per instrument, held in the process: ``refresh`` reads the feed once (one
    Redis round trip for every instrument), ``get_current_price`` is a dict lookup."""

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = symbols
        self._prices: dict[str, tuple[float, float]] = {}

    def refresh(self) -> None:
        from positions.quotes import quotes_latest

        self._prices = {
            symbol: (float(quote.bid), float(quote.ask))
            for symbol, quote in quotes_latest(self.symbols).items()
        }

    def get_current_price(self, instrument: str) -> tuple[float, float] | None:
        return self._prices.get(instrument)


# --- the seed's monitor (000: 245-357) -----------------------------------------------------


def check_sl_tp_breach(position: PositionRow, current_price: float) -> BreachType | None:
    """000: 294-315, as written."""
    if position.side == BUY:
        if position.owner_sl and current_price <= position.owner_sl:
            return BreachType(type="sl", level=position.owner_sl)
        if position.owner_tp and current_price >= position.owner_tp:
            return BreachType(type="tp", level=position.owner_tp)
    else:
        if position.owner_sl and current_price >= position.owner_sl:
            return BreachType(type="sl", level=position.owner_sl)
        if position.owner_tp and current_price <= position.owner_tp:
            return BreachType(type="tp", level=position.owner_tp)
    return None


def close_position_remotely(cursor, position: PositionRow, reason: str, close_price: float) -> CloseResult:
    """000: 319-343 (method 1, via the EA): store the close command the EA polls for
    (001: 83-108). Added to the loop's transaction, committed with the position's update."""
    if position.device_id:
        cursor.execute(
            _INSERT_COMMAND,
            [str(uuid.uuid4()), position.id, position.device_id, reason, close_price, PENDING, _utcnow()],
        )
        return CloseResult(success=True, method="ea")
    return CloseResult(success=False, error="No close method available")


def monitor_all_positions(prices: PriceCache, *, instrument: str | None = None) -> int:
    """000: 245-290: every open position (or, for a quote-triggered sweep, those of one
    instrument), checked alone against its instrument's cached price, closed one by one.
    Returns the number of positions closed."""
    prices.refresh()  # the feed cache, filled once per loop
    with connection.cursor() as cursor:
        if instrument is None:
            cursor.execute(_SELECT_OPEN, [OPEN])
        else:
            cursor.execute(_SELECT_OPEN + " AND instrument = %s", [OPEN, instrument])
        open_positions = [PositionRow(*row) for row in cursor.fetchall()]
    closed = 0
    for position in open_positions:
        quote = prices.get_current_price(position.instrument)
        if quote is None:
            continue
        current_price = quote[0] if position.side == BUY else quote[1]  # bid for a buy, ask for a sell
        breach = check_sl_tp_breach(position, current_price)
        if breach:
            logger.info("Position %s breached %s at %s", position.id, breach.type, current_price)
            with transaction.atomic(), connection.cursor() as cursor:  # one commit per position (000: 278)
                result = close_position_remotely(
                    cursor, position, reason=f"{breach.type}_hit", close_price=current_price
                )
                if result.success:
                    cursor.execute(
                        _CLOSE_POSITION,
                        [
                            CLOSED_SL if breach.type == "sl" else CLOSED_TP,
                            _utcnow(),
                            current_price,
                            f"{breach.type}_hit",
                            position.id,
                        ],
                    )
                    closed += 1
                else:
                    logger.error("Failed to close position %s: %s", position.id, result.error)
    return closed


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # the seed's naive datetime.utcnow()
