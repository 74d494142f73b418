"""The outbox: render a message from its template file and write one row per recipient
and channel, in the caller's transaction; after the commit, ask a worker to deliver.

1. ``client_recipients`` / ``owner_recipients``: who hears of an event on which channel
   (a client's chat id and address, each with its opt-in flag; the owner's settings);
2. ``outbox_write``: the rows, in one INSERT; a dedupe key already written is skipped
   (``ON CONFLICT DO NOTHING``: the same event told twice is one message). A channel with
   nothing configured to send through (no bot token, no e-mail URL) gets its row as
   ``not_sent``: the console shows what the recipient would have received;
3. after the commit, ``monitoring.outbox_deliver`` is queued (best effort: a lost
   enqueue costs the periodic delivery's interval, never the message).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.template.loader import render_to_string
from django.utils import timezone
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from signals_app.choices import OutboxChannel, OutboxStatus, OutboxTemplate
from signals_app.models import Client, OutboxMessage

logger = logging.getLogger(__name__)

DELIVER_TASK = "monitoring.outbox_deliver"  # by name: signals_app may not import monitoring
SUBJECT_MAX_LENGTH = 200
TELEGRAM_TEXT_MAX_LENGTH = 4096  # the Bot API's limit for sendMessage


@dataclass(frozen=True)
class Recipient:
    channel: OutboxChannel
    address: str  # a Telegram chat id or an e-mail address
    client_id: int | None = None  # None: the owner


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


def render(template: OutboxTemplate, context: Mapping[str, Any]) -> Rendered:
    """``templates/notifications/<template>.txt`` is the body, ``<template>.subject.txt``
    the e-mail subject (one line)."""
    name = OutboxTemplate(template).value
    subject = " ".join(render_to_string(f"notifications/{name}.subject.txt", context).split())
    body = render_to_string(f"notifications/{name}.txt", context).strip()
    return Rendered(subject=subject[:SUBJECT_MAX_LENGTH], body=body)


def client_recipients(client: Client, *, close: bool = False) -> list[Recipient]:
    """The client's opted-in channels; for a close (full or partial), only those that
    CLOSE_NOTIFICATION_TELEGRAM / CLOSE_NOTIFICATION_EMAIL leave on."""
    recipients = []
    if (
        client.telegram_chat_id
        and client.notify_by_telegram
        and (settings.CLOSE_NOTIFICATION_TELEGRAM or not close)
    ):
        recipients.append(Recipient(OutboxChannel.TELEGRAM, client.telegram_chat_id, client.pk))
    if client.contact_email and client.notify_by_email and (settings.CLOSE_NOTIFICATION_EMAIL or not close):
        recipients.append(Recipient(OutboxChannel.EMAIL, client.contact_email, client.pk))
    return recipients


def owner_recipients() -> list[Recipient]:
    recipients = []
    if settings.OWNER_TELEGRAM_CHAT_ID:
        recipients.append(Recipient(OutboxChannel.TELEGRAM, settings.OWNER_TELEGRAM_CHAT_ID))
    recipients.extend(Recipient(OutboxChannel.EMAIL, address) for address in settings.OWNER_ALERT_EMAILS)
    return recipients


def channel_problem(channel: str) -> str:
    """Why nothing can be sent on ``channel`` now, or "" if it can."""
    if channel == OutboxChannel.TELEGRAM and not settings.TELEGRAM_BOT_TOKEN:
        return "not sent: TELEGRAM_BOT_TOKEN is not set"
    if channel == OutboxChannel.EMAIL and not settings.EMAIL_CONFIGURED:
        return "not sent: EMAIL_URL is not set"
    return ""


def outbox_message(
    *,
    recipient: Recipient,
    template: OutboxTemplate,
    rendered: Rendered,
    dedupe_key: str,
    now=None,
    buttons: dict | None = None,
) -> OutboxMessage:
    """An unsaved row for ``outbox_write``; ``buttons`` (a Telegram ``reply_markup``) go
    with a Telegram message only."""
    problem = channel_problem(recipient.channel)
    body = rendered.body
    if recipient.channel == OutboxChannel.TELEGRAM:
        body = body[:TELEGRAM_TEXT_MAX_LENGTH]
    return OutboxMessage(
        channel=recipient.channel,
        recipient=recipient.address,
        client_id=recipient.client_id,
        template=template,
        subject=rendered.subject if recipient.channel == OutboxChannel.EMAIL else "",
        body=body,
        reply_markup=buttons if recipient.channel == OutboxChannel.TELEGRAM else None,
        dedupe_key=dedupe_key,
        status=OutboxStatus.NOT_SENT if problem else OutboxStatus.QUEUED,
        last_error=problem,
        next_attempt_at=now or timezone.now(),
    )


def outbox_write(messages: Iterable[OutboxMessage]) -> int:
    """Write the rows in the caller's transaction (a dedupe key already written is
    skipped); after the commit, queue a delivery if any is to be sent. Returns how many
    rows were offered."""
    messages = list(messages)
    if not messages:
        return 0
    OutboxMessage.objects.bulk_create(messages, ignore_conflicts=True)
    if any(message.status == OutboxStatus.QUEUED for message in messages):
        deliver_soon()
    return len(messages)


def deliver_soon(countdown: float = 0) -> None:
    """After the commit (at once outside a transaction), queue a delivery run."""

    def queue() -> None:
        try:
            current_app.send_task(DELIVER_TASK, countdown=countdown or None)
        except (BrokerError, RedisError) as error:
            logger.warning("outbox delivery not queued (the periodic delivery will send): %s", error)

    transaction.on_commit(queue)
