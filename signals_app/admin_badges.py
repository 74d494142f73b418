"""The signals console's status badges (``core.badges``): colours and short words, for
signals, approvals and the notifications outbox."""

from __future__ import annotations

from core.badges import DANGER, INFO, PRIMARY, SUCCESS, WARNING
from signals_app.choices import ApprovalStatus, DecidedBy, OutboxStatus, OutboxTemplate, SignalStatus

SIGNAL_COLOURS = {SignalStatus.PUBLISHED: INFO, SignalStatus.CANCELLED: DANGER}

APPROVAL_COLOURS = {
    ApprovalStatus.PENDING: WARNING,
    ApprovalStatus.APPROVED: INFO,
    ApprovalStatus.EXECUTED: SUCCESS,
    ApprovalStatus.FAILED: DANGER,
    ApprovalStatus.UNMONITORED: DANGER,
}
APPROVAL_WORDS = {ApprovalStatus.WITHDRAWN: "withdrawn", ApprovalStatus.UNMONITORED: "not monitored"}
DECIDED_BY_WORDS = {DecidedBy.AUTO: "auto", DecidedBy.CLIENT: "client", DecidedBy.OWNER: "owner"}

OUTBOX_COLOURS = {
    OutboxStatus.QUEUED: WARNING,
    OutboxStatus.SENT: SUCCESS,
    OutboxStatus.FAILED: DANGER,
    OutboxStatus.NOT_SENT: PRIMARY,
}
OUTBOX_WORDS = {OutboxStatus.NOT_SENT: "not sent"}
TEMPLATE_WORDS = {
    OutboxTemplate.APPROVAL_PENDING: "approval asked",
    OutboxTemplate.POSITION_OPENED: "opened",
    OutboxTemplate.POSITION_PARTIALLY_CLOSED: "partly closed",
    OutboxTemplate.POSITION_CLOSED: "closed",
    OutboxTemplate.OWNER_ALERT: "alert",
    OutboxTemplate.OWNER_ALERT_DIGEST: "alert digest",
}
