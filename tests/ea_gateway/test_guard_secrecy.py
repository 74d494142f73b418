"""Invariant 1 over the guards: an EA whose approvals are held back by its exposure
limits, and whose positions the market guard closes, receives neither a hidden level
nor its limits (names or values), nor why the provider closed; nor does a log line."""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from positions.choices import CloseReason
from positions.models import CloseCommand
from positions.quotes import Quote, quotes_ingest
from positions.scanner import sweep
from signals_app.events import Actor
from signals_app.models import Instrument
from signals_app.services import signal_create, signal_publish
from tests.ea_helpers import ea_for, make_device
from tests.factories import ClientFactory
from tests.secrecy import find_levels, level_pattern, response_text
from tests.signals.test_secrecy import signals

pytestmark = pytest.mark.django_db

# Words that would tell an EA why it got less, or why it was closed.
GUARD_WORDS = ("max_open_positions", "max_volume", "limit", "held", "market_guard", "spread", "gap", "expos")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=signals(), max_volume=st.sampled_from(["0.37", "0.53", "0.71"]))
def test_no_limit_and_no_level_reaches_an_ea_through_the_guards(
    body, max_volume, recorded_logs, redis_client
):
    # given: a client limited to one position, two signals for it, the market guard closing
    redis_client.flushdb()
    client = ClientFactory(
        auto_approve=True,
        default_volume=Decimal("0.10"),
        max_open_positions=1,
        max_volume_per_instrument=Decimal(max_volume),
    )
    ea = ea_for(make_device(client=client))
    by = Actor.system("bot")
    signals_published = []
    for _ in range(2):
        signal = signal_create(
            instrument=body["instrument"],
            side=body["side"],
            entry_price=Decimal(body["entry_price"]),
            ttl_minutes=body["ttl_minutes"],
            payload=body["payload"],
            owner_only=body["owner_only"],
            by=by,
        )
        signals_published.append(signal_publish(signal=signal, by=by).signal)
    Instrument.objects.filter(symbol=body["instrument"]).update(market_guard_mode="close")
    levels = [Decimal(str(body["owner_only"]["sl"])), Decimal(str(body["owner_only"]["tp"]))]
    entry = Decimal(body["entry_price"])
    tick = Decimal(10) ** entry.as_tuple().exponent

    # when: the EA polls (one handed out, one held back), fills, and the market widens
    polled = ea.poll()
    (item,) = polled.json()["approvals"]
    fill = {
        "approval_id": item["approval_id"],
        "status": "placed",
        "broker_ticket": "T1",
        "entry_price": str(entry),
        "volume": "0.10",
    }
    responses = [
        polled,
        ea.poll(),
        ea.ack(fill),
        ea.poll(),
        ea.request("GET", "/api/v1/client/poll", query={"wait": "0"}),
    ]
    now = time.time()
    calm = [Quote(body["instrument"], entry, entry + 2 * tick, now - 1 + n * 0.01) for n in range(12)]
    quotes_ingest(quotes=calm, source="feed")
    quotes_ingest(
        quotes=[Quote(body["instrument"], entry - 50 * tick, entry + 50 * tick, now)], source="feed"
    )
    sweep()
    assert CloseCommand.objects.get(position__client=client).reason == CloseReason.MARKET_GUARD
    commands = ea.close_commands()
    responses += [commands, ea.poll()]

    # then
    (command,) = commands.json()["commands"]
    assert command["reason"] == "closed by the provider"
    for response in responses:
        assert response.status_code == 200
        text = response_text(response)
        assert find_levels(text, levels) == []
        assert not level_pattern(Decimal(max_volume)).search(text)
        assert not [word for word in GUARD_WORDS if word in text.lower()], text
    assert find_levels("\n".join(recorded_logs.lines), levels) == []
