from __future__ import annotations

from django.db import models
from django.db.models import Q

from positions.choices import (
    ACTIVE_CLOSE_STATUSES,
    AlertKind,
    CloseCommandStatus,
    CloseReason,
    GuardState,
    PositionStatus,
)
from signals_app.choices import Side
from signals_app.fields import EncryptedJSONField
from signals_app.models import PRICE, VOLUME, Approval, Client, Instrument, Signal

MONEY = {"max_digits": 32, "decimal_places": 8}

# Device lives in ea_gateway, which builds on this app; the string reference
# keeps Python imports one way (positions never imports ea_gateway).
DEVICE_MODEL = "ea_gateway.Device"


class OpenPosition(models.Model):
    """A client's trade, created when its EA acknowledges a fill."""

    signal = models.ForeignKey(Signal, on_delete=models.PROTECT, related_name="positions")
    approval = models.OneToOneField(Approval, on_delete=models.PROTECT, related_name="position")
    # No index of their own: (client, status) and (device, status) below lead with them, and
    # every index is one more insert when a sweep moves thousands of positions to closing.
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="positions", db_index=False)
    device = models.ForeignKey(
        DEVICE_MODEL, on_delete=models.PROTECT, related_name="positions", db_index=False
    )
    instrument = models.ForeignKey(
        Instrument, on_delete=models.PROTECT, related_name="positions", db_index=False
    )
    side = models.CharField(max_length=4, choices=Side.choices)
    requested_entry_price = models.DecimalField(**PRICE)
    entry_price = models.DecimalField(**PRICE)
    volume = models.DecimalField(**VOLUME)
    remaining_volume = models.DecimalField(**VOLUME)
    broker_ticket = models.CharField(max_length=64)
    status = models.CharField(max_length=20, choices=PositionStatus.choices, default=PositionStatus.OPEN)
    opened_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    close_price = models.DecimalField(**PRICE, null=True, blank=True)
    close_reason = models.CharField(max_length=16, choices=CloseReason.choices, blank=True)
    realized_pnl = models.DecimalField(**MONEY, null=True, blank=True)
    # First heartbeat whose open tickets lacked this one (reconciliation needs two, apart).
    ticket_missing_since = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-opened_at"]
        # Every position, open or long closed: the console lists the live ones first.
        verbose_name = "position"
        constraints = [
            models.UniqueConstraint(
                fields=["device", "broker_ticket"], name="position_ticket_unique_per_device"
            ),
            models.CheckConstraint(condition=Q(volume__gt=0), name="position_volume_positive"),
            models.CheckConstraint(
                condition=Q(remaining_volume__gte=0, remaining_volume__lte=models.F("volume")),
                name="position_remaining_volume_range",
            ),
        ]
        # Every index below that names ``status`` (or has it in its condition) takes a new
        # entry on each status change: a mass breach moves thousands of positions to
        # closing in one statement, so an index is kept only where a query needs it.
        # A signal's positions (live or not) are found through the ``signal`` key's own
        # index: at most one per client (one approval per signal and client).
        indexes = [
            # A sweep worker's book of one instrument (positions.plan_book): the signals
            # with live positions, by a loose index scan. It leads with the instrument, so
            # the ``instrument`` key has no index of its own.
            models.Index(
                fields=["instrument", "signal"],
                name="position_live_by_instrument",
                condition=Q(status__in=[PositionStatus.OPEN, PositionStatus.CLOSING]),
            ),
            # Time exits: the open positions of a signal opened before a moment, by range.
            models.Index(
                fields=["signal", "opened_at"],
                name="position_open_by_signal_age",
                condition=Q(status=PositionStatus.OPEN),
            ),
            models.Index(fields=["client", "status"]),
            models.Index(fields=["device", "status"]),
        ]

    def __str__(self) -> str:
        state = self.get_status_display()
        state = state[:1].lower() + state[1:]
        return f"Position #{self.pk}: {self.side} {self.volume} {self.instrument}, {state}"


class CloseCommand(models.Model):
    """A close the server asks an EA to execute. At most one active per position."""

    position = models.ForeignKey(OpenPosition, on_delete=models.PROTECT, related_name="close_commands")
    # No index of its own: a device's commands are asked for while pending
    # (close_pending_by_device leads with it) or by id.
    device = models.ForeignKey(
        DEVICE_MODEL, on_delete=models.PROTECT, related_name="close_commands", db_index=False
    )
    volume = models.DecimalField(**VOLUME)
    reason = models.CharField(max_length=16, choices=CloseReason.choices)
    status = models.CharField(
        max_length=10, choices=CloseCommandStatus.choices, default=CloseCommandStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0, help_text="deliveries so far")
    next_attempt_at = models.DateTimeField(help_text="not delivered before this (backoff)")
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    trigger_quote = models.JSONField(null=True, blank=True, help_text="the quote that triggered it")
    # Which of the plan's partial take-profits this close is (its index in owner_only); each
    # fires once per position (constraint below). Null for every other close.
    partial_index = models.PositiveSmallIntegerField(null=True, blank=True)
    requested_by = models.CharField(max_length=150)
    note = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True, help_text="the EA's acknowledgement")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            # Exactly one close per breach lives here, not in any process's memory.
            models.UniqueConstraint(
                fields=["position"],
                condition=Q(status__in=ACTIVE_CLOSE_STATUSES),
                name="one_active_close_per_position",
            ),
            models.UniqueConstraint(
                fields=["position", "partial_index"],
                condition=Q(
                    partial_index__isnull=False,
                    status__in=[*ACTIVE_CLOSE_STATUSES, CloseCommandStatus.EXECUTED],
                ),
                name="one_close_per_partial_take_profit",
            ),
            models.CheckConstraint(condition=Q(volume__gt=0), name="close_volume_positive"),
        ]
        indexes = [
            models.Index(
                fields=["device", "next_attempt_at"],
                name="close_pending_by_device",
                condition=Q(status=CloseCommandStatus.PENDING),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="close_delivered_by_lease",
                condition=Q(status=CloseCommandStatus.DELIVERED),
            ),
            # The dashboard's last hour / last day figures and charts.
            models.Index(fields=["created_at"], name="close_by_created_at"),
            # Only finished commands: a command is created without it (one entry fewer per
            # close queued), and every query of it asks for a time since.
            models.Index(
                fields=["completed_at"],
                name="close_by_completed_at",
                condition=Q(completed_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"close #{self.pk} of position #{self.position_id} ({self.status})"


class Alert(models.Model):
    """Something the owner must look at. One open alert per ``dedupe_key``:
    the same problem seen on every sweep stays one alert, counted."""

    kind = models.CharField(max_length=24, choices=AlertKind.choices)
    dedupe_key = models.CharField(max_length=120)
    message = models.CharField(max_length=500)
    instrument = models.ForeignKey(
        Instrument, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    position = models.ForeignKey(
        OpenPosition, null=True, blank=True, on_delete=models.PROTECT, related_name="alerts"
    )
    device = models.ForeignKey(
        DEVICE_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="alerts"
    )
    occurrences = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    last_seen_at = models.DateTimeField(auto_now_add=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.CharField(max_length=150, blank=True)

    class Meta:
        ordering = ["-last_seen_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["dedupe_key"],
                condition=Q(acknowledged_at__isnull=True),
                name="one_open_alert_per_key",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.message}"


class SignalPlan(models.Model):
    """The live state of a signal's exit plan (``positions.exit_plan.PlanState``): the best
    price since publication, the stop as trailing and breakeven moved it, the partials hit
    and the exit, if any. Written by sweeps under the instrument's lock, so it survives
    restarts. ``state`` reveals levels and is encrypted like the levels; the other columns
    name no price and let a sweep find what still has to be closed without decrypting."""

    signal = models.OneToOneField(Signal, primary_key=True, on_delete=models.CASCADE, related_name="+")
    state = EncryptedJSONField()
    exit_kind = models.CharField(
        max_length=16,
        blank=True,
        help_text="the kind of exit that ended the plan (sl, tp, trailing, breakeven, signal_exit)",
    )
    exit_quote = models.JSONField(null=True, blank=True, help_text="the quote that ended the plan")
    partials_hit = EncryptedJSONField(
        null=True,
        blank=True,
        help_text="partial index -> the quote that hit it (near the level: encrypted); null: none hit yet",
    )
    exited_by = models.CharField(max_length=150, blank=True)
    book_version = models.BigIntegerField(
        default=0, help_text="the instrument's plans_version when this state was saved (positions.plan_book)"
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["exit_kind"], name="plan_exited", condition=~Q(exit_kind=""))]

    def __str__(self) -> str:
        return f"exit plan of signal #{self.signal_id}"


class Candle(models.Model):
    """One minute of the owner's bid for an instrument (``positions.candles``).

    ``first_ts``/``last_ts`` are the feed times of the quotes that set ``open``
    and ``close``: a quote arriving late, in a later batch, still lands where
    its own time puts it.
    """

    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="+")
    minute = models.DateTimeField(help_text="start of the minute (UTC), by the feed's clock")
    open = models.DecimalField(**PRICE)
    high = models.DecimalField(**PRICE)
    low = models.DecimalField(**PRICE)
    close = models.DecimalField(**PRICE)
    quotes = models.PositiveIntegerField(help_text="quotes that went into the bar")
    first_ts = models.FloatField(help_text="feed time of the quote that opened the bar")
    last_ts = models.FloatField(help_text="feed time of the quote that closed the bar")

    class Meta:
        ordering = ["instrument", "minute"]
        constraints = [
            # The upsert's conflict target; its index also serves reads and the prune.
            models.UniqueConstraint(fields=["instrument", "minute"], name="candle_one_per_minute"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id} {self.minute:%Y-%m-%d %H:%M} {self.close}"


class ClientGuard(models.Model):
    """A client's risk guard (``positions.guards``): armed, or tripped by an account's
    drawdown or daily loss, when every live position is closed and no approval reaches the
    client's EAs until the owner re-arms it. Written only by guarded updates."""

    client = models.OneToOneField(Client, primary_key=True, on_delete=models.CASCADE, related_name="guard")
    state = models.CharField(max_length=8, choices=GuardState.choices, default=GuardState.ARMED)
    tripped_at = models.DateTimeField(null=True, blank=True)
    tripped_reason = models.CharField(
        max_length=200, blank=True, help_text="which limit, by how much (owner only, never sent to an EA)"
    )
    tripped_device = models.ForeignKey(
        DEVICE_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    rearmed_at = models.DateTimeField(null=True, blank=True)
    rearmed_by = models.CharField(max_length=150, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["state"], name="guard_tripped", condition=Q(state=GuardState.TRIPPED))
        ]
        permissions = [("rearm_clientguard", "Can re-arm a tripped risk guard (the client trades again)")]

    def __str__(self) -> str:
        return f"risk guard of client #{self.client_id} ({self.state})"


class GuardAccount(models.Model):
    """One EA device's account as its heartbeats report it, for the client's guard: the
    peak, the day's first equity (``day``: the date in GUARD_DAY_TIMEZONE) and the last
    accepted equity; a jump beyond GUARD_EQUITY_JUMP_PERCENT waits in ``held_equity``
    for the next heartbeat to confirm it."""

    device = models.OneToOneField(DEVICE_MODEL, primary_key=True, on_delete=models.CASCADE, related_name="+")
    client = models.ForeignKey(Client, on_delete=models.CASCADE, related_name="+")
    peak_equity = models.DecimalField(**MONEY)
    day = models.DateField()
    day_start_equity = models.DecimalField(**MONEY)
    last_equity = models.DecimalField(**MONEY)
    last_at = models.DateTimeField(help_text="when the last accepted equity arrived")
    held_equity = models.DecimalField(**MONEY, null=True, blank=True)
    held_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"account of device #{self.device_id}: equity {self.last_equity}, peak {self.peak_equity}"
