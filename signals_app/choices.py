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
    WITHDRAWN = "withdrawn", "Withdrawn (the strategy exited)"
    UNMONITORED = "refused", "Placed, fill refused: not monitored"


class DecidedBy(models.TextChoices):
    AUTO = "auto", "Automatically (client auto-approves)"
    CLIENT = "client", "Client"
    OWNER = "owner", "Owner on behalf of the client"


class MarketGuardMode(models.TextChoices):
    """What an abnormal market on an instrument does (``positions.market_guard``)."""

    HOLD = "hold", "Hold: judge no breach there while it lasts, alert"
    CLOSE = "close", "Close every open position there"


class ActorKind(models.TextChoices):
    OWNER = "owner", "Owner"
    BOT = "bot", "Strategy bot"
    CLIENT = "client", "Client"
    DEVICE = "device", "Device"
    SYSTEM = "system", "System"
    VISITOR = "visitor", "Visitor (not logged in)"


class AuditAction(models.TextChoices):
    SIGNAL_CREATED = "signal.created"
    SIGNAL_PUBLISHED = "signal.published"
    SIGNAL_LEVELS_CHANGED = "signal.levels_changed"
    SIGNAL_LEVELS_BACKFILLED = "signal.levels_backfilled"
    SIGNAL_BREACH_DRY_RUN = "signal.breach_dry_run"
    SIGNAL_PLAN_EXITED = "signal.plan_exited"
    SIGNAL_PARTIAL_TP_HIT = "signal.partial_tp_hit"
    SIGNAL_STOP_MOVED = "signal.stop_moved"
    SIGNAL_EXIT_REQUESTED = "signal.exit_requested"
    APPROVAL_WITHDRAWN = "approval.withdrawn"
    APPROVAL_CREATED = "approval.created"
    APPROVAL_APPROVED = "approval.approved"
    APPROVAL_DECLINED = "approval.declined"
    APPROVAL_EXPIRED = "approval.expired"
    APPROVAL_HELD_BACK = "approval.held_back"
    CLIENT_CREATED = "client.created"
    GUARD_SETTINGS_CHANGED = "guards.settings_changed"
    CLIENT_TELEGRAM_CODE_CREATED = "client.telegram_code_created"
    CLIENT_TELEGRAM_LINKED = "client.telegram_linked"
    POSITION_OPENED = "position.opened"
    POSITION_CLOSE_REQUESTED = "position.close_requested"
    POSITION_CLOSED = "position.closed"
    POSITION_PARTIALLY_CLOSED = "position.partially_closed"
    POSITION_REOPENED = "position.reopened"
    POSITION_CLOSED_EXTERNALLY = "position.closed_externally"
    POSITION_OVER_EXPOSURE = "position.over_exposure"
    POSITION_DEVICE_CHANGED = "position.device_changed"
    CLOSE_COMMAND_DELIVERED = "close_command.delivered"
    CLOSE_COMMAND_EXECUTED = "close_command.executed"
    CLOSE_COMMAND_FAILED = "close_command.failed"
    CLOSE_COMMAND_EXPIRED = "close_command.expired"
    CLOSE_COMMAND_REQUEUED = "close_command.requeued"
    CLOSE_COMMAND_READDRESSED = "close_command.readdressed"
    POSITION_CLOSE_FAILED = "position.close_failed"
    APPROVAL_FILLED = "approval.executed"
    APPROVAL_FILL_FAILED = "approval.failed"
    APPROVAL_UNMONITORED = "approval.unmonitored"
    DEVICE_CREATED = "device.created"
    DEVICE_SECRET_ROTATED = "device.secret_rotated"  # noqa: S105 - an event name
    DEVICE_REVOKED = "device.revoked"
    CLIENT_GUARD_TRIPPED = "client_guard.tripped"
    CLIENT_GUARD_REARMED = "client_guard.rearmed"
    ALERT_ACKNOWLEDGED = "alert.acknowledged"
    # The staff's logins (staff_auth): never a password, a code or a TOTP secret in them.
    AUTH_LOGIN = "auth.login"
    AUTH_LOGIN_FAILED = "auth.login_failed"
    AUTH_LOCKED_OUT = "auth.locked_out"
    AUTH_LOGOUT = "auth.logout"
    AUTH_SESSION_EXPIRED = "auth.session_expired"
    AUTH_TWO_FACTOR_ENROLLED = "auth.two_factor_enrolled"
    AUTH_TWO_FACTOR_PASSED = "auth.two_factor_passed"
    AUTH_TWO_FACTOR_FAILED = "auth.two_factor_failed"
    AUTH_TWO_FACTOR_RESET = "auth.two_factor_reset"


class OutboxChannel(models.TextChoices):
    TELEGRAM = "telegram", "Telegram"
    EMAIL = "email", "E-mail"


class OutboxStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    SENT = "sent", "Sent"
    FAILED = "failed", "Failed"
    NOT_SENT = "not_sent", "Not sent (channel not configured)"


class OutboxTemplate(models.TextChoices):
    """A message kind: its text is the template ``templates/notifications/<value>.txt``."""

    APPROVAL_PENDING = "approval_pending", "New signal awaiting approval"
    POSITION_OPENED = "position_opened", "Position opened"
    POSITION_PARTIALLY_CLOSED = "position_partially_closed", "Position partially closed"
    POSITION_CLOSED = "position_closed", "Position closed"
    OWNER_ALERT = "owner_alert", "Owner alert"
    OWNER_ALERT_DIGEST = "owner_alert_digest", "Owner alerts, grouped"
