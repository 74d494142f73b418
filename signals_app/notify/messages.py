"""The messages ``signals_app`` and the owner's alerts cause: a signal awaiting a
client's approval, and an owner alert (grouped: the first of a kind in a window goes
out at once, the rest of the window as one message with their count)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from core import formatting
from signals_app.choices import ApprovalStatus, OutboxTemplate
from signals_app.models import Approval, OutboxMessage, Signal
from signals_app.notify.outbox import (
    Recipient,
    client_recipients,
    deliver_soon,
    outbox_message,
    outbox_write,
    owner_recipients,
    render,
)


def approvals_pending_notice(*, signal: Signal, approvals: Iterable[Approval]) -> int:
    """Tell each client with a pending approval of ``signal`` that it awaits its decision.
    In the publication's transaction; the approvals carry their clients."""
    messages = []
    for approval in approvals:
        if approval.status != ApprovalStatus.PENDING:
            continue  # auto-approved: the EA takes it, the fill is told
        recipients = client_recipients(approval.client)
        if not recipients:
            continue
        rendered = render(
            OutboxTemplate.APPROVAL_PENDING,
            {
                "client": approval.client.name,
                "approval_id": approval.pk,
                "symbol": signal.instrument.symbol,
                "direction": signal.get_side_display(),
                "entry_price": formatting.price(signal.entry_price, signal.instrument.digits),
                "volume": formatting.volume(approval.volume),
                "expires_at": formatting.timestamp(approval.expires_at),
            },
        )
        messages.extend(
            outbox_message(
                recipient=recipient,
                template=OutboxTemplate.APPROVAL_PENDING,
                rendered=rendered,
                dedupe_key=f"approval:{approval.pk}:pending:{recipient.channel}",
                buttons=_decision_buttons(approval.pk),
            )
            for recipient in recipients
        )
    return outbox_write(messages)


def _decision_buttons(approval_id: int) -> dict | None:
    """Approve / Skip under the message, when the webhook that answers them is set up
    (``signals_app.telegram``)."""
    if not settings.TELEGRAM_WEBHOOK_SECRET:
        return None
    return {
        "inline_keyboard": [
            [
                {"text": "Approve", "callback_data": f"approve:{approval_id}"},
                {"text": "Skip", "callback_data": f"skip:{approval_id}"},
            ]
        ]
    }


_INSERT = """
INSERT INTO signals_app_outboxmessage
    (channel, recipient, client_id, template, subject, body, dedupe_key, occurrences, status, attempts,
     next_attempt_at, last_error, created_at)
VALUES (%(channel)s, %(recipient)s, NULL, %(template)s, %(subject)s, %(body)s, %(dedupe_key)s, 1,
        %(status)s, 0, %(next_attempt_at)s, %(last_error)s, now())
ON CONFLICT (dedupe_key) DO {on_conflict}
RETURNING id, occurrences
"""
_FIRST = _INSERT.format(on_conflict="NOTHING")
# One more alert for a digest still waiting for its window to end (an unclaimed queued
# row keeps the window's end as its due time; a claimed one has a lease instead).
_GROUP = _INSERT.format(
    on_conflict="""UPDATE SET occurrences = signals_app_outboxmessage.occurrences + 1
     WHERE signals_app_outboxmessage.status = 'not_sent'
        OR (signals_app_outboxmessage.status = 'queued'
            AND signals_app_outboxmessage.next_attempt_at = EXCLUDED.next_attempt_at)"""
)


def owner_alert_notice(*, kind: str, kind_label: str, message: str, now: datetime | None = None) -> None:
    """In the alert's transaction: the owner hears of a new alert on every channel set
    (OWNER_TELEGRAM_CHAT_ID, OWNER_ALERT_EMAILS). Per kind and OWNER_ALERT_GROUP_SECONDS
    window, the first goes out at once and the others in one digest at the window's end."""
    recipients = owner_recipients()
    if not recipients:
        return
    now = now or timezone.now()
    window = settings.OWNER_ALERT_GROUP_SECONDS
    bucket = int(now.timestamp()) // window
    window_start = datetime.fromtimestamp(bucket * window, tz=UTC)
    window_end = datetime.fromtimestamp((bucket + 1) * window, tz=UTC)
    first = render(OutboxTemplate.OWNER_ALERT, {"kind": kind_label, "message": message})
    queued = False
    with connection.cursor() as cursor:
        for recipient in recipients:
            key = f"owner:alert:{kind}:{bucket}:{recipient.channel}:{recipient.address}"
            cursor.execute(_FIRST, _params(recipient, OutboxTemplate.OWNER_ALERT, first, f"{key}:first", now))
            if cursor.fetchone() is not None:
                queued = True
                continue
            cursor.execute(
                _GROUP,
                _params(recipient, OutboxTemplate.OWNER_ALERT_DIGEST, first, f"{key}:more", window_end),
            )
            grouped = cursor.fetchone()
            if grouped is None:
                continue  # the digest already went (a clock at the window's edge): the alert row stays
            digest_id, count = grouped
            digest = render(
                OutboxTemplate.OWNER_ALERT_DIGEST,
                {
                    "kind": kind_label,
                    "count": count,
                    "since": formatting.timestamp(window_start),
                    "latest": message,
                },
            )
            OutboxMessage.objects.filter(pk=digest_id).update(
                subject=_subject(recipient, digest), body=digest.body
            )
            queued = True
    if queued:
        deliver_soon()


def _subject(recipient: Recipient, rendered) -> str:
    return rendered.subject if recipient.channel == "email" else ""


def _params(recipient: Recipient, template: OutboxTemplate, rendered, dedupe_key: str, due: datetime) -> dict:
    row = outbox_message(
        recipient=recipient, template=template, rendered=rendered, dedupe_key=dedupe_key, now=due
    )
    return {
        "channel": row.channel,
        "recipient": row.recipient,
        "template": row.template,
        "subject": row.subject,
        "body": row.body,
        "dedupe_key": row.dedupe_key,
        "status": row.status,
        "next_attempt_at": row.next_attempt_at,
        "last_error": row.last_error,
    }
