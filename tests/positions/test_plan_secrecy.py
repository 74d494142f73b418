"""Invariants 1 and 2 over exit plans, as a property.

For any plan with a trailing stop (pips or ATR), breakeven and partial
take-profits, after the owner's quotes have moved the stop, hit the partials and
closed every position at the moved stop:

* nothing a client can receive (every EA endpoint: poll, ack, close-commands
  with its reason, close-ack, heartbeat; their error bodies; every header) and no
  log line at INFO or above holds a hidden price: sl, tp, the partials, the
  trailing distance and activation in price, the breakeven trigger and offset,
  the breakeven stop, every position the stop took (effective, moved) and the
  best price as the plan stores it;
* none of them is plaintext anywhere in PostgreSQL (every row of every table,
  bytea decoded, Fernet tokens left out) or in Redis (every key's whole value).

Quote prices are not levels. The close commands' trigger quote (and its audit
rows), the plan's exit quote, the candles and the quote path hold the owner's
quotes in plaintext, by design. So the storage scan leaves out every value that is also a
quote price (which removes the stored best price: it is one of the quotes). The
scenarios are built so that no level is ever a quote price: prices are counted
in units of the instrument's last digit, every quote (bid and ask) and candle
price is 2 mod 4 units, every level and every distance is an odd number of
units (or finer), and the entry (the one price a client is told) is 0 mod 4.
Every distance is at least 101 units, so at two digits it is above any volume
a client sees (at most 1.00).
Hence sl, tp, the partials, the moved stop and the distances are always among
the values searched: the test asserts that too, so it cannot pass by searching
for nothing. The same arithmetic keeps every searched value off whole numbers,
so a level never matches an id or a Content-Length by chance.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.test import Client as BrowserClient
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ea_gateway.choices import DeviceRole
from positions import scanner
from positions.choices import CloseCommandStatus, PositionStatus
from positions.exit_plan import BUY, ExitPlan, PlanEvent, PlanState, plan_advance
from positions.models import Candle, CloseCommand, OpenPosition, SignalPlan
from positions.scanner import sweep
from positions.timeouts import close_commands_timeout
from signals_app.choices import AuditAction
from signals_app.events import Actor, audit
from signals_app.models import AuditEvent, Instrument
from signals_app.services import signal_create, signal_publish
from tests.ea_helpers import EA, ea_for, make_device
from tests.factories import ClientFactory, make_signal
from tests.secrecy import database_text, find_levels, level_pattern, redis_text

pytestmark = pytest.mark.django_db

# digits 5, 3, 2 and 2 with pips of 0.0001, 0.01, 0.1 and 1: every kind of pip conversion.
SYMBOLS = ["EURUSD", "USDJPY", "XAUUSD", "US500"]
PEAK = 12  # the path rises 12 D (+2 units) in the trade's favour, then falls to -2 D
ATR_MULTIPLES = {1: "0.125", 3: "0.375"}  # r / 8: with a true range of 8q units, r*q units


@dataclass(frozen=True)
class Scenario:
    """One plan and one path of the owner's quotes, in units of the instrument's last digit.

    Distances are measured from the entry in the trade's favour; ``path`` is the
    price the trade is judged on (bid for a buy, ask for a sell), as an offset in
    the trade's favour.
    """

    symbol: str
    side: str
    entry: int
    sl: int
    tp: int
    partials: tuple[tuple[int, str], ...]  # (distance, fraction)
    trailing: str  # "pips", "atr" or ""
    trailing_distance: int  # pips mode; for ATR it is atr_r * atr_q
    atr_q: int  # odd: the ATR is 8 * atr_q units
    atr_r: int
    atr_period: int
    activation: int | None
    breakeven: str  # "pips", "fraction" or ""
    breakeven_trigger: int
    breakeven_fraction: str
    breakeven_offset: int
    path: tuple[int, ...]
    peak_index: int
    sweep_after: tuple[bool, ...]
    peak_cycles: int

    @property
    def direction(self) -> int:
        return 1 if self.side == BUY else -1

    def level(self, distance: int) -> int:
        return self.entry + self.direction * distance

    @property
    def trailing_units(self) -> int:
        return self.atr_r * self.atr_q if self.trailing == "atr" else self.trailing_distance

    def quotes(self) -> list[tuple[int, int]]:
        """(bid, ask) of each quote: the judged side on the path, the other 4 units away."""
        judged = [self.level(offset) for offset in self.path]
        return [(price, price + 4) if self.side == BUY else (price - 4, price) for price in judged]

    def expected_stop(self) -> int:
        """Where the stop ends: the trailing stop behind the peak beats breakeven."""
        if self.trailing:
            return self.level(max(self.path) - self.trailing_units)
        return self.level(self.breakeven_offset)


@st.composite
def scenarios(draw, trailing: str) -> Scenario:
    entry = 4 * draw(st.integers(min_value=25_000, max_value=2_250_000))
    d = entry // 400 // 16 * 16  # D: a multiple of 16 units, about 0.25% of the entry
    small_odd = st.integers(min_value=0, max_value=d // 4).map(lambda n: 2 * n + 1)
    breakeven = draw(st.sampled_from(["pips", "fraction", ""] if trailing else ["pips", "fraction"]))
    partials = tuple(
        ((2 + 2 * index) * d + draw(small_odd), draw(st.sampled_from(["0.2", "0.25", "0.3"])))
        for index in range(draw(st.integers(min_value=1, max_value=3)))
    )
    activation_multiple = draw(st.none() | st.integers(min_value=1, max_value=4))
    rise = draw(st.integers(min_value=7, max_value=12))
    fall = draw(st.integers(min_value=7, max_value=12))
    # Steps of at most 2 D (0.5%): never a spike. Every offset is 2 mod 4 units.
    up = [2 + 4 * round(step * 3 * d / rise) for step in range(rise + 1)]
    down = [PEAK * d + 2 - 4 * round(step * 7 * d / (2 * fall)) for step in range(1, fall + 1)]
    path = (*up, *down)
    sweep_after = list(draw(st.lists(st.booleans(), min_size=len(path), max_size=len(path))))
    sweep_after[rise] = sweep_after[-1] = True  # one sweep at the peak: partials close before the exit
    return Scenario(
        symbol=draw(st.sampled_from(SYMBOLS)),
        side=draw(st.sampled_from(["buy", "sell"])),
        entry=entry,
        sl=4 * d + draw(small_odd),
        tp=20 * d + draw(small_odd),
        partials=partials,
        trailing=trailing,
        trailing_distance=draw(st.integers(min_value=1, max_value=4)) * d + draw(small_odd),
        atr_q=2 * d + draw(small_odd),
        atr_r=draw(st.sampled_from(sorted(ATR_MULTIPLES))),
        atr_period=draw(st.integers(min_value=1, max_value=3)),
        activation=None if activation_multiple is None else activation_multiple * d + draw(small_odd),
        breakeven=breakeven,
        breakeven_trigger=draw(st.integers(min_value=1, max_value=8)) * d + draw(small_odd),
        breakeven_fraction=draw(st.sampled_from(["0.1", "0.3", "0.5"])),
        breakeven_offset=2 * draw(st.integers(min_value=50, max_value=d // 4)) + 1,
        path=path,
        peak_index=rise,
        sweep_after=tuple(sweep_after),
        peak_cycles=draw(st.integers(min_value=0, max_value=3)),
    )


@dataclass
class Walks:
    """Every plan the scanner walked, the states it went through and the events it
    produced: the hidden prices the server computed, read where it computes them."""

    plans: list[ExitPlan] = field(default_factory=list)
    states: list[PlanState] = field(default_factory=list)
    events: list[PlanEvent] = field(default_factory=list)

    def clear(self) -> None:
        self.plans.clear()
        self.states.clear()
        self.events.clear()

    def hidden_prices(self) -> set[Decimal]:
        values: set[Decimal | None] = set()
        for plan in self.plans:
            values |= {plan.sl, plan.tp, plan.trailing_distance, plan.breakeven_trigger}
            values |= {price for price, _ in plan.partials}
            if plan.trailing_activation:
                values.add(plan.trailing_activation)
            if plan.breakeven_offset:
                offset = plan.breakeven_offset
                values |= {offset, plan.entry + offset if plan.side == BUY else plan.entry - offset}
        for state in self.states:
            values |= {state.best, state.moved_stop}
        for event in self.events:
            values |= {event.old_stop, event.new_stop}
        return {value for value in values if value is not None}


@pytest.fixture
def walks(monkeypatch) -> Walks:
    """The real ``plan_advance``, recording what it is given and returns."""
    seen = Walks()

    def recording(plan, state, path, **options):
        new_state, events = plan_advance(plan, state, path, **options)
        seen.plans.append(plan)
        seen.states += [state, new_state]
        seen.events += events
        return new_state, events

    monkeypatch.setattr(scanner, "plan_advance", recording)
    return seen


def _response_text(response) -> str:
    body = response.content.decode()
    if response.request["PATH_INFO"] == "/metrics":
        # The process collectors' figures (CPU seconds, memory, GC counts) are the
        # runtime's, not the domain's; a CPU time of 12.35 s is no trailing distance.
        body = "\n".join(line for line in body.splitlines() if not line.startswith(("process_", "python_")))
    return body + " " + " ".join(f"{k}: {v}" for k, v in response.items())


def _log_text(records) -> str:
    formatter = logging.Formatter()
    return "\n".join(
        f"{record.name} {record.getMessage()} {record.args!r} "
        f"{formatter.formatException(record.exc_info) if record.exc_info else ''}"
        for record in records
        if record.levelno >= logging.INFO
    )


def _lines_with(text: str, values: set[Decimal], words: list[str]) -> list[str]:
    """The lines of ``text`` that hold a value or a word: the assertion message."""
    patterns = [level_pattern(value) for value in values]
    return [
        line[:400]
        for line in text.splitlines()
        if any(pattern.search(line) for pattern in patterns) or any(word in line for word in words)
    ][:10]


class Desk:
    """The scenario's prices in the instrument's units, and every quote price it sends."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.instrument = Instrument.objects.get(symbol=scenario.symbol)
        self.quote_prices: set[Decimal] = set()
        self._last_ts = 0.0

    def price(self, units: int) -> Decimal:
        return Decimal(units).scaleb(-self.instrument.digits)

    def pips(self, units: int) -> str:
        return format((self.price(units) / self.instrument.pip_size).normalize(), "f")

    def owner_only(self, *, strategy: str, reason: str) -> dict:
        s = self.scenario
        levels: dict = {
            "sl": str(self.price(s.level(-s.sl))),
            "tp": str(self.price(s.level(s.tp))),
            "strategy": strategy,
            "reason": reason,
        }
        if s.partials:
            levels["partial_take_profits"] = [
                {"price": str(self.price(s.level(distance))), "fraction": fraction}
                for distance, fraction in s.partials
            ]
        if s.trailing:
            trailing: dict = (
                {"distance_pips": self.pips(s.trailing_distance)}
                if s.trailing == "pips"
                else {
                    "distance_atr": ATR_MULTIPLES[s.atr_r],
                    "atr_period": s.atr_period,
                    "atr_timeframe": "D1",
                }
            )
            if s.activation is not None:
                trailing["activation_pips"] = self.pips(s.activation)
            levels["trailing"] = trailing
        if s.breakeven:
            trigger = (
                {"trigger_pips": self.pips(s.breakeven_trigger)}
                if s.breakeven == "pips"
                else {"trigger_fraction": s.breakeven_fraction}
            )
            levels["breakeven"] = {**trigger, "offset_pips": self.pips(s.breakeven_offset)}
        return levels

    def seed_atr_bars(self) -> None:
        """Daily bars from the day before the ATR's window to tomorrow, each ranging over
        [low, high], which brackets every bid of the path: the true range of every bar is
        high - low = 8q whichever day the path's quotes fall on (past midnight too), so the
        ATR is 8q units and the trailing distance r/8 of it: r*q, odd."""
        s = self.scenario
        bids = [bid for bid, _ in s.quotes()]
        true_range = 8 * s.atr_q
        slack = (true_range - (max(bids) - min(bids))) // 2 // 4 * 4
        low = min(bids) - slack
        high = low + true_range
        close = bids[0]
        today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
        Candle.objects.bulk_create(
            [
                Candle(
                    instrument=self.instrument,
                    minute=today + timedelta(days=day),
                    open=self.price(close),
                    high=self.price(high),
                    low=self.price(low),
                    close=self.price(close),
                    quotes=1,
                    first_ts=(today + timedelta(days=day)).timestamp(),
                    last_ts=(today + timedelta(days=day)).timestamp(),
                )
                for day in range(-s.atr_period, 2)
            ]
        )
        self.quote_prices |= {self.price(low), self.price(high), self.price(close)}

    def quote(self, bid: int, ask: int) -> dict:
        self._last_ts = max(time.time(), self._last_ts + 0.001)
        self.quote_prices |= {self.price(bid), self.price(ask)}
        return {
            "instrument": self.scenario.symbol,
            "bid": str(self.price(bid)),
            "ask": str(self.price(ask)),
            "ts": self._last_ts,
        }


def _close_cycle(eas: list[EA], stranger: EA, entry_price: str) -> list:
    """Each EA polls its close commands, executes them (with a few mistakes first) and
    sends a heartbeat listing its open tickets."""
    responses = []
    for ea in eas:
        listed = ea.close_commands()
        responses.append(listed)
        for command in listed.json()["commands"]:
            ack = {
                "command_id": command["command_id"],
                "status": "executed",
                "close_price": entry_price,
                "closed_volume": command["volume"],
            }
            responses += [
                ea.close_ack({**ack, "closed_volume": "99.00"}),  # more than is open: 400
                ea.close_ack(ack),
                ea.close_ack(ack),  # replayed: the same answer
                ea.close_ack({**ack, "closed_volume": "0.01"}),  # conflicting: 409
                stranger.close_ack(ack),  # another client's command: 404
            ]
        tickets = OpenPosition.objects.filter(
            device=ea.device, status__in=[PositionStatus.OPEN, PositionStatus.CLOSING]
        ).values_list("broker_ticket", flat=True)
        responses.append(ea.heartbeat({"balance": "1000", "equity": "990", "open_tickets": list(tickets)}))
    return responses


@pytest.mark.parametrize(
    "trailing", ["pips", "atr", ""], ids=["trailing-pips", "trailing-atr", "breakeven-only"]
)
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_hidden_price_of_a_moving_plan_reaches_a_client_or_storage(
    trailing, data, walks, caplog, redis_client
):
    # given: a plan with partial take-profits and a stop that moves (trailing, breakeven or
    # both); fresh Redis and logs; the plan's instrument without bars of an earlier example
    scenario = data.draw(scenarios(trailing), label="scenario")
    redis_client.flushdb()
    caplog.clear()
    caplog.set_level(logging.INFO)
    walks.clear()
    secret_words = [f"strategy-{secrets.token_hex(6)}", f"reason-{secrets.token_hex(6)}"]
    feed = ea_for(make_device(role=DeviceRole.FEED, name="feed"))
    desk = Desk(scenario)
    Candle.objects.filter(instrument=desk.instrument).delete()
    if scenario.trailing == "atr":
        desk.seed_atr_bars()
    clients = [ClientFactory(auto_approve=True, default_volume=Decimal("1.00")) for _ in range(2)]
    eas = [ea_for(make_device(client=client)) for client in clients]
    stranger = ea_for(make_device())
    by = Actor.system("bot")
    signal = signal_create(
        instrument=scenario.symbol,
        side=scenario.side,
        entry_price=desk.price(scenario.entry),
        ttl_minutes=240,
        payload={"timeframe": "H1"},
        owner_only=desk.owner_only(strategy=secret_words[0], reason=secret_words[1]),
        by=by,
    )
    signal_publish(signal=signal, by=by)
    entry_price = str(desk.price(scenario.entry))

    # when: both EAs take the trade (with mistakes), then the owner's feed walks the path up
    # through the partials, breakeven and the trailing activation and back down through the
    # moved stop, with sweeps between batches and the EAs executing what they are told
    responses = []
    for index, ea in enumerate(eas):
        polled = ea.poll()
        approval = next(a for a in polled.json()["approvals"] if a["signal_id"] == signal.pk)
        fill = {
            "approval_id": approval["approval_id"],
            "status": "placed",
            "broker_ticket": f"T{signal.pk}-{index}",
            "entry_price": entry_price,
            "volume": "1.00",
        }
        responses += [
            polled,
            ea.ack(fill),
            ea.ack(fill),
            ea.ack({**fill, "broker_ticket": "other"}),
            ea.ack({**fill, "sl": "1"}),
            stranger.ack(fill),
        ]
    batch = []
    for index, (bid, ask) in enumerate(scenario.quotes()):
        batch.append(desk.quote(bid, ask))
        if not scenario.sweep_after[index]:
            continue
        responses.append(feed.quotes({"quotes": batch}))
        batch = []
        sweep()
        responses += _close_cycle(eas, stranger, entry_price)
        if index == scenario.peak_index:
            for _ in range(scenario.peak_cycles):
                sweep()
                responses += _close_cycle(eas, stranger, entry_price)
    positions = OpenPosition.objects.filter(signal=signal)
    for _ in range(5):  # standing orders: the exit after the last partial is acknowledged
        if not positions.filter(status__in=[PositionStatus.OPEN, PositionStatus.CLOSING]).exists():
            break
        sweep()
        responses += _close_cycle(eas, stranger, entry_price)
    anonymous = BrowserClient()
    responses += [
        eas[0].poll(),
        eas[0].close_commands(),
        eas[0].request("GET", "/api/v1/client/poll", **{"X-Signature": "0" * 64}),
        eas[0].heartbeat({"balance": "x", "equity": "990", "open_tickets": []}),
        stranger.poll(),
        stranger.close_commands(),
        feed.poll(),
        feed.close_commands(),
        anonymous.get("/healthz"),
        anonymous.get("/metrics"),
    ]
    close_commands_timeout(now=timezone.now() + timedelta(hours=1))  # alerts and their log lines

    # then: the plan did what the scenario says (else the scans below would search for nothing)
    plan_row = SignalPlan.objects.get(signal=signal)
    state = PlanState.from_json(plan_row.state)
    kind = "trailing" if scenario.trailing else "breakeven"
    assert plan_row.exit_kind == kind
    assert (
        state.moved_stop == desk.price(scenario.expected_stop()) != desk.price(scenario.level(-scenario.sl))
    )
    assert AuditEvent.objects.filter(action=AuditAction.SIGNAL_STOP_MOVED, subject_id=signal.pk).exists()
    assert set(positions.values_list("status", flat=True)) == {f"closed_{kind}"}
    if scenario.trailing == "atr":
        assert desk.price(scenario.trailing_units) in {plan.trailing_distance for plan in walks.plans}
    executed_partials = CloseCommand.objects.filter(
        position__signal=signal, partial_index__isnull=False, status=CloseCommandStatus.EXECUTED
    )
    assert executed_partials.count() >= len(eas)  # at least the first partial on each position

    # the hidden prices: the scenario's own, and all the scanner computed on the way
    s = scenario
    stated = {desk.price(s.level(-s.sl)), desk.price(s.level(s.tp)), state.moved_stop, state.best}
    stated |= {desk.price(s.level(distance)) for distance, _ in s.partials}
    if s.trailing:
        stated.add(desk.price(s.trailing_units))
    if s.activation is not None and s.trailing:
        stated.add(desk.price(s.activation))
    if s.breakeven:
        stated |= {desk.price(s.breakeven_offset), desk.price(s.level(s.breakeven_offset))}
        stated.add(
            desk.price(s.breakeven_trigger)
            if s.breakeven == "pips"
            else Decimal(s.breakeven_fraction) * desk.price(s.tp)
        )
    hidden = stated | walks.hidden_prices()
    client_known = {desk.price(s.entry)}
    for_clients = hidden - client_known
    in_storage = hidden - desk.quote_prices - client_known
    assert stated - {state.best} <= in_storage, "a level is also a quote price: the scan would miss it"
    assert state.best in desk.quote_prices  # the stored best is a quote: searched for on client surfaces only

    for response in responses:
        assert response.status_code != 500, response.request["PATH_INFO"]
        text = _response_text(response)
        leaked = find_levels(text, for_clients) + [word for word in secret_words if word in text]
        assert leaked == [], (response.request["PATH_INFO"], response.status_code, leaked, text[:500])
    logs = _log_text(caplog.records)
    assert find_levels(logs, for_clients) == [], _lines_with(logs, for_clients, secret_words)
    assert not any(word in logs for word in secret_words), _lines_with(logs, set(), secret_words)
    stored = database_text() + "\n" + redis_text(redis_client)
    assert find_levels(stored, in_storage) == [], _lines_with(stored, in_storage, secret_words)
    assert not any(word in stored for word in secret_words), _lines_with(stored, set(), secret_words)


def test_the_storage_scans_find_a_planted_level_and_skip_ciphertext(redis_client):
    # given: one level encrypted where it belongs, a second one planted in plaintext
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.13", tp="2670.00")
    encrypted, planted = Decimal("2645.13"), Decimal("2611.37")
    assert find_levels(database_text(), [encrypted, planted]) == []
    audit(
        by=Actor.system("tests"),
        action=AuditAction.SIGNAL_LEVELS_CHANGED,
        subject=signal,
        data={"x": "2611.370"},
    )
    redis_client.set("veilstop:planted", "stop=2611.37;")

    # when
    stored = database_text()

    # then: the plaintext is found in both stores, the ciphertext is not mistaken for text
    assert find_levels(stored, [encrypted, planted]) == ["2611.37"]
    assert find_levels(redis_text(redis_client), [planted]) == ["2611.37"]
    assert "<fernet>" in database_text(["signals_app_signal"])
