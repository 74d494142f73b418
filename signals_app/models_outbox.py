"""The notifications' tables (``signals_app.notify`` writes them, ``monitoring.notifications``
sends): re-exported by ``signals_app.models``."""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from signals_app.choices import OutboxChannel, OutboxStatus, OutboxTemplate


class OutboxMessage(models.Model):
    """One message to one recipient, written in the transaction of the event that causes it
    (``signals_app.notify``) and sent after the commit by ``monitoring.notifications``."""

    channel = models.CharField(max_length=10, choices=OutboxChannel.choices)
    recipient = models.CharField(max_length=254, help_text="Telegram chat id or e-mail address")
    client = models.ForeignKey(
        "signals_app.Client",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="empty: the owner",
    )
    template = models.CharField(max_length=40, choices=OutboxTemplate.choices)
    subject = models.CharField(max_length=200, blank=True, help_text="e-mail only")
    body = models.TextField()
    reply_markup = models.JSONField(null=True, blank=True, help_text="Telegram only: the message's buttons")
    dedupe_key = models.CharField(max_length=400, unique=True)
    occurrences = models.PositiveIntegerField(default=1, help_text="events a grouped message stands for")
    status = models.CharField(max_length=10, choices=OutboxStatus.choices, default=OutboxStatus.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    last_error = models.CharField(max_length=500, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The delivery's claim: due queued rows, oldest first.
            models.Index(fields=["next_attempt_at"], name="outbox_due", condition=Q(status="queued")),
            models.Index(fields=["client", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.template} to {self.channel}:{self.recipient} ({self.status})"


class TelegramLinkCode(models.Model):
    """A one-time code the owner gives a client: ``/start CODE`` to the bot links the chat
    it comes from to the client (``signals_app.telegram``). Only its hash is stored."""

    client = models.ForeignKey("signals_app.Client", on_delete=models.CASCADE, related_name="+")
    code_hash = models.CharField(max_length=64, unique=True)
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    used_by_chat_id = models.CharField(max_length=32, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Telegram link code for client #{self.client_id}"
