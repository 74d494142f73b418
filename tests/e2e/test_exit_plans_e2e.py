"""Exit plans end to end, through real processes: the owner's feed posts quotes over
HTTP (signed, in batches and one by one), a real Celery worker and beat sweep, the
reference EA client fills and closes on its simulated broker. Every position's
closes are the reference model's (tests/exit_model.py), given the fills and, at
each point the test waits for, everything sent so far swept until nothing more
comes (what the beat does while the test waits). And exactly-once with
partial closes: two workers, two beats, one worker killed in the middle of a claim.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal

import psycopg2
import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import F
from django.test import override_settings

from ea_client.client import EAClient
from ea_client.executors import SimulatedBroker
from ea_client.transport import SignedTransport
from ea_gateway.choices import DeviceRole
from positions.choices import CloseCommandStatus, PositionStatus
from positions.models import CloseCommand, OpenPosition
from positions.quotes import Quote, quotes_ingest
from positions.sweep_history import sweep_last
from tests import exit_model as model
from tests.ea_helpers import make_device
from tests.factories import ClientFactory, make_signal, open_book
from tests.helpers import CeleryProcesses, current_database_url, wait_for
from tests.positions.test_exit_model import deliver_and_execute, model_closes

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

FAST_SCHEDULE = {"POSITION_MONITOR_INTERVAL_SECONDS": "1", "CELERY_VISIBILITY_TIMEOUT": "5"}
PIP = Decimal("0.0001")
SPREAD = PIP


def _schedule_every_second() -> None:
    with override_settings(POSITION_MONITOR_INTERVAL_SECONDS=1):
        call_command("setup_periodic_tasks")


def executed_closes(position_id: int) -> list[tuple[str, Decimal, float | None]] | None:
    """The position's executed closes, or None while a command is still on its way."""
    commands = list(CloseCommand.objects.filter(position_id=position_id))
    if any(command.status != CloseCommandStatus.EXECUTED for command in commands):
        return None
    return sorted(
        (command.reason, command.volume, (command.trigger_quote or {}).get("ts")) for command in commands
    )


@dataclass
class Plan:
    """One signal on its own instrument, the quotes sent for it, and its fills."""

    symbol: str
    side: str
    entry: Decimal
    levels: dict  # owner_only in pips from the entry; partials as (pips, fraction)
    signal: object = None
    plan: model.Plan | None = None
    path: list[model.Tick] = field(default_factory=list)
    fills: list[tuple[int, model.Fill]] = field(default_factory=list)  # (position id, model fill)
    schedule: list[model.Step] = field(default_factory=list)  # the fills, and the sweeps waited for

    def price(self, pips: int) -> str:
        return str(self.entry + (pips if self.side == "buy" else -pips) * PIP)

    def owner_only(self) -> dict:
        levels = {key: value for key, value in self.levels.items() if key not in ("sl", "tp")}
        for name in ("sl", "tp"):
            if name in self.levels:
                levels[name] = self.price(self.levels[name])
        if "partial_take_profits" in levels:
            levels["partial_take_profits"] = [
                {"price": self.price(pips), "fraction": fraction}
                for pips, fraction in levels["partial_take_profits"]
            ]
        return levels

    def publish(self) -> None:
        levels = self.owner_only()
        self.signal = make_signal(
            symbol=self.symbol,
            side=self.side,
            entry=str(self.entry),
            sl=levels.pop("sl", None),
            tp=levels.pop("tp", None),
            **levels,
        )
        self.plan = model.plan_from_owner_only(
            self.owner_only(), side=self.side, entry=self.entry, pip_size=PIP
        )

    def expected(self, until: float) -> dict[int, list]:
        """Each position's closes once everything sent so far has been swept at ``until``."""
        schedule = [*self.schedule, model.settled(len(self.path), until)]
        closes = model.expected_closes(self.plan, [fill for _, fill in self.fills], self.path, schedule)
        return {
            position: model_closes(position_closes, self.path)
            for (position, _), position_closes in zip(self.fills, closes, strict=True)
        }


class Desk:
    """The owner's feed and the clients' EAs, over HTTP to the live server."""

    def __init__(self, live_server, plans: list[Plan]) -> None:
        self.plans = {plan.symbol: plan for plan in plans}
        self.market = {plan.symbol: (plan.entry, plan.entry + SPREAD) for plan in plans}
        self.checked_at = 0.0  # when caught_up last compared the server with the model
        feed = make_device(role=DeviceRole.FEED, name="owner feed")
        self.feed = SignedTransport(live_server.url, feed.device.key_id, feed.secret)
        self.eas: list[tuple[EAClient, object]] = []
        for volume in ("0.10", "0.07"):
            client = ClientFactory(auto_approve=True, default_volume=Decimal(volume))
            credentials = make_device(client=client)
            broker = SimulatedBroker(price_source=lambda symbol: self.market[symbol])
            transport = SignedTransport(live_server.url, credentials.device.key_id, credentials.secret)
            self.eas.append((EAClient(transport, broker), client))

    def send(self, symbol: str, offsets: list[int], *, one_by_one: bool = False) -> None:
        """Quotes ``offsets`` pips from the entry in the trade's favour (the bid for a buy,
        the ask for a sell), in one batch or one request each."""
        plan = self.plans[symbol]
        ticks = []
        for offset in offsets:
            price = Decimal(plan.price(offset))
            bid = price if plan.side == "buy" else price - SPREAD
            ticks.append(model.Tick(bid, bid + SPREAD, time.time()))
            time.sleep(0.002)  # distinct times
        for batch in [[tick] for tick in ticks] if one_by_one else [ticks]:
            body = {
                "quotes": [
                    {"instrument": symbol, "bid": str(t.bid), "ask": str(t.ask), "ts": t.ts} for t in batch
                ]
            }
            reply = self.feed.request("POST", "/api/v1/feed/quotes", body=body)
            assert reply.json["accepted"] == len(batch), reply.json
            plan.path.extend(batch)
            self.market[symbol] = (batch[-1].bid, batch[-1].ask)

    def fill(self, number: int) -> None:
        """The ``number``-th client's EA takes every approved signal to its broker."""
        ea, client = self.eas[number]
        assert ea.run_once()
        for plan in self.plans.values():
            position = OpenPosition.objects.get(signal=plan.signal, client=client)
            filled_at = position.opened_at.timestamp()
            plan.fills.append((position.pk, model.Fill(len(plan.path), position.volume, filled_at)))
            plan.schedule.append(model.Filled(len(plan.fills) - 1))

    def caught_up(self) -> bool:
        """The EAs' next cycle; then every position's closes are the model's, none in flight."""
        for ea, _ in self.eas:
            ea.run_once()
        until = self.checked_at = time.time()
        return all(
            executed_closes(position) == closes
            for plan in self.plans.values()
            for position, closes in plan.expected(until).items()
        )

    def wait(self, celery: CeleryProcesses) -> None:
        try:
            wait_for(self.caught_up, timeout=30, interval=0.1)
        except AssertionError:
            until = time.time()
            for plan in self.plans.values():
                for position, closes in plan.expected(until).items():
                    print(plan.symbol, position, "expected", closes, "got", executed_closes(position))
            print(celery.logs())
            raise
        for plan in self.plans.values():  # as the model was checked: all swept by then
            plan.schedule.append(model.settled(len(plan.path), self.checked_at))


def test_plans_close_through_the_feed_api_a_worker_and_reference_eas_as_the_model_says(
    live_server, tmp_path, redis_client
):
    # given: four plans on four instruments, two clients whose EAs run the reference client
    trailing = {"sl": -30, "trailing": {"distance_pips": "10", "activation_pips": "15"}}
    breakeven = {"sl": -20, "tp": 40, "breakeven": {"trigger_pips": "10", "offset_pips": "2"}}
    partials = {"sl": -20, "tp": 40, "partial_take_profits": [(10, "0.3"), (20, "0.3")]}
    time_limit = {"sl": -50, "tp": 50, "max_holding_minutes": 1}
    plans = [
        Plan("EURUSD", "buy", Decimal("1.10000"), trailing),
        Plan("GBPUSD", "sell", Decimal("1.25000"), breakeven),
        Plan("AUDUSD", "buy", Decimal("0.66000"), partials),
        Plan("NZDUSD", "buy", Decimal("0.60000"), time_limit),
    ]
    desk = Desk(live_server, plans)
    _schedule_every_second()

    with CeleryProcesses(tmp_path, **FAST_SCHEDULE) as celery:
        celery.start_worker(concurrency=2)
        celery.start_beat()
        wait_for(sweep_last, timeout=30)  # the worker runs beat's sweeps

        # the signals are published; the first EA fills all four at once
        for plan in plans:
            plan.publish()
        desk.fill(0)
        # its NZDUSD position is made older than the plan's limit (a minute, the least there is)
        nzd_position, nzd_fill = plans[3].fills[0]
        OpenPosition.objects.filter(pk=nzd_position).update(opened_at=F("opened_at") - timedelta(seconds=61))
        plans[3].fills[0] = (nzd_position, model.Fill(0, nzd_fill.volume, nzd_fill.at - 61))

        # when: the market moves; the trailing stop and breakeven arm, the first partial is hit
        desk.send("EURUSD", [5, 10, 15, 20, 25])
        desk.send("GBPUSD", [4, 8, 11], one_by_one=True)
        desk.send("AUDUSD", [4, 11, 8])
        desk.send("NZDUSD", [1])
        desk.wait(celery)
        # the second EA fills now: the first partial, hit already, is its standing order
        desk.fill(1)
        desk.wait(celery)
        # the trailing stop is crossed in the middle of a batch, breakeven by one quote of
        # several, the second partial one by one; then the target in a batch
        desk.send("EURUSD", [22, 14, 20])
        desk.send("GBPUSD", [6, 1, 5], one_by_one=True)
        desk.send("AUDUSD", [15, 21, 18], one_by_one=True)
        desk.send("NZDUSD", [2, 0])
        desk.wait(celery)
        desk.send("AUDUSD", [30, 41, 35])
        desk.wait(celery)

    # then: every kind happened, and the positions' statuses agree
    reasons = set(CloseCommand.objects.values_list("reason", flat=True))
    assert reasons == {"trailing", "breakeven", "partial_tp", "take_profit", "time"}
    statuses = {
        plan.symbol: sorted(OpenPosition.objects.filter(signal=plan.signal).values_list("status", flat=True))
        for plan in plans
    }
    assert statuses == {
        "EURUSD": ["closed_trailing"] * 2,
        "GBPUSD": ["closed_breakeven"] * 2,
        "AUDUSD": ["closed_tp"] * 2,
        "NZDUSD": sorted(["closed_time", "open"]),
    }


def _a_claim_is_blocked() -> bool:
    """Whether a sweep's close claim waits for a row lock (pg_stat_activity keeps the first
    1 kB of the statement). Asked on our own autocommit connection."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
            ["%WITH wanted(key, reason%"],
        )
        return cursor.fetchone()[0] > 0


def _execute_until(device_ids: list[int], done) -> None:
    """The EAs keep executing what they are sent until ``done()``."""

    def cycle() -> bool:
        deliver_and_execute(device_ids)
        return done()

    wait_for(cycle, timeout=30)


def _ingest(bid: str) -> None:
    quotes_ingest(quotes=[Quote("EURUSD", Decimal(bid), Decimal(bid) + SPREAD, time.time())])


def test_partial_closes_and_the_final_close_happen_once_each_through_two_beats_and_a_killed_worker(
    tmp_path, redis_client
):
    # given: 100 positions of 0.10 lot on a buy with two partials (0.3 each: 0.03) and a target
    signal = make_signal(
        symbol="EURUSD",
        side="buy",
        entry="1.10000",
        sl="1.09000",
        tp="1.10600",
        partial_take_profits=[
            {"price": "1.10200", "fraction": "0.3"},
            {"price": "1.10400", "fraction": "0.3"},
        ],
    )
    positions = open_book(signal, 100)
    device_ids = [position.device_id for position in positions]
    _ingest("1.10000")
    _schedule_every_second()

    def executed(**filters) -> int:
        return CloseCommand.objects.filter(status=CloseCommandStatus.EXECUTED, **filters).count()

    with CeleryProcesses(tmp_path, **FAST_SCHEDULE) as celery:
        for name in ("beat-a", "beat-b"):
            celery.start_beat(name)
        for name in ("worker-a", "worker-b"):
            celery.start_worker(name, concurrency=2)

        # when: the first partial is hit; the EAs execute what they are sent
        _ingest("1.10210")
        _execute_until(device_ids, lambda: executed(partial_index=0) == 100)

        # the second partial is hit while an outside transaction holds one position's row:
        # the sweep's claim blocks mid-statement, and the workers are killed there (one of
        # them mid-claim: which one does not matter, and over a Unix socket it cannot be told)
        blocker = psycopg2.connect(current_database_url().replace("postgres://", "postgresql://"))
        try:
            with blocker.cursor() as cursor:
                cursor.execute(
                    "SELECT id FROM positions_openposition WHERE id = %s FOR UPDATE", [positions[-1].pk]
                )
            _ingest("1.10410")
            wait_for(_a_claim_is_blocked, timeout=30)
            for name in ("worker-a", "worker-b"):
                celery.kill(name)
            assert not CloseCommand.objects.filter(partial_index=1).exists()
            blocker.rollback()
        finally:
            blocker.close()
        for name in ("worker-c", "worker-d"):  # two workers again
            celery.start_worker(name, concurrency=2)
        _execute_until(device_ids, lambda: executed(partial_index=1) == 100)

        # the target closes the rest
        _ingest("1.10610")
        _execute_until(device_ids, lambda: executed(reason="take_profit") == 100)
        time.sleep(3)  # more sweeps from both beats, and redelivered messages, must add nothing
        deliver_and_execute(device_ids)

    # then: per position, each partial once and the target once, all executed, nothing else
    for position in OpenPosition.objects.filter(signal=signal):
        closes = list(
            CloseCommand.objects.filter(position=position)
            .order_by("pk")
            .values_list("reason", "partial_index", "volume", "status")
        )
        assert closes == [
            ("partial_tp", 0, Decimal("0.03"), "executed"),
            ("partial_tp", 1, Decimal("0.03"), "executed"),
            ("take_profit", None, Decimal("0.04"), "executed"),
        ], position.pk
        assert (position.status, position.remaining_volume) == (PositionStatus.CLOSED_TP, Decimal("0"))
