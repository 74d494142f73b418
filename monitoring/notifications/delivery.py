"""Delivering the outbox, one run of ``monitoring.outbox_deliver``:

1. claim: due ``queued`` rows, oldest first, ``FOR UPDATE SKIP LOCKED``, and in the
   same transaction a lease (``next_attempt_at`` moved past the longest a run may last):
   a second worker skips the locked rows, and after the commit they are not due. The
   sends happen after that commit (no network I/O inside a transaction);
2. per row: a channel with nothing to send through is ``not_sent``; a Telegram row takes
   a rate slot (its chat, and all chats; ``rate_limits``) or is put back to that slot's
   time, which is no attempt;
3. the send (``transports``);
4. the outcome, by a guarded update (the row still holds this run's lease): ``sent``; a
   retry after Telegram's ``retry_after`` (a 429 never fails a message) or an exponential
   backoff, up to NOTIFICATION_MAX_ATTEMPTS; else ``failed``, and the owner alerted once
   per recipient (``alert_raise`` with the recipient in its dedupe key);
5. rows claimed but not reached within the run's budget are released; a row due before
   the next periodic run gets a run queued for its time.

A worker killed between a send and step 4 leaves its row to be sent again when the lease
ends: at least once (Telegram's API has no idempotency key), never twice at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from prometheus_client import Counter
from redis.exceptions import RedisError

from config.schedule import OUTBOX_DELIVERY_EVERY_SECONDS
from core.redis import get_redis
from monitoring.notifications.rate_limits import telegram_chat_hold, telegram_slot_wait
from monitoring.notifications.transports import Outcome, Result, email_send, telegram_send
from positions.alerts import alert_raise
from positions.choices import AlertKind
from signals_app.choices import OutboxChannel, OutboxStatus
from signals_app.models import OutboxMessage
from signals_app.notify.outbox import channel_problem, deliver_soon

logger = logging.getLogger(__name__)

# Recorded in the worker; /metrics reads it through PROMETHEUS_MULTIPROC_DIR (positions.metrics).
NOTIFICATIONS = Counter(
    "notifications_total", "Outbox messages handled, by channel and outcome", ["channel", "result"]
)

BATCH_SIZE = 10
RUN_BUDGET_SECONDS = 25  # then the run ends: a send's timeout later it is still inside the soft limit
BACKOFF_BASE_SECONDS = 5
BACKOFF_MAX_SECONDS = 900
SLOT_SLEEP_MAX_SECONDS = 0.2  # a slot this close is waited for in place, not put back in the table
SLOT_TRIES = 10
REDIS_DOWN_RETRY_SECONDS = 5  # no rate slot can be taken: the row waits, nothing is sent unmetered
_SCHEDULED_KEY = "veilstop:notify:run-queued:{second}"


@dataclass
class DeliveryReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    deferred: int = 0
    not_sent: int = 0


def backoff_seconds(attempts: int) -> float:
    return float(min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** max(0, attempts - 1)))


TASK_TIME_LIMIT_SECONDS = 60  # the task's hard limit (monitoring.tasks)
LEASE_SECONDS = TASK_TIME_LIMIT_SECONDS + 30  # longer than any run may hold a row


def _claim(limit: int) -> list[tuple[OutboxMessage, datetime]]:
    now = timezone.now()
    lease = now + timedelta(seconds=LEASE_SECONDS)
    with transaction.atomic():
        messages = list(
            OutboxMessage.objects.select_for_update(skip_locked=True)
            .filter(status=OutboxStatus.QUEUED, next_attempt_at__lte=now)
            .order_by("next_attempt_at", "pk")[:limit]
        )
        if messages:
            OutboxMessage.objects.filter(pk__in=[message.pk for message in messages]).update(
                next_attempt_at=lease
            )
    return [(message, lease) for message in messages]


def _leased(message: OutboxMessage, lease: datetime):
    return OutboxMessage.objects.filter(pk=message.pk, status=OutboxStatus.QUEUED, next_attempt_at=lease)


def _put_back(message: OutboxMessage, lease: datetime, seconds: float) -> None:
    _leased(message, lease).update(next_attempt_at=timezone.now() + timedelta(seconds=seconds))


def outbox_deliver(*, budget_seconds: float = RUN_BUDGET_SECONDS) -> DeliveryReport:
    """Send what is due, for at most ``budget_seconds``; safe to run on any number of workers."""
    report = DeliveryReport()
    started = time.monotonic()
    while time.monotonic() - started < budget_seconds:
        claimed = _claim(BATCH_SIZE)
        if not claimed:
            break
        for index, (message, lease) in enumerate(claimed):
            if time.monotonic() - started >= budget_seconds:
                for late, late_lease in claimed[index:]:
                    _put_back(late, late_lease, 0)
                break
            _deliver_one(message, lease, report)
    _queue_next_run()
    return report


def _deliver_one(message: OutboxMessage, lease: datetime, report: DeliveryReport) -> None:
    problem = channel_problem(message.channel)
    if problem:
        _leased(message, lease).update(status=OutboxStatus.NOT_SENT, last_error=problem)
        NOTIFICATIONS.labels(channel=message.channel, result="not_sent").inc()
        report.not_sent += 1
        return
    if message.channel == OutboxChannel.TELEGRAM:
        wait = _telegram_slot(message)
        if wait > 0:
            _put_back(message, lease, wait)
            report.deferred += 1
            return
        outcome = telegram_send(
            chat_id=message.recipient, text=message.body, reply_markup=message.reply_markup
        )
        if outcome.retry_after:
            with contextlib.suppress(RedisError):  # the row's own due time holds it anyway
                telegram_chat_hold(message.recipient, outcome.retry_after)
    else:
        outcome = email_send(address=message.recipient, subject=message.subject, body=message.body)
    _record(message, lease, outcome, report)


def _telegram_slot(message: OutboxMessage) -> float:
    """Take a rate slot for the message's chat, waiting here for one a moment away (the
    global spacing); 0.0 once taken, else the seconds until the chat's slot."""
    for _ in range(SLOT_TRIES):
        try:
            wait = telegram_slot_wait(message.recipient)
        except RedisError as error:
            logger.warning("outbox: no Telegram rate slot (Redis: %s); message %s waits", error, message.pk)
            return REDIS_DOWN_RETRY_SECONDS
        if wait == 0 or wait > SLOT_SLEEP_MAX_SECONDS:
            return wait
        time.sleep(wait)
    return SLOT_SLEEP_MAX_SECONDS


def _record(message: OutboxMessage, lease: datetime, outcome: Outcome, report: DeliveryReport) -> None:
    now = timezone.now()
    attempts = message.attempts + 1
    leased = _leased(message, lease)
    if outcome.result == Result.SENT:
        changed = leased.update(status=OutboxStatus.SENT, attempts=attempts, sent_at=now, last_error="")
        report.sent += 1
    elif outcome.result == Result.RETRY and (
        outcome.retry_after is not None or attempts < settings.NOTIFICATION_MAX_ATTEMPTS
    ):
        delay = outcome.retry_after if outcome.retry_after is not None else backoff_seconds(attempts)
        changed = leased.update(
            attempts=attempts, next_attempt_at=now + timedelta(seconds=delay), last_error=outcome.error
        )
        report.retried += 1
    else:
        with transaction.atomic():
            changed = leased.update(status=OutboxStatus.FAILED, attempts=attempts, last_error=outcome.error)
            if changed:
                _alert_failed(message, outcome, attempts)
        report.failed += 1
    NOTIFICATIONS.labels(channel=message.channel, result=outcome.result.value).inc()
    if not changed:
        logger.warning("outbox: message %s lost its lease while being sent (it may go out twice)", message.pk)


def _alert_failed(message: OutboxMessage, outcome: Outcome, attempts: int) -> None:
    who = f"client #{message.client_id}" if message.client_id else "the owner"
    why = (
        outcome.error
        if outcome.result == Result.FAILED
        else f"{attempts} attempts, the last: {outcome.error}"
    )
    alert_raise(
        kind=AlertKind.NOTIFICATION_FAILED,
        dedupe_key=f"notification_failed:{message.channel}:{message.recipient}",
        message=(
            f"{OutboxChannel(message.channel).label} messages to {message.recipient} ({who}) cannot be "
            f"delivered ({why}). The outbox in the console lists them."
        ),
    )


def _queue_next_run() -> None:
    """A row due before the next periodic run (a backoff, a 429's wait, a rate slot, a
    digest's window) gets a run queued for its time, once per second of due times."""
    next_due = (
        OutboxMessage.objects.filter(status=OutboxStatus.QUEUED)
        .order_by("next_attempt_at")
        .values_list("next_attempt_at", flat=True)
        .first()
    )
    if next_due is None:
        return
    wait = max(0.0, (next_due - timezone.now()).total_seconds())
    if wait >= OUTBOX_DELIVERY_EVERY_SECONDS:
        return
    try:
        if not get_redis().set(_SCHEDULED_KEY.format(second=int(next_due.timestamp())), 1, nx=True, ex=60):
            return
    except RedisError:
        return  # the periodic run sends it
    deliver_soon(countdown=wait)
