"""Notifications through a real Celery worker: the close-ack's commit queues the
delivery, the worker sends to the Bot API stand-in and the SMTP server, and a 429's
retry_after is waited out by a run the worker queues for it (no beat running)."""

from __future__ import annotations

from decimal import Decimal

import pytest

from positions.choices import CloseReason
from positions.close_delivery import CloseResult, close_command_ack
from positions.closes import close_command_request
from positions.models import OpenPosition
from signals_app.choices import OutboxStatus
from signals_app.events import Actor
from signals_app.models import OutboxMessage
from tests.factories import ClientFactory, make_signal
from tests.helpers import CeleryProcesses, wait_for
from tests.monitoring.notify_helpers import fill

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_a_worker_delivers_after_the_commit_and_waits_out_a_429(
    tmp_path, telegram, mailbox, redis_client, settings
):
    # given: a worker configured like production, pointed at the local servers
    environment = {
        "TELEGRAM_BOT_TOKEN": telegram.token,
        "TELEGRAM_API_URL": telegram.url,
        "EMAIL_URL": f"smtp://127.0.0.1:{settings.EMAIL_PORT}",  # the mailbox fixture's server
    }
    client = ClientFactory(auto_approve=True, telegram_chat_id="3001", contact_email="c@example.com")
    signal = make_signal(sl="2645.00", tp="2670.00")
    telegram.script("3001", (200, {}), (429, {"retry_after": 1}))  # the fill's message, then the close's

    with CeleryProcesses(tmp_path, **environment) as celery:
        celery.start_worker()
        try:
            # when: the EA fills; its commit queues the delivery
            fill(client=client, signal=signal, ticket="E2E-1")
            wait_for(lambda: len(telegram.attempts("3001")) == 1, timeout=30)
            # and the position closes at its hidden stop
            position = OpenPosition.objects.get(signal=signal)
            command = close_command_request(
                position=position, reason=CloseReason.STOP_LOSS, by=Actor.system("tests")
            )
            close_command_ack(
                command_id=command.pk,
                device_id=position.device_id,
                result=CloseResult(
                    executed=True, close_price=Decimal("2644.70"), closed_volume=Decimal("0.10")
                ),
                by=Actor.system("tests"),
            )
            wait_for(lambda: len(telegram.sent("3001")) == 2, timeout=30)
            wait_for(lambda: len(mailbox.to("c@example.com")) == 2, timeout=30)
        except AssertionError:
            print(celery.logs())
            raise

    # then: the close was refused once with retry_after 1 and sent after at least that long
    attempts = telegram.attempts("3001")
    assert [call.status for call in attempts] == [200, 429, 200]
    assert attempts[2].at - attempts[1].at >= 1
    assert "risk limit hit" in attempts[2].params["text"]
    assert sorted(m["Subject"] for m in mailbox.to("c@example.com")) == [
        "Position closed: XAUUSD (risk limit hit)",
        "Position opened: Buy 0.10 XAUUSD",
    ]
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {OutboxStatus.SENT}
