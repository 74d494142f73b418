"""The positions console's status badges (``core.badges``): colours and short words."""

from __future__ import annotations

from core.badges import DANGER, INFO, SUCCESS, WARNING
from positions.choices import AlertKind, CloseCommandStatus, CloseReason, PositionStatus

POSITION_COLOURS = {
    PositionStatus.OPEN: INFO,
    PositionStatus.CLOSING: WARNING,
    PositionStatus.CLOSE_FAILED: DANGER,
    PositionStatus.CLOSED_TP: SUCCESS,
}
POSITION_WORDS = {
    PositionStatus.OPEN: "open",
    PositionStatus.CLOSING: "closing",
    PositionStatus.CLOSE_FAILED: "close failed",
    PositionStatus.CLOSED_SL: "closed · SL",
    PositionStatus.CLOSED_TP: "closed · TP",
    PositionStatus.CLOSED_MANUAL: "closed · owner",
    PositionStatus.CLOSED_TRAILING: "closed · trailing",
    PositionStatus.CLOSED_BREAKEVEN: "closed · breakeven",
    PositionStatus.CLOSED_TIME: "closed · time",
    PositionStatus.CLOSED_SIGNAL_EXIT: "closed · exit",
    PositionStatus.CLOSED_MARKET_GUARD: "closed · market",
    PositionStatus.CLOSED_DRAWDOWN: "closed · guard",
    PositionStatus.CLOSED_EXTERNAL: "closed · outside",
}

COMMAND_COLOURS = {
    CloseCommandStatus.PENDING: WARNING,
    CloseCommandStatus.DELIVERED: INFO,
    CloseCommandStatus.EXECUTED: SUCCESS,
    CloseCommandStatus.FAILED: DANGER,
    CloseCommandStatus.EXPIRED: DANGER,
}
COMMAND_WORDS = {CloseCommandStatus.FAILED: "failed"}

REASON_WORDS = {
    CloseReason.STOP_LOSS: "stop-loss",
    CloseReason.TAKE_PROFIT: "take-profit",
    CloseReason.MANUAL: "manual",
    CloseReason.PARTIAL_TP: "partial TP",
    CloseReason.TRAILING: "trailing",
    CloseReason.BREAKEVEN: "breakeven",
    CloseReason.TIME: "time",
    CloseReason.SIGNAL_EXIT: "strategy exit",
    CloseReason.MARKET_GUARD: "market guard",
    CloseReason.DRAWDOWN: "risk guard",
}

ALERT_COLOURS = {"open": DANGER, "acknowledged": SUCCESS}
ALERT_KIND_WORDS = {
    AlertKind.STALE_QUOTE: "stale quote",
    AlertKind.CLOSE_FAILED: "close expired",
    AlertKind.AUTO_CLOSE_DISABLED: "auto-close off",
    AlertKind.UNREADABLE_LEVELS: "unreadable levels",
    AlertKind.NO_ATR: "no ATR",
    AlertKind.NO_ACTIVE_DEVICE: "no active EA",
}
