from __future__ import annotations

from django.db import models


class PositionStatus(models.TextChoices):
    OPEN = "open", "Open"
    CLOSING = "closing", "Closing (command queued)"
    CLOSED_SL = "closed_sl", "Closed at stop-loss"
    CLOSED_TP = "closed_tp", "Closed at take-profit"
    CLOSED_MANUAL = "closed_manual", "Closed by the owner"
    CLOSED_TRAILING = "closed_trailing", "Closed at the trailing stop"
    CLOSED_BREAKEVEN = "closed_breakeven", "Closed at breakeven"
    CLOSED_TIME = "closed_time", "Closed at max holding time"
    CLOSED_SIGNAL_EXIT = "closed_signal_exit", "Closed by the strategy's exit"
    CLOSED_MARKET_GUARD = "closed_market_guard", "Closed by the market guard"
    CLOSED_DRAWDOWN = "closed_drawdown", "Closed by the client's risk guard"
    CLOSED_EXTERNAL = "closed_external", "Closed outside the server"
    CLOSE_FAILED = "close_failed", "Close failed"


class CloseReason(models.TextChoices):
    """Why the server closes a position. Internal: clients see only ``client_reason``."""

    STOP_LOSS = "stop_loss", "Hidden stop-loss hit"
    TAKE_PROFIT = "take_profit", "Hidden take-profit hit"
    MANUAL = "manual", "Manual close by the owner"
    PARTIAL_TP = "partial_tp", "Hidden partial take-profit hit"
    TRAILING = "trailing", "Hidden trailing stop hit"
    BREAKEVEN = "breakeven", "Stop moved to breakeven, then hit"
    TIME = "time", "Maximum holding time reached"
    SIGNAL_EXIT = "signal_exit", "The strategy's exit signal"
    MARKET_GUARD = "market_guard", "Abnormal market (market guard in close mode)"
    DRAWDOWN = "drawdown", "The client's drawdown or daily loss limit"


class CloseCommandStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    DELIVERED = "delivered", "Delivered (leased to the EA)"
    EXECUTED = "executed", "Executed"
    FAILED = "failed", "Failed at the broker"
    EXPIRED = "expired", "Expired (no acknowledgement)"


# Still at the broker: what the console lists first, what a device hand-over moves.
LIVE_STATUSES = (PositionStatus.OPEN, PositionStatus.CLOSING, PositionStatus.CLOSE_FAILED)

ACTIVE_CLOSE_STATUSES = [CloseCommandStatus.PENDING, CloseCommandStatus.DELIVERED]

# What the position becomes when a close for this reason is executed.
CLOSED_STATUS_FOR = {
    CloseReason.STOP_LOSS: PositionStatus.CLOSED_SL,
    CloseReason.TAKE_PROFIT: PositionStatus.CLOSED_TP,
    CloseReason.MANUAL: PositionStatus.CLOSED_MANUAL,
    # A partial that reaches the whole remainder closes the position at a profit target.
    CloseReason.PARTIAL_TP: PositionStatus.CLOSED_TP,
    CloseReason.TRAILING: PositionStatus.CLOSED_TRAILING,
    CloseReason.BREAKEVEN: PositionStatus.CLOSED_BREAKEVEN,
    CloseReason.TIME: PositionStatus.CLOSED_TIME,
    CloseReason.SIGNAL_EXIT: PositionStatus.CLOSED_SIGNAL_EXIT,
    CloseReason.MARKET_GUARD: PositionStatus.CLOSED_MARKET_GUARD,
    CloseReason.DRAWDOWN: PositionStatus.CLOSED_DRAWDOWN,
}

# The only reason text a client ever sees: it names no level.
CLIENT_REASON_FOR = {
    CloseReason.STOP_LOSS: "risk limit",
    CloseReason.TAKE_PROFIT: "profit target",
    CloseReason.MANUAL: "closed by the desk",
    CloseReason.PARTIAL_TP: "profit target",
    CloseReason.TRAILING: "risk limit",
    CloseReason.BREAKEVEN: "risk limit",
    CloseReason.TIME: "time limit",
    CloseReason.SIGNAL_EXIT: "closed by the provider",
    CloseReason.MARKET_GUARD: "closed by the provider",
    # Never the limit, the equity or the peak: the client learns only that the provider closed.
    CloseReason.DRAWDOWN: "closed by the provider",
}


class AlertKind(models.TextChoices):
    STALE_QUOTE = "stale_quote", "Stale quote: breaches not judged"
    SPIKE = "spike", "Price spike held back a close"
    CLOSE_FAILED = "close_failed", "Close command expired unacknowledged"
    DEVICE_OFFLINE = "device_offline", "Device offline with pending closes"
    AUTO_CLOSE_DISABLED = "auto_close_disabled", "Breach on a client with auto-close off"
    FILL_REFUSED = "fill_refused", "A reported fill was refused: trade not monitored"
    UNREADABLE_LEVELS = "unreadable_levels", "A signal's hidden levels cannot be read: not monitored"
    NO_ATR = "no_atr", "Too few bars for an ATR trailing stop: it does not move"
    NO_ACTIVE_DEVICE = "no_active_device", "Live positions and no active EA device to close them"
    MARKET_GUARD = "market_guard", "Abnormal market: breaches held or positions closed"
    OVER_EXPOSURE = "over_exposure", "A fill took a client beyond its exposure limits"
    NOTIFICATION_FAILED = "notification_failed", "A notification cannot be delivered"
    GUARD_TRIPPED = "guard_tripped", "A client's risk guard tripped: its positions are being closed"
    EQUITY_STALE = "equity_stale", "An account's equity is stale: its risk guard cannot judge it"
    EQUITY_JUMP = "equity_jump", "An implausible equity jump was not confirmed: ignored"


# The exits a plan's level triggers, by the side of the trade they protect (the dashboard
# counts and charts them as breaches); a time exit or the strategy's exit is no breach.
STOP_REASONS = (CloseReason.STOP_LOSS, CloseReason.TRAILING, CloseReason.BREAKEVEN)
TARGET_REASONS = (CloseReason.TAKE_PROFIT, CloseReason.PARTIAL_TP)


class GuardState(models.TextChoices):
    ARMED = "armed", "Armed"
    TRIPPED = "tripped", "Tripped: positions closed, no new trades until re-armed"
