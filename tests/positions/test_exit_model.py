"""Exit plans through the real server agree with the reference model (tests/exit_model.py).

Hypothesis draws a plan (buy or sell; sl, tp, partial take-profits, trailing
with activation, breakeven), a random walk of quotes in pips, one to three
fills at points of the path, how the feed cuts the path into batches, and when
sweeps run. The path goes through ``quotes_ingest`` (what the feed API calls),
the fills through ``approval_fill_report`` (what the EA's ack calls), the
sweeps are ``sweep()`` itself, and the EAs execute their close commands at
drawn points (and at the end, until nothing more comes). The model is given
the same schedule (what each sweep had seen, where the fills and the
acknowledgements came). The close commands each position got must be exactly
the model's: kind, volume, triggering quote.

Plans with partial take-profits are a property of their own; the tests below
pin down how a plan's exit takes in a partial hit but not claimed yet.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.db import transaction
from django.test import TestCase
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from positions.close_delivery import CloseResult, close_command_ack, close_commands_deliver
from positions.fills import Fill, FillReport, approval_fill_report
from positions.models import CloseCommand
from positions.quotes import Quote, quotes_ingest
from positions.scanner import sweep
from signals_app.events import Actor
from signals_app.models import Approval
from tests import exit_model as model
from tests.ea_helpers import make_device
from tests.factories import ClientFactory, make_signal

pytestmark = pytest.mark.django_db

SYMBOL = "EURUSD"
PIP = Decimal("0.0001")
ENTRY = Decimal("1.10000")
EA = Actor.system("test-ea")
FRACTIONS = ["0.1", "0.2", "0.25", "0.3", "0.4", "0.5"]


# --- what the server did ----------------------------------------------------------------


def committed():
    """Run what the service queued for after its commit (the test's transaction never
    commits): the sweep and the standing orders a fill or a partial close asks for."""
    return TestCase.captureOnCommitCallbacks(execute=True)


def deliver_and_execute(device_ids) -> int:
    """Every EA takes its due close commands and executes each at its trigger price."""
    executed = 0
    for device_id in device_ids:
        for command in close_commands_deliver(device_id=device_id, limit=100):
            quote = command.trigger_quote or {}
            price = quote.get("bid" if command.position.side == "buy" else "ask", "1")
            with committed():
                close_command_ack(
                    command_id=command.pk,
                    device_id=device_id,
                    result=CloseResult(
                        executed=True, close_price=Decimal(price), closed_volume=command.volume
                    ),
                    by=EA,
                )
            executed += 1
    return executed


def settle(device_ids, *, rounds: int = 12) -> None:
    """Sweep and execute until nothing more is queued (``model.settled``): a second
    partial waits for the first."""
    for _ in range(rounds):
        sweep()
        if not deliver_and_execute(device_ids):
            return
    raise AssertionError("close commands kept coming")


def server_closes(position_id: int) -> list[tuple[str, Decimal, float | None]]:
    """The executed close commands of a position: (reason, volume, triggering quote's ts)."""
    commands = CloseCommand.objects.filter(position_id=position_id).order_by("pk")
    assert {command.status for command in commands} <= {"executed"}
    return sorted(
        (command.reason, command.volume, (command.trigger_quote or {}).get("ts")) for command in commands
    )


def model_closes(
    closes: list[model.Close], path: list[model.Tick]
) -> list[tuple[str, Decimal, float | None]]:
    return sorted(
        (close.kind, close.volume, None if close.quote is None else path[close.quote].ts) for close in closes
    )


# --- what Hypothesis draws --------------------------------------------------------------


def level(side: str, pips: int) -> str:
    """A price ``pips`` in the trade's favour from the entry."""
    return str(ENTRY + (pips if side == "buy" else -pips) * PIP)


@st.composite
def owner_only_levels(draw, side: str, *, partials: bool = True) -> dict:
    sl = draw(st.none() | st.integers(3, 40))
    tp = draw(st.integers(3, 60) if sl is None else st.none() | st.integers(3, 60))
    levels: dict = {}
    if sl is not None:
        levels["sl"] = level(side, -sl)
    if tp is not None:
        levels["tp"] = level(side, tp)
    fractions = draw(
        st.lists(st.sampled_from(FRACTIONS), max_size=3 if partials else 0).filter(
            lambda f: sum(map(Decimal, f)) < 1
        )
    )
    if fractions and (tp is None or tp >= 2):
        room = 60 if tp is None else tp - 1
        levels["partial_take_profits"] = [
            {"price": level(side, draw(st.integers(1, room))), "fraction": fraction} for fraction in fractions
        ]
    if draw(st.booleans()):
        levels["trailing"] = {
            "distance_pips": str(draw(st.integers(2, 30))),
            "activation_pips": str(draw(st.integers(0, 30))),
        }
    if draw(st.booleans()):
        trigger = (
            {"trigger_fraction": draw(st.sampled_from(["0.3", "0.5", "0.8"]))}
            if tp is not None and draw(st.booleans())
            else {"trigger_pips": str(draw(st.integers(1, 40)))}
        )
        levels["breakeven"] = {**trigger, "offset_pips": str(draw(st.integers(0, 10)))}
    return levels


def walk(steps: list[int], spread: int, start: float) -> list[model.Tick]:
    """Quotes from the entry, ``steps`` pips at a time (far below the 2 % spike limit)."""
    ticks, bid = [], ENTRY
    for index, step in enumerate(steps):
        bid += step * PIP
        ticks.append(model.Tick(bid=bid, ask=bid + spread * PIP, ts=start + index * 0.001))
    return ticks


@dataclass(frozen=True)
class Schedule:
    cuts: list[int]  # where the feed's batches start (and the last one ends)
    sweeps: set[tuple[int, str]]  # (cut, "before" | "after" the fills there) where a sweep runs
    acks: set[int]  # cuts after which the EAs execute what was delivered to them


@st.composite
def schedules(draw, length: int, fill_points: list[int]) -> Schedule:
    cuts, at = {0, length, *fill_points}, 0
    while at < length:
        at += draw(st.integers(1, 50))
        cuts.add(min(at, length))
    ordered = sorted(cuts)
    sweeps = {(cut, when) for cut in ordered for when in ("before", "after") if draw(st.booleans())}
    return Schedule(ordered, sweeps, {cut for cut in ordered if draw(st.booleans())})


# --- the property -----------------------------------------------------------------------


@pytest.fixture
def desk(db):
    """Three auto-approving clients with an EA each; fills of up to 1.00 lot."""
    return [
        make_device(client=ClientFactory(auto_approve=True, default_volume=Decimal("1.00"))) for _ in range(3)
    ]


def run_through_the_server(side, levels, path, fills, schedule, desk) -> tuple[list[int], list[model.Step]]:
    """Feed, fill, sweep and execute as ``schedule`` says; return the position of each
    fill, and the steps taken as the model's schedule."""
    signal = make_signal(
        symbol=SYMBOL,
        side=side,
        entry=str(ENTRY),
        sl=levels.get("sl"),
        tp=levels.get("tp"),
        **{key: value for key, value in levels.items() if key not in ("sl", "tp")},
    )
    approvals = {a.client_id: a for a in Approval.objects.filter(signal=signal)}
    devices = [credentials.device for credentials in desk]
    device_ids = [device.pk for device in devices]
    positions: list[int] = []
    steps: list[model.Step] = []

    def fill(index: int, fill: model.Fill) -> None:
        device = devices[index]
        approval = approvals[device.client_id]
        tick = path[fill.after - 1] if fill.after else model.Tick(ENTRY, ENTRY, 0)
        with committed():
            result = approval_fill_report(
                report=FillReport(
                    approval_id=approval.pk,
                    client_id=device.client_id,
                    device_id=device.pk,
                    fill=Fill(
                        broker_ticket=f"{signal.pk}-{index}",
                        entry_price=tick.ask if side == "buy" else tick.bid,
                        volume=fill.volume,
                    ),
                ),
                by=EA,
            )
        positions.append(result.position_id)
        steps.append(model.Filled(index))

    for number, cut in enumerate(schedule.cuts):
        if (cut, "before") in schedule.sweeps:
            sweep()
            steps.append(model.Sweep(cut))
        for index, planned in enumerate(fills):
            if planned.after == cut:
                fill(index, planned)
        if (cut, "after") in schedule.sweeps:
            sweep()
            steps.append(model.Sweep(cut))
        if cut in schedule.acks:
            deliver_and_execute(device_ids)
            steps.append(model.ACK)
        if number + 1 < len(schedule.cuts):
            batch = path[cut : schedule.cuts[number + 1]]
            quotes_ingest(quotes=[Quote(SYMBOL, tick.bid, tick.ask, tick.ts) for tick in batch])
    settle(device_ids)
    steps.append(model.settled(len(path)))
    by_fill = dict(zip(sorted(range(len(fills)), key=lambda i: (fills[i].after, i)), positions, strict=True))
    return [by_fill[index] for index in range(len(fills))], steps


def check_against_the_model(data, desk, redis_client, *, partials: bool) -> None:
    # given: a plan, a path, fills and a schedule of batches, sweeps and acknowledgements
    side = data.draw(st.sampled_from(["buy", "sell"]), label="side")
    levels = data.draw(owner_only_levels(side, partials=partials), label="owner_only")
    drift = data.draw(st.integers(-4, 4), label="drift")
    steps = data.draw(st.lists(st.integers(-15 + drift, 15 + drift), min_size=1, max_size=80), label="steps")
    path = walk(steps, data.draw(st.integers(0, 2), label="spread"), start=time.time())
    fills = [
        model.Fill(after=after, volume=Decimal(cents) / 100)
        for after, cents in data.draw(
            st.lists(st.tuples(st.integers(0, len(path)), st.integers(1, 100)), min_size=1, max_size=3),
            label="fills (after, volume in cents)",
        )
    ]
    schedule = data.draw(schedules(len(path), [f.after for f in fills]), label="schedule")
    plan = model.plan_from_owner_only(levels, side=side, entry=ENTRY, pip_size=PIP)
    note(f"model timeline: {model.plan_timeline(plan, path)}")

    # when: it all goes through the server (undone after each example)
    redis_client.flushdb()
    with transaction.atomic():
        positions, steps = run_through_the_server(side, levels, path, fills, schedule, desk)
        got = [server_closes(position) for position in positions]
        transaction.set_rollback(True)

    # then: the model, given the same sweeps, fills and acknowledgements, says the same
    expected = [model_closes(closes, path) for closes in model.expected_closes(plan, fills, path, steps)]
    assert got == expected


PROPERTY = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI never flakes
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@PROPERTY
@given(data=st.data())
def test_the_server_closes_exactly_what_the_model_says(data, desk, redis_client):
    """sl, tp, trailing (with activation) and breakeven; every schedule."""
    check_against_the_model(data, desk, redis_client, partials=False)


@PROPERTY
@given(data=st.data())
def test_the_server_closes_exactly_what_the_model_says_with_partial_take_profits(data, desk, redis_client):
    """The same with partial take-profits: one per position per sweep, in index order, and
    those not claimed yet when the plan ends closed with the rest by its exit."""
    check_against_the_model(data, desk, redis_client, partials=True)


# --- the bugs the issue measured ---------------------------------------------------------


def fill_report(signal, credentials, *, volume: str, price: Decimal) -> int:
    """The EA's fill of its client's approval on ``signal``; returns the position."""
    device = credentials.device
    approval = Approval.objects.get(signal=signal, client_id=device.client_id)
    with committed():
        return approval_fill_report(
            report=FillReport(
                approval_id=approval.pk,
                client_id=device.client_id,
                device_id=device.pk,
                fill=Fill(
                    broker_ticket=f"{signal.pk}-{device.pk}", entry_price=price, volume=Decimal(volume)
                ),
            ),
            by=EA,
        ).position_id


def test_a_stop_crossed_inside_a_batch_and_a_wick_between_sweeps_both_close(desk, redis_client):
    # given: a buy with its stop 20 pips down and a sell with its stop 20 pips up, both filled
    buy_levels = {"sl": level("buy", -20), "tp": level("buy", 60)}
    sell_levels = {"sl": level("sell", -20), "tp": level("sell", 60)}
    buy = make_signal(symbol=SYMBOL, side="buy", entry=str(ENTRY), **buy_levels)
    sell = make_signal(symbol=SYMBOL, side="sell", entry=str(ENTRY), **sell_levels)
    buy_position = fill_report(buy, desk[0], volume="0.10", price=ENTRY)
    sell_position = fill_report(sell, desk[1], volume="0.10", price=ENTRY)
    # bids 1.09950, 1.09790 (through the buy's stop at 1.09800), 1.09900, 1.10000;
    # then 1.10150, 1.10200 (its ask 1.10210 through the sell's stop at 1.10200), 1.10150
    path = walk([-5, -16, 11, 10, 15, 5, -5], spread=1, start=time.time())

    # when: the first four quotes come in one batch, then a sweep; the last three one at a
    # time with no sweep until after the wick has passed
    quotes_ingest(quotes=[Quote(SYMBOL, tick.bid, tick.ask, tick.ts) for tick in path[:4]])
    sweep()
    for tick in path[4:]:
        quotes_ingest(quotes=[Quote(SYMBOL, tick.bid, tick.ask, tick.ts)])
    settle([credentials.device.pk for credentials in desk])

    # then: the batch's middle quote closed the buy, the wick closed the sell, as the model says
    assert server_closes(buy_position) == [("stop_loss", Decimal("0.10"), path[1].ts)]
    assert server_closes(sell_position) == [("stop_loss", Decimal("0.10"), path[5].ts)]
    fills = [model.Fill(after=0, volume=Decimal("0.10"))]
    swept = [model.Filled(0), model.Sweep(4), model.settled(7)]
    for levels, side, position in ((buy_levels, "buy", buy_position), (sell_levels, "sell", sell_position)):
        plan = model.plan_from_owner_only(levels, side=side, entry=ENTRY, pip_size=PIP)
        expected = model.expected_closes(plan, fills, path, swept)[0]
        assert server_closes(position) == model_closes(expected, path)


def test_a_partial_that_rounds_to_nothing_leaves_the_next_one_its_turn(desk, redis_client):
    # given: 0.03 lot with partials of 0.3 (0.009: nothing) and 0.5 (0.015: 0.01)
    levels = {
        "sl": level("buy", -100),
        "tp": level("buy", 100),
        "partial_take_profits": [
            {"price": level("buy", 10), "fraction": "0.3"},
            {"price": level("buy", 20), "fraction": "0.5"},
        ],
    }
    signal = make_signal(symbol=SYMBOL, side="buy", entry=str(ENTRY), **levels)
    position = fill_report(signal, desk[0], volume="0.03", price=ENTRY)
    path = walk([10, 10], spread=0, start=time.time())

    # when: each partial is reached, with a sweep and the EA's acknowledgements after each quote
    for tick in path:
        quotes_ingest(quotes=[Quote(SYMBOL, tick.bid, tick.ask, tick.ts)])
        settle([desk[0].device.pk])

    # then: the second partial closed its 0.01 (the claim used to choose the empty first one, and stop)
    assert server_closes(position) == [("partial_tp", Decimal("0.01"), path[1].ts)]
    plan = model.plan_from_owner_only(levels, side="buy", entry=ENTRY, pip_size=PIP)
    fills = [model.Fill(after=0, volume=Decimal("0.03"))]
    swept = [model.Filled(0), model.settled(1), model.settled(2)]
    assert server_closes(position) == model_closes(model.expected_closes(plan, fills, path, swept)[0], path)


# --- a plan's exit and the partials it has not claimed yet ----------------------------------


@dataclass
class BuyWithPartials:
    """A buy of 0.10 lot at the entry, sl 50 pips down, tp 30 up, partials at (pips, fraction)."""

    partials: list[tuple[int, str]]
    steps: list[int]  # the path, in pips per quote

    def __post_init__(self) -> None:
        self.levels = {
            "sl": level("buy", -50),
            "tp": level("buy", 30),
            "partial_take_profits": [
                {"price": level("buy", pips), "fraction": fraction} for pips, fraction in self.partials
            ],
        }
        self.signal = make_signal(symbol=SYMBOL, side="buy", entry=str(ENTRY), **self.levels)
        self.path = walk(self.steps, spread=0, start=time.time())
        self.sent = 0

    def send(self, count: int) -> None:
        batch = self.path[self.sent : self.sent + count]
        quotes_ingest(quotes=[Quote(SYMBOL, tick.bid, tick.ask, tick.ts) for tick in batch])
        self.sent += count

    def model(self, schedule: list[model.Step]) -> list[tuple[str, Decimal, float | None]]:
        plan = model.plan_from_owner_only(self.levels, side="buy", entry=ENTRY, pip_size=PIP)
        fills = [model.Fill(after=0, volume=Decimal("0.10"))]
        return model_closes(model.expected_closes(plan, fills, self.path, schedule)[0], self.path)


def reasons_in_order(position_id: int) -> list[str]:
    return list(
        CloseCommand.objects.filter(position_id=position_id).order_by("pk").values_list("reason", flat=True)
    )


def test_an_exit_in_the_same_sweep_as_a_partial_closes_everything_once(desk, redis_client):
    # given: a partial of 0.5 at +10 pips; the path goes +5, +11 (the partial), +31 (the target)
    trade = BuyWithPartials([(10, "0.5")], [5, 6, 20])
    position = fill_report(trade.signal, desk[0], volume="0.10", price=ENTRY)

    # when: all three quotes come in one batch before a sweep; then the EA executes, and more sweeps
    trade.send(3)
    sweep()
    settle([desk[0].device.pk])

    # then: one close of the whole 0.10 by the target; the partial, hit but never claimed, is part of it
    assert server_closes(position) == [("take_profit", Decimal("0.10"), trade.path[2].ts)]
    assert server_closes(position) == trade.model([model.Filled(0), model.Sweep(3), model.settled(3)])


def test_a_partial_waiting_behind_another_is_closed_by_the_exit_with_the_rest(desk, redis_client):
    # given: partials of 0.3 at +10 and +15 pips, both reached by the first quote (+16); then +31
    trade = BuyWithPartials([(10, "0.3"), (15, "0.3")], [16, 15])
    position = fill_report(trade.signal, desk[0], volume="0.10", price=ENTRY)

    # when: a sweep claims the first partial and the EA executes it; then the target's quote and a sweep
    trade.send(1)
    sweep()
    deliver_and_execute([desk[0].device.pk])
    trade.send(1)
    settle([desk[0].device.pk])

    # then: the first partial closed its 0.03, the target the remaining 0.07 (the second
    # partial, which had to wait for the first one's acknowledgement, with it)
    assert server_closes(position) == sorted(
        [
            ("partial_tp", Decimal("0.03"), trade.path[0].ts),
            ("take_profit", Decimal("0.07"), trade.path[1].ts),
        ]
    )
    schedule = [model.Filled(0), model.Sweep(1), model.ACK, model.settled(2)]
    assert server_closes(position) == trade.model(schedule)


def test_a_partial_claimed_before_the_exit_is_executed_and_the_exit_closes_the_rest_after_it(
    desk, redis_client
):
    # given: a partial of 0.5 at +10 pips; the path goes +11 (the partial), +31 (the target)
    trade = BuyWithPartials([(10, "0.5")], [11, 20])
    position = fill_report(trade.signal, desk[0], volume="0.10", price=ENTRY)

    # when: a sweep claims the partial; the target's quote and a sweep come before the EA's ack
    trade.send(1)
    sweep()
    trade.send(1)
    sweep()
    assert reasons_in_order(position) == ["partial_tp"]  # one active command per position
    settle([desk[0].device.pk])

    # then: the partial's 0.05 executed, then the target closed the other 0.05
    assert reasons_in_order(position) == ["partial_tp", "take_profit"]
    assert server_closes(position) == sorted(
        [
            ("partial_tp", Decimal("0.05"), trade.path[0].ts),
            ("take_profit", Decimal("0.05"), trade.path[1].ts),
        ]
    )
    schedule = [model.Filled(0), model.Sweep(1), model.Sweep(2), model.settled(2)]
    assert server_closes(position) == trade.model(schedule)


def test_partials_hit_by_the_time_of_one_sweep_are_claimed_lowest_index_first(desk, redis_client):
    # given: partials of 0.5 at +20 pips and 0.2 at +10 pips; the path goes +11 (the second
    # partial), +21 (the first), then +31 (the target)
    trade = BuyWithPartials([(20, "0.5"), (10, "0.2")], [11, 10, 10])
    position = fill_report(trade.signal, desk[0], volume="0.10", price=ENTRY)

    # when: one sweep after both partials were hit; the EA executes; then the target's quote
    trade.send(2)
    sweep()
    deliver_and_execute([desk[0].device.pk])
    trade.send(1)
    settle([desk[0].device.pk])

    # then: the first partial (by index, though hit later) closed its 0.05; the target the
    # other 0.05, the second partial with it
    assert server_closes(position) == sorted(
        [
            ("partial_tp", Decimal("0.05"), trade.path[1].ts),
            ("take_profit", Decimal("0.05"), trade.path[2].ts),
        ]
    )
    schedule = [model.Filled(0), model.Sweep(2), model.ACK, model.settled(3)]
    assert server_closes(position) == trade.model(schedule)
