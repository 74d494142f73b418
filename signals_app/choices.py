from __future__ import annotations

from django.db import models


class Side(models.TextChoices):
    BUY = "buy", "Buy"
    SELL = "sell", "Sell"


class SignalStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    PUBLISHED = "published", "Published"
    CANCELLED = "cancelled", "Cancelled"


class ApprovalStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    APPROVED = "approved", "Approved"
    DECLINED = "declined", "Declined"
    EXPIRED = "expired", "Expired"
    EXECUTED = "executed", "Executed"
    FAILED = "failed", "Failed"


class DecidedBy(models.TextChoices):
    AUTO = "auto", "Automatically (client auto-approves)"
    CLIENT = "client", "Client"
    OWNER = "owner", "Owner on behalf of the client"


class ActorKind(models.TextChoices):
    OWNER = "owner", "Owner"
    BOT = "bot", "Strategy bot"
    CLIENT = "client", "Client"
    DEVICE = "device", "Device"
    SYSTEM = "system", "System"


class AuditAction(models.TextChoices):
    SIGNAL_CREATED = "signal.created"
    SIGNAL_PUBLISHED = "signal.published"
    SIGNAL_LEVELS_CHANGED = "signal.levels_changed"
    SIGNAL_LEVELS_BACKFILLED = "signal.levels_backfilled"
    APPROVAL_CREATED = "approval.created"
    APPROVAL_APPROVED = "approval.approved"
    APPROVAL_DECLINED = "approval.declined"
    APPROVAL_EXPIRED = "approval.expired"
    CLIENT_CREATED = "client.created"
