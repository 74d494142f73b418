"""What a client does from Telegram: link its chat with a one-time code, and approve or
skip a signal with the buttons of its "awaiting approval" message.

1. The owner creates a code for a client (``telegram_link_code_create``, shown once;
   only its hash is kept) and gives it to the client, who sends ``/start CODE`` to the
   bot (a ``t.me/<bot>?start=CODE`` link does that). The code works once, before it
   expires, and links the chat it came from: a chat id is never taken on trust.
2. A button press arrives as a callback ``approve:<approval id>`` or ``skip:<approval
   id>``; it decides that approval only if it belongs to the client linked to the chat
   that pressed it, and only while it is pending and unexpired (``approval_decide``,
   idempotent: the same press twice is one decision).

``telegram_update_handle`` reads one update the webhook received and returns what to
answer (a Bot API method call, sent back as the webhook's response: no request of ours).
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from core.errors import DomainError
from signals_app.choices import ActorKind, ApprovalStatus, AuditAction, DecidedBy
from signals_app.events import Actor, audit
from signals_app.models import Approval, Client, TelegramLinkCode
from signals_app.services import approval_decide

LINK_CODE_TTL = timedelta(days=7)
_ACTIONS = {"approve": True, "skip": False}


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


@transaction.atomic
def telegram_link_code_create(*, client: Client, by: Actor) -> str:
    """A new one-time code for ``client`` (Telegram's /start takes [A-Za-z0-9_-], ≤ 64)."""
    code = secrets.token_urlsafe(24)
    TelegramLinkCode.objects.create(
        client=client, code_hash=_hash(code), expires_at=timezone.now() + LINK_CODE_TTL
    )
    audit(by=by, action=AuditAction.CLIENT_TELEGRAM_CODE_CREATED, subject=client, data={})
    return code


@transaction.atomic
def telegram_chat_link(*, code: str, chat_id: str) -> Client | None:
    """Link ``chat_id`` to the client of ``code`` if the code is unused and unexpired
    (guarded: of two uses at once, one links); None otherwise."""
    now = timezone.now()
    link = TelegramLinkCode.objects.filter(code_hash=_hash(code)).first()
    if link is None or not TelegramLinkCode.objects.filter(
        pk=link.pk, used_at__isnull=True, expires_at__gt=now
    ).update(used_at=now, used_by_chat_id=chat_id):
        return None
    Client.objects.filter(pk=link.client_id).update(telegram_chat_id=chat_id)
    client = Client.objects.get(pk=link.client_id)
    audit(
        by=Actor(kind=ActorKind.CLIENT, name=f"telegram:{chat_id}"),
        action=AuditAction.CLIENT_TELEGRAM_LINKED,
        subject=client,
        data={"chat_id": chat_id},
    )
    return client


def telegram_approval_decide(*, approval_id: int, approve: bool, chat_id: str) -> str:
    """Decide the approval for the client linked to ``chat_id``; the answer for the client."""
    approval = (
        Approval.objects.select_related("signal__instrument")
        .filter(pk=approval_id, client__telegram_chat_id=chat_id)
        .first()
    )
    if approval is None:
        return "This signal is not one of yours."
    try:
        approval_decide(
            approval=approval,
            approve=approve,
            decided_by=DecidedBy.CLIENT,
            by=Actor(kind=ActorKind.CLIENT, name=f"telegram:{chat_id}"),
        )
    except DomainError:
        approval.refresh_from_db()
        if approval.status in (ApprovalStatus.PENDING, ApprovalStatus.EXPIRED):
            return "Too late: this signal has expired and can no longer be decided."
        return f"This signal was already decided ({approval.get_status_display().lower()})."
    signal = approval.signal
    what = f"{signal.get_side_display()} {signal.instrument.symbol}"
    return f"Approved: {what}." if approve else f"Skipped: {what}."


def _chat_id(chat: Any) -> str | None:
    """A Telegram chat id is an integer (negative for groups), well inside 64 bits."""
    if isinstance(chat, dict):
        chat = chat.get("id")
    if isinstance(chat, int) and not isinstance(chat, bool) and abs(chat) < 10**15:
        return str(chat)
    return None


def _reply(method: str, **fields: Any) -> dict[str, Any]:
    return {"method": method, **fields}


def telegram_update_handle(update: Any) -> dict[str, Any] | None:
    """One update from the webhook: a button press or a /start message; anything else is
    ignored (None: answered with an empty 200, so Telegram does not send it again)."""
    if not isinstance(update, dict):
        return None
    callback = update.get("callback_query")
    if isinstance(callback, dict):
        return _callback(callback)
    message = update.get("message")
    if isinstance(message, dict):
        return _message(message)
    return None


def _callback(callback: dict) -> dict[str, Any] | None:
    callback_id = callback.get("id")
    message = callback.get("message")
    chat = _chat_id(message.get("chat")) if isinstance(message, dict) else None
    data = callback.get("data")
    action, _, approval_id = (data if isinstance(data, str) else "").partition(":")
    if not isinstance(callback_id, str) or len(callback_id) > 200 or chat is None:
        return None
    if action not in _ACTIONS or not re.fullmatch(r"[0-9]{1,18}", approval_id):
        return _reply("answerCallbackQuery", callback_query_id=callback_id, text="Unknown button.")
    text = telegram_approval_decide(approval_id=int(approval_id), approve=_ACTIONS[action], chat_id=chat)
    return _reply("answerCallbackQuery", callback_query_id=callback_id, text=text, show_alert=True)


def _message(message: dict) -> dict[str, Any] | None:
    chat = _chat_id(message.get("chat"))
    text = message.get("text")
    if chat is None or not isinstance(text, str) or not text.startswith("/start"):
        return None
    code = text.removeprefix("/start").strip()
    if not code or len(code) > 64:
        answer = "Send the code your provider gave you: /start CODE."
    elif telegram_chat_link(code=code, chat_id=chat) is None:
        answer = "This code is not valid (unknown, already used or expired). Ask your provider for a new one."
    else:
        answer = "This chat is now linked: your trade notifications and approvals come here."
    return _reply("sendMessage", chat_id=int(chat), text=answer)
