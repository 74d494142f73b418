"""Shared steps of the notification tests."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from positions.quotes import Quote, quotes_ingest
from positions.scanner import sweep
from signals_app.choices import OutboxStatus
from signals_app.models import OutboxMessage
from tests.ea_helpers import EA, ea_for, make_device


def fill(*, client, signal, ticket: str, price: str = "2650.50", volume: str = "0.10") -> EA:
    """The client's EA copies ``signal`` (its approval must be approved) through the API."""
    ea = ea_for(make_device(client=client))
    approval = signal.approvals.get(client=client)
    response = ea.ack(
        {
            "approval_id": approval.pk,
            "status": "placed",
            "broker_ticket": ticket,
            "entry_price": price,
            "volume": volume,
        }
    )
    assert response.status_code == 200, response.content
    return ea


def feed_quote(symbol: str, bid: str, ask: str) -> None:
    """The owner's feed reports a quote and the scanner judges it."""
    quotes_ingest(quotes=[Quote(symbol, Decimal(bid), Decimal(ask), time.time())])
    sweep()


def execute_closes(ea: EA, *, price: str) -> list[int]:
    """The EA executes its due close commands at ``price`` and acknowledges them."""
    commands = ea.close_commands().json()["commands"]
    for command in commands:
        response = ea.close_ack(
            {
                "command_id": command["command_id"],
                "status": "executed",
                "close_price": price,
                "closed_volume": command["volume"],
            }
        )
        assert response.status_code == 200, response.content
    return [command["command_id"] for command in commands]


def deliver_all(timeout: float = 8, horizon: float = 3) -> None:
    """Run deliveries until nothing queued is due within ``horizon`` seconds (rows the rate
    limits or a backoff hold come due within a second or two; a digest of owner alerts
    waits for its window's end)."""
    from monitoring.notifications.delivery import outbox_deliver

    deadline = time.monotonic() + timeout

    def due_soon() -> bool:
        soon = timezone.now() + timedelta(seconds=horizon)
        return OutboxMessage.objects.filter(status=OutboxStatus.QUEUED, next_attempt_at__lte=soon).exists()

    while due_soon():
        assert time.monotonic() < deadline, list(OutboxMessage.objects.values("status", "last_error"))
        outbox_deliver(budget_seconds=5)
        time.sleep(0.1)
