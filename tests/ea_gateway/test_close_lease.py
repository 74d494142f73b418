"""Leasing close commands in one statement (``positions.close_delivery.close_commands_lease``):
what it leases, audits and says about the next command in backoff, and that a woken
long-poll pays one statement for it."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from positions.choices import CloseCommandStatus
from positions.close_delivery import close_commands_lease
from positions.closes import positions_close_manual
from positions.models import CloseCommand, OpenPosition
from positions.quotes import Quote, quote_store
from signals_app.choices import AuditAction
from signals_app.events import Actor
from signals_app.models import AuditEvent
from tests.ea_gateway.test_longpoll import CLOSES, _ea_for_book_device
from tests.factories import make_signal, open_book

pytestmark = pytest.mark.django_db(transaction=True)

OWNER = Actor.system("tests")


@pytest.fixture
def three_closes(redis_client):
    """Three positions of one device, each with a pending close command; the second in backoff."""
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    open_book(signal, 3)
    quote_store(
        Quote("XAUUSD", Decimal("2650.00"), Decimal("2650.30"), time.time() - 1), received_at=time.time()
    )
    positions = list(OpenPosition.objects.order_by("pk"))
    OpenPosition.objects.update(device=positions[0].device)
    positions_close_manual(position_ids=[p.pk for p in positions], reason="desk", note="", by=OWNER)
    commands = list(CloseCommand.objects.order_by("position_id"))
    now = timezone.now()
    CloseCommand.objects.filter(pk=commands[1].pk).update(next_attempt_at=now + timedelta(seconds=7))
    return positions, commands, now


def test_a_lease_is_one_statement_that_leases_audits_and_says_what_is_next(three_closes):
    positions, commands, now = three_closes
    device_id = positions[0].device_id

    with CaptureQueriesContext(connection) as queries:
        lease = close_commands_lease(device_id=device_id, limit=10, now=now)

    assert len(queries.captured_queries) == 1
    assert [c.pk for c in lease.commands] == [commands[0].pk, commands[2].pk]
    for command in lease.commands:
        assert (command.status, command.attempts) == (CloseCommandStatus.DELIVERED, 1)
        assert command.delivered_at == now
        assert command.lease_expires_at == now + timedelta(seconds=settings.CLOSE_ACK_TIMEOUT_SECONDS)
        assert command.volume == Decimal("0.10")
        # Of the position, only what the EA is told: its ticket (the rest is never read here).
        assert (
            command.position.broker_ticket == OpenPosition.objects.get(pk=command.position_id).broker_ticket
        )
        assert "signal_id" in command.position.get_deferred_fields()
        stored = CloseCommand.objects.get(pk=command.pk)
        assert (stored.status, stored.attempts, stored.lease_expires_at) == (
            CloseCommandStatus.DELIVERED,
            1,
            command.lease_expires_at,
        )
    assert lease.next_due_in == pytest.approx(7.0)
    audited = AuditEvent.objects.filter(action=AuditAction.CLOSE_COMMAND_DELIVERED).order_by("subject_id")
    assert [(e.subject_type, e.subject_id, e.data, e.actor) for e in audited] == [
        ("closecommand", c.pk, {"device_id": device_id, "attempt": 1}, "ea-gateway") for c in lease.commands
    ]


def test_a_lease_takes_at_most_the_limit_and_nothing_twice(three_closes):
    positions, commands, now = three_closes
    device_id = positions[0].device_id

    first = close_commands_lease(device_id=device_id, limit=1, now=now)
    second = close_commands_lease(device_id=device_id, limit=1, now=now)
    third = close_commands_lease(device_id=device_id, limit=1, now=now)
    later = close_commands_lease(device_id=device_id, limit=5, now=now + timedelta(seconds=8))

    assert [c.pk for c in first.commands] == [commands[0].pk]
    assert [c.pk for c in second.commands] == [commands[2].pk]
    assert (third.commands, third.next_due_in) == ([], pytest.approx(7.0))
    assert ([c.pk for c in later.commands], later.next_due_in) == ([commands[1].pk], None)
    assert AuditEvent.objects.filter(action=AuditAction.CLOSE_COMMAND_DELIVERED).count() == 3


def test_nothing_for_another_device(three_closes):
    positions, _, now = three_closes
    other = OpenPosition.objects.exclude(device_id=positions[0].device_id).first()
    other_device = other.device_id if other else positions[0].device_id + 10_000

    lease = close_commands_lease(device_id=other_device, limit=10, now=now)

    assert (lease.commands, lease.next_due_in) == ([], None)
    assert not AuditEvent.objects.filter(action=AuditAction.CLOSE_COMMAND_DELIVERED).exists()


def test_the_endpoint_leases_with_one_statement_on_the_commands(three_closes):
    positions, commands, _ = three_closes
    ea = _ea_for_book_device(positions[0])

    with CaptureQueriesContext(connection) as queries:
        response = ea.request("GET", CLOSES)

    assert response.status_code == 200
    assert [c["command_id"] for c in response.json()["commands"]] == [commands[0].pk, commands[2].pk]
    touching = [q["sql"] for q in queries.captured_queries if "positions_closecommand" in q["sql"]]
    assert len(touching) == 1
    assert set(response.json()["commands"][0]) == {
        "command_id",
        "position_id",
        "broker_ticket",
        "volume",
        "reason",
    }
