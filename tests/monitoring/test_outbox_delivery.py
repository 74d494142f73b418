"""Sending the outbox against real local servers: Telegram's answers (429 with
retry_after, 5xx, a blocked bot), SMTP refusals, the rate limits, owner alerts grouped,
and two workers never sending one message twice."""

from __future__ import annotations

import itertools
import socket
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from monitoring.notifications import delivery
from monitoring.notifications.delivery import outbox_deliver
from positions.alerts import alert_raise
from positions.choices import AlertKind
from positions.models import Alert
from signals_app.choices import OutboxChannel, OutboxStatus, OutboxTemplate
from signals_app.models import OutboxMessage
from signals_app.notify.outbox import Recipient, Rendered, outbox_message, outbox_write
from tests.monitoring.notify_helpers import deliver_all

pytestmark = pytest.mark.django_db


def _queue(chat_id: str, text: str = "hello", *, channel: str = OutboxChannel.TELEGRAM, key: str = "") -> int:
    outbox_write(
        [
            outbox_message(
                recipient=Recipient(OutboxChannel(channel), chat_id, None),
                template=OutboxTemplate.POSITION_OPENED,
                rendered=Rendered(subject="Subject", body=text),
                dedupe_key=key or f"test:{chat_id}:{text}",
            )
        ]
    )
    return OutboxMessage.objects.get(dedupe_key=key or f"test:{chat_id}:{text}").pk


def test_a_429_waits_the_retry_after_telegram_names(telegram, redis_client):
    telegram.script("7", (429, {"retry_after": 2}))
    pk = _queue("7")

    first = outbox_deliver()
    message = OutboxMessage.objects.get(pk=pk)
    assert (first.retried, message.status, message.attempts) == (1, OutboxStatus.QUEUED, 1)
    assert "429" in message.last_error
    wait = (message.next_attempt_at - timezone.now()).total_seconds()
    assert 1.5 < wait <= 2

    # not before the wait is over, however often the delivery runs
    outbox_deliver()
    assert len(telegram.attempts("7")) == 1
    deliver_all()

    attempts = telegram.attempts("7")
    assert [call.status for call in attempts] == [429, 200]
    assert attempts[1].at - attempts[0].at >= 2
    assert OutboxMessage.objects.get(pk=pk).status == OutboxStatus.SENT


def test_a_5xx_is_retried_with_backoff_then_sent(telegram, redis_client, monkeypatch):
    monkeypatch.setattr(delivery, "BACKOFF_BASE_SECONDS", 1)
    telegram.script("8", (502, {}), (500, {}))
    pk = _queue("8")
    retried = delivery.NOTIFICATIONS.labels(channel="telegram", result="retry")._value.get()
    sent = delivery.NOTIFICATIONS.labels(channel="telegram", result="sent")._value.get()

    outbox_deliver()
    message = OutboxMessage.objects.get(pk=pk)
    assert (message.status, message.attempts) == (OutboxStatus.QUEUED, 1)
    assert "502" in message.last_error
    assert 0.5 < (message.next_attempt_at - timezone.now()).total_seconds() <= 1
    deliver_all()

    message.refresh_from_db()
    assert [call.status for call in telegram.attempts("8")] == [502, 500, 200]
    assert (message.status, message.attempts, message.last_error) == (OutboxStatus.SENT, 3, "")
    assert delivery.NOTIFICATIONS.labels(channel="telegram", result="retry")._value.get() == retried + 2
    assert delivery.NOTIFICATIONS.labels(channel="telegram", result="sent")._value.get() == sent + 1
    gaps = [later.at - earlier.at for earlier, later in itertools.pairwise(telegram.attempts("8"))]
    assert gaps[0] >= 1  # exponential: 1 s,
    assert gaps[1] >= 2  # then 2 s


def test_retries_end_at_the_attempt_limit_failed_and_the_owner_alerted(
    telegram, redis_client, settings, monkeypatch
):
    monkeypatch.setattr(delivery, "BACKOFF_BASE_SECONDS", 0.2)
    settings.NOTIFICATION_MAX_ATTEMPTS = 2
    telegram.script("9", (500, {}), (500, {}))
    pk = _queue("9")

    deliver_all()

    message = OutboxMessage.objects.get(pk=pk)
    assert (message.status, message.attempts) == (OutboxStatus.FAILED, 2)
    alert = Alert.objects.get(kind=AlertKind.NOTIFICATION_FAILED)
    assert "2 attempts" in alert.message


def test_a_blocked_chat_fails_for_good_and_the_owner_hears_once(telegram, mailbox, redis_client, settings):
    # given: the owner on Telegram and e-mail; a client's chat that blocked the bot
    settings.OWNER_TELEGRAM_CHAT_ID = "999"
    settings.OWNER_ALERT_EMAILS = ["owner@example.com"]
    telegram.script("66", (403, {}), (403, {}), (403, {}))
    first, second = _queue("66", "one"), _queue("66", "two")

    # when: every message to it is tried, and a third one later
    deliver_all()
    third = _queue("66", "three")
    deliver_all()

    # then: each is failed after one try (asking again changes nothing)
    for pk in (first, second, third):
        message = OutboxMessage.objects.get(pk=pk)
        assert (message.status, message.attempts) == (OutboxStatus.FAILED, 1)
        assert message.last_error == "Telegram 403: Forbidden: bot was blocked by the user"
    # and the owner is alerted once: one alert counting the failures, one message per owner channel
    alert = Alert.objects.get(kind=AlertKind.NOTIFICATION_FAILED)
    assert alert.occurrences == 3
    assert "66" in alert.message
    owner_texts = telegram.sent("999")
    assert len(owner_texts) == 1
    assert owner_texts[0].startswith(
        "Veilstop alert: A notification cannot be delivered\nTelegram messages to 66"
    )
    assert len(mailbox.to("owner@example.com")) == 1
    assert mailbox.to("owner@example.com")[0]["Subject"] == "[Veilstop] A notification cannot be delivered"


def test_the_owners_own_chat_failing_alerts_by_email_and_does_not_loop(
    telegram, mailbox, redis_client, settings
):
    settings.OWNER_TELEGRAM_CHAT_ID = "999"
    settings.OWNER_ALERT_EMAILS = ["owner@example.com"]
    telegram.script("999", *[(403, {})] * 5)

    alert_raise(kind=AlertKind.SPIKE, dedupe_key="spike:XAUUSD", message="XAUUSD: a quote jumped")
    deliver_all()

    assert OutboxMessage.objects.filter(recipient="999").count() == 2  # the spike, then its own failure
    assert set(OutboxMessage.objects.filter(recipient="999").values_list("status", flat=True)) == {"failed"}
    assert [m["Subject"] for m in mailbox.to("owner@example.com")] == [
        "[Veilstop] Price spike held back a close",
        "[Veilstop] A notification cannot be delivered",
    ]


def test_a_refused_mailbox_fails_and_a_down_smtp_server_is_retried(mailbox, settings, redis_client):
    mailbox.refused.add("gone@example.com")
    refused = _queue("gone@example.com", channel=OutboxChannel.EMAIL)
    outbox_deliver()
    assert OutboxMessage.objects.get(pk=refused).status == OutboxStatus.FAILED
    assert "550" in OutboxMessage.objects.get(pk=refused).last_error

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        settings.EMAIL_PORT = probe.getsockname()[1]  # nothing listens there
    later = _queue("later@example.com", channel=OutboxChannel.EMAIL)
    outbox_deliver()
    message = OutboxMessage.objects.get(pk=later)
    assert (message.status, message.attempts) == (OutboxStatus.QUEUED, 1)
    assert "ConnectionRefused" in message.last_error


def test_one_message_a_second_per_chat_and_thirty_a_second_in_all(telegram, redis_client):
    for index in range(3):
        _queue("70", f"chat message {index}")
    for chat in range(45):
        _queue(str(1000 + chat), "broadcast")

    deliver_all(timeout=15)

    per_chat = [call.at for call in telegram.attempts("70")]
    assert len(per_chat) == 3
    assert all(later - earlier >= 0.9 for earlier, later in itertools.pairwise(per_chat))
    times = sorted(call.at for call in telegram.calls)
    assert len(times) == 48
    # no window of one second holds more than 30 sends (+1 for a window straddling Redis' second)
    assert max(sum(1 for t in times if start <= t < start + 1) for start in times) <= 31


def test_fifty_alerts_of_one_kind_reach_the_owner_as_two_messages(telegram, redis_client, settings):
    settings.OWNER_TELEGRAM_CHAT_ID = "999"
    settings.OWNER_ALERT_GROUP_SECONDS = 2
    time.sleep(2 - time.time() % 2 + 0.05)  # at the start of a window

    for device in range(50):
        alert_raise(
            kind=AlertKind.DEVICE_OFFLINE, dedupe_key=f"offline:{device}", message=f"Device {device} off"
        )
    outbox_deliver()
    assert telegram.sent("999") == ["Veilstop alert: Device offline with pending closes\nDevice 0 off"]
    digest = OutboxMessage.objects.get(template=OutboxTemplate.OWNER_ALERT_DIGEST)
    assert digest.occurrences == 49
    deliver_all()

    texts = telegram.sent("999")
    assert len(texts) == 2
    assert texts[1].startswith('Veilstop alerts: 49 more "Device offline with pending closes"')
    assert "Device 49 off" in texts[1]


@pytest.mark.django_db(transaction=True)
def test_two_workers_never_send_one_message_twice(telegram, redis_client, settings):
    for chat in range(40):
        _queue(str(2000 + chat), "once")
    start = threading.Barrier(3)
    errors = []

    def worker() -> None:
        try:
            start.wait()
            outbox_deliver(budget_seconds=10)
        except Exception as error:
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    deliver_all()

    assert errors == []
    chats = [call.params["chat_id"] for call in telegram.calls]
    assert sorted(chats) == sorted(str(2000 + chat) for chat in range(40))  # each once
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 40


def test_a_lease_left_by_a_dead_worker_ends(telegram, redis_client):
    pk = _queue("80")
    # a worker claimed it and died before sending
    OutboxMessage.objects.filter(pk=pk).update(next_attempt_at=timezone.now() + timedelta(seconds=90))
    outbox_deliver()
    assert telegram.calls == []

    OutboxMessage.objects.filter(pk=pk).update(next_attempt_at=timezone.now() - timedelta(seconds=1))
    outbox_deliver()
    assert telegram.sent("80") == ["hello"]
