"""A signal's whole life through the real server, for the chart's tests: quotes through
``quotes_ingest`` (what the feed API calls; it writes the candles), a fill through
``approval_fill_report`` (the EA's ack), ``sweep()`` after every quote, the EA executing
each close command it is given. The clock is moved minute by minute (time-machine), so
the candles, the fill, the stop's moves and the closes each fall in their own minute.

A buy of EURUSD at 1.10000: stop-loss 1.09800, take-profit 1.10600, a partial take-profit
of half at 1.10200, a trailing stop 10 pips behind the best bid once 15 pips up. The bid
climbs to 1.10300 (the partial is hit at 1.10250; the stop trails up, in four minutes, to
1.10200) and falls back to 1.10190: the trailing stop closes the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

import time_machine
from django.test import TestCase

from positions.close_delivery import CloseResult, close_command_ack, close_commands_deliver
from positions.fills import Fill, FillReport, approval_fill_report
from positions.quotes import Quote, quotes_ingest
from positions.scanner import sweep
from signals_app.events import Actor
from signals_app.models import Approval
from tests.ea_helpers import make_device
from tests.factories import ClientFactory, make_signal

SYMBOL = "EURUSD"
ENTRY = "1.10000"
LEVELS = {
    "sl": "1.09800",
    "tp": "1.10600",
    "partial_take_profits": [{"price": "1.10200", "fraction": "0.5"}],
    "trailing": {"distance_pips": "10", "activation_pips": "15"},
}
# The bids of each minute, quoted 10, 30 and 50 seconds past it (the ask 1 pip above).
BIDS = [
    ("1.10000", "1.10010", "1.09990"),  # published
    ("1.09990", "1.10020", "1.10030"),  # filled after the first quote
    ("1.10050", "1.10080", "1.10070"),
    ("1.10120", "1.10160", "1.10140"),  # 16 pips up: the stop trails, at 1.10060
    ("1.10180", "1.10250", "1.10230"),  # the partial take-profit; the stop to 1.10150
    ("1.10270", "1.10300", "1.10280"),  # the stop to 1.10170, then 1.10200
    ("1.10260", "1.10240", "1.10250"),
    ("1.10220", "1.10190", "1.10180"),  # through the trailing stop: closed
]
FILL_MINUTE = 1
# The effective stop at the end of each minute it moved in (the chart draws one step per bar).
STOPS = {0: "1.09800", 3: "1.10060", 4: "1.10150", 5: "1.10200"}
EA = Actor.system("test-ea")


@dataclass(frozen=True)
class Story:
    signal: object
    position_id: int
    start: datetime
    end: datetime  # the minute after the last quote


def _committed():
    return TestCase.captureOnCommitCallbacks(execute=True)


def _execute_closes(device_id: int) -> None:
    for command in close_commands_deliver(device_id=device_id, limit=10):
        price = Decimal(command.trigger_quote["bid"])
        with _committed():
            close_command_ack(
                command_id=command.pk,
                device_id=device_id,
                result=CloseResult(executed=True, close_price=price, closed_volume=command.volume),
                by=EA,
            )


def trade_story(start: datetime) -> Story:
    """Run the story from ``start`` (a whole minute) on; the clock is back when it returns."""
    with time_machine.travel(start, tick=False):
        device = make_device(client=ClientFactory(auto_approve=True, default_volume=Decimal("0.10"))).device
        signal = make_signal(symbol=SYMBOL, side="buy", entry=ENTRY, **LEVELS)
    position_id = None
    for minute, bids in enumerate(BIDS):
        for second, bid in zip((10, 30, 50), bids, strict=True):
            moment = start + timedelta(minutes=minute, seconds=second)
            with time_machine.travel(moment, tick=False):
                price = Decimal(bid)
                quotes_ingest(quotes=[Quote(SYMBOL, price, price + Decimal("0.00010"), moment.timestamp())])
                if minute == FILL_MINUTE and position_id is None:
                    position_id = _fill(signal, device)
                sweep()
                _execute_closes(device.pk)
    return Story(signal, position_id, start, start + timedelta(minutes=len(BIDS)))


def _fill(signal, device) -> int:
    approval = Approval.objects.get(signal=signal, client_id=device.client_id)
    with _committed():
        return approval_fill_report(
            report=FillReport(
                approval_id=approval.pk,
                client_id=device.client_id,
                device_id=device.pk,
                fill=Fill(broker_ticket="chart-1", entry_price=Decimal(ENTRY), volume=Decimal("0.10")),
            ),
            by=EA,
        ).position_id
