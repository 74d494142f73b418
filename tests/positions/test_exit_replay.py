"""Real market history through the exit plans: every close matches the reference model.

The first 3000 ticks of the EURUSD history shipped in the ``backtesting``
package (hourly bars, four ticks each, ``positions.replay``) are replayed as
the owner's feed, with the clock travelling to each tick's market time (shifted
to today): signals with trailing stops, breakeven, partial take-profits and
time limits are published near the start, two clients fill each (one at once,
one a few ticks later), sweeps run after every tick and when a time limit falls
due, and the EAs execute every close command. Each position's closes must be
the model's (tests/exit_model.py), given the same sweeps and fills.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import time_machine
from django.test import override_settings

from positions.close_delivery import CloseResult, close_command_ack, close_commands_deliver
from positions.models import OpenPosition
from positions.quotes import Quote, quote_latest, quotes_ingest
from positions.replay import resolve, ticks
from positions.scanner import sweep
from signals_app.events import Actor
from tests import exit_model as model
from tests.ea_helpers import make_device
from tests.factories import ClientFactory, make_signal
from tests.positions.test_exit_model import committed, fill_report, model_closes, server_closes

pytestmark = pytest.mark.django_db

SYMBOL = "EURUSD"
PIP = Decimal("0.0001")
TICKS = 3000
EA = Actor.system("test-ea")


@dataclass(frozen=True)
class Planned:
    at_tick: int
    side: str
    levels: dict  # owner_only, in pips from the entry (converted when published)
    second_fill: int = 6  # ticks after publication (chosen from where this history takes each plan)


def pips(side: str, entry: Decimal, distance: int) -> str:
    """A price ``distance`` pips in the trade's favour from ``entry``."""
    return str(entry + (distance if side == "buy" else -distance) * PIP)


PLANS = [
    Planned(0, "buy", {"sl": -30, "trailing": {"distance_pips": "15", "activation_pips": "10"}}),
    # the second client fills after the breakeven stop ended the plan: closed at once
    Planned(3, "sell", {"sl": -25, "tp": 60, "breakeven": {"trigger_pips": "15", "offset_pips": "2"}}, 30),
    Planned(
        10,
        "buy",
        {
            "sl": -40,
            "tp": 60,
            "partial_take_profits": [(12, "0.3"), (25, "0.3")],
            "trailing": {"distance_pips": "25", "activation_pips": "30"},
        },
        80,  # after both partials were hit (tick 76), before the trailing stop (96)
    ),
    Planned(25, "sell", {"sl": -200, "tp": 200, "max_holding_minutes": 300}),
    Planned(
        40,
        "sell",
        {
            "sl": -35,
            "tp": 50,
            "partial_take_profits": [(20, "0.5")],
            "breakeven": {"trigger_fraction": "0.5", "offset_pips": "0"},
            "max_holding_minutes": 1440,
        },
    ),
    # the partial is hit at tick 18, the target at 26: the second fill gets the partial at once
    Planned(60, "buy", {"sl": -15, "tp": 15, "partial_take_profits": [(8, "0.25")]}, 22),
]


def owner_only(planned: Planned, entry: Decimal) -> dict:
    levels = dict(planned.levels)
    for name in ("sl", "tp"):
        if name in levels:
            levels[name] = pips(planned.side, entry, levels[name])
    if "partial_take_profits" in levels:
        levels["partial_take_profits"] = [
            {"price": pips(planned.side, entry, distance), "fraction": fraction}
            for distance, fraction in levels["partial_take_profits"]
        ]
    return levels


def history() -> list[model.Tick]:
    """The slice as the feed sends it: a bar's four ticks 15 minutes apart, shifted to today."""
    raw = list(itertools.islice(ticks(resolve("backtesting:EURUSD"), spread=PIP), TICKS))
    shift = int(time.time()) - int(raw[0].at.replace(tzinfo=UTC).timestamp())
    return [
        model.Tick(tick.bid, tick.ask, tick.at.replace(tzinfo=UTC).timestamp() + shift + (index % 4) * 900)
        for index, tick in enumerate(raw)
    ]


def execute_closes(device_ids: list[int]) -> int:
    """The EAs execute what they are given, at the trigger price (the latest for a time limit)."""
    executed = 0
    for device_id in device_ids:
        for command in close_commands_deliver(device_id=device_id, limit=100):
            latest = quote_latest(SYMBOL)
            quote = command.trigger_quote or {"bid": str(latest.bid), "ask": str(latest.ask)}
            with committed():
                close_command_ack(
                    command_id=command.pk,
                    device_id=device_id,
                    result=CloseResult(
                        executed=True,
                        close_price=Decimal(quote["bid" if command.position.side == "buy" else "ask"]),
                        closed_volume=command.volume,
                    ),
                    by=EA,
                )
            executed += 1
    return executed


def settle(device_ids: list[int]) -> None:
    for _ in range(10):
        sweep()
        if not execute_closes(device_ids):
            return
    raise AssertionError("close commands kept coming")


@dataclass
class Book:
    """One published signal: its model plan, the tick it was published at, its fills."""

    signal: object
    plan: model.Plan
    first: int
    fills: list[tuple[int, model.Fill]] = field(default_factory=list)  # (position id, model fill)
    schedule: list[model.Step] = field(default_factory=list)  # the fills and sweeps it saw


def publish(planned: Planned, tick: model.Tick, index: int) -> Book:
    entry = tick.ask if planned.side == "buy" else tick.bid
    levels = owner_only(planned, entry)
    signal = make_signal(
        symbol=SYMBOL,
        side=planned.side,
        entry=str(entry),
        sl=levels.pop("sl", None),
        tp=levels.pop("tp", None),
        **levels,
    )
    plan = model.plan_from_owner_only(
        owner_only(planned, entry), side=planned.side, entry=entry, pip_size=PIP
    )
    return Book(signal, plan, index)


# Market time runs hours per tick here; every quote counts as fresh (the model's scope).
@override_settings(QUOTE_MAX_AGE_SECONDS=7 * 86400)
def test_real_eurusd_history_closes_every_position_as_the_model_says(redis_client):
    # given: two clients with an EA each, and the history
    desk = [
        make_device(client=ClientFactory(auto_approve=True, default_volume=Decimal("1.00"))) for _ in range(2)
    ]
    device_ids = [credentials.device.pk for credentials in desk]
    path = history()
    books: dict[int, Book] = {}
    due: list[float] = []  # the positions' time limits: beat sweeps then
    last_fill = max(planned.at_tick + planned.second_fill for planned in PLANS)

    def publish_and_fill(index: int, tick: model.Tick) -> None:
        for number, planned in enumerate(PLANS):
            if planned.at_tick == index:
                books[number] = publish(planned, tick, index)
            book = books.get(number)
            for client, delay, volume in ((0, 0, "0.10"), (1, planned.second_fill, "0.07")):
                if book is not None and book.first + delay == index:
                    price = tick.ask if planned.side == "buy" else tick.bid
                    position = fill_report(book.signal, desk[client], volume=volume, price=price)
                    fill = model.Fill(after=index - book.first, volume=Decimal(volume), at=tick.ts)
                    book.fills.append((position, fill))
                    book.schedule.append(model.Filled(len(book.fills) - 1))
                    if book.plan.max_holding_minutes:
                        due.append(tick.ts + book.plan.max_holding_minutes * 60)

    def settled(sent: int, now: float) -> None:
        """Sweeps until nothing more comes, with ``sent`` quotes of the history sent, at ``now``."""
        settle(device_ids)
        for book in books.values():
            book.schedule.append(model.settled(sent - book.first, now))

    # when: the history is replayed, the clock at each tick's time: one tick at a time with
    # a sweep after each while anything is live, in batches of 50 once everything is closed
    with time_machine.travel(datetime.fromtimestamp(path[0].ts, UTC), tick=False) as clock:
        index = 0
        while index < len(path):
            tick = path[index]
            for limit in sorted(limit for limit in due if limit <= tick.ts):
                clock.move_to(datetime.fromtimestamp(limit, UTC))
                settled(index, limit)
                due.remove(limit)
            live = index <= last_fill or OpenPosition.objects.filter(status__in=["open", "closing"]).exists()
            batch = path[index : index + (1 if live else 50)]
            clock.move_to(datetime.fromtimestamp(batch[-1].ts, UTC))
            publish_and_fill(index, tick)
            quotes_ingest(quotes=[Quote(SYMBOL, t.bid, t.ask, t.ts) for t in batch])
            settled(index + len(batch), batch[-1].ts)
            index += len(batch)

    # then: every position closed as the model says, and every kind of exit happened
    kinds = set()
    for number, book in books.items():
        expected = model.expected_closes(
            book.plan, [fill for _, fill in book.fills], path[book.first :], book.schedule
        )
        for (position, _), closes in zip(book.fills, expected, strict=True):
            assert server_closes(position) == model_closes(closes, path[book.first :]), PLANS[number]
            kinds.update(close.kind for close in closes)
    assert kinds >= {"trailing", "breakeven", "partial_tp", "time", "take_profit", "stop_loss"}, kinds
    assert not OpenPosition.objects.filter(status__in=["open", "closing"]).exists()
