from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from core import formatting
from signals_app.choices import (
    ActorKind,
    ApprovalStatus,
    DecidedBy,
    MarketGuardMode,
    Side,
    SignalStatus,
)
from signals_app.fields import EncryptedJSONField

PRICE = {"max_digits": 20, "decimal_places": 10}
VOLUME = {"max_digits": 12, "decimal_places": 2}


# Plans versions come from one sequence: never the same number twice, even after a
# rolled-back transaction took one (positions.plan_book relies on that).
PLANS_VERSION_SEQUENCE = "veilstop_plans_version"


class Instrument(models.Model):
    symbol = models.CharField(max_length=20, unique=True)
    description = models.CharField(max_length=100, blank=True)
    digits = models.PositiveSmallIntegerField(help_text="decimal places of a quote")
    pip_size = models.DecimalField(**PRICE, validators=[MinValueValidator(Decimal("0.0000000001"))])
    contract_size = models.DecimalField(
        max_digits=20, decimal_places=4, help_text="units per 1.00 lot (for P&L)"
    )
    quote_currency = models.CharField(
        max_length=3,
        default="USD",
        validators=[RegexValidator(r"^[A-Z]{3}$", "three capital letters, e.g. USD")],
        help_text="currency of its prices, and of a position's P&L (ISO 4217, e.g. USD, JPY)",
    )
    active = models.BooleanField(default=True)
    # The market guard (positions.market_guard); an empty threshold takes its global setting.
    market_guard_mode = models.CharField(
        max_length=5, choices=MarketGuardMode.choices, default=MarketGuardMode.HOLD
    )
    market_guard_spread_factor = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(1000))],
        help_text=(
            "abnormal when the spread is wider than this many times its recent median "
            "(above 1; 0: never; empty: MARKET_GUARD_SPREAD_FACTOR)"
        ),
    )
    market_guard_gap_pips = models.DecimalField(
        max_digits=12,
        decimal_places=1,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal(0))],
        help_text=(
            "abnormal when the mid price moved more than this many pips since the previous quote "
            "(0: never; empty: MARKET_GUARD_GAP_PIPS)"
        ),
    )
    market_guard_quote_timeout_seconds = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(86400)],
        help_text="abnormal when no quote came for this long (empty: MARKET_GUARD_QUOTE_TIMEOUT_SECONDS)",
    )
    plans_version = models.BigIntegerField(
        default=0,
        editable=False,
        help_text=(
            "renewed (from one sequence) in the same transaction as any change to what a sweep "
            "of this instrument watches (a publication, moved levels, a plan's saved state): sweep "
            "workers keep "
            "decoded plans in memory and re-read what changed when it moves"
        ),
    )

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(
                condition=Q(market_guard_spread_factor__isnull=True)
                | Q(market_guard_spread_factor=0)
                | Q(market_guard_spread_factor__gt=1),
                name="instrument_spread_factor_off_or_above_one",
            ),
            models.CheckConstraint(
                condition=Q(market_guard_gap_pips__isnull=True) | Q(market_guard_gap_pips__gte=0),
                name="instrument_gap_pips_not_negative",
            ),
            models.CheckConstraint(
                condition=Q(market_guard_quote_timeout_seconds__isnull=True)
                | Q(market_guard_quote_timeout_seconds__gte=1, market_guard_quote_timeout_seconds__lte=86400),
                name="instrument_quote_timeout_range",
            ),
        ]

    def __str__(self) -> str:
        return self.symbol

    def save(self, *args, **kwargs) -> None:
        # plans_version is renewed only by an UPDATE of its own (instrument_plans_changed,
        # positions.plan_store): saving an instrument read earlier (the admin) must never
        # write an older value back over a newer one.
        if not self._state.adding and kwargs.get("update_fields") is None and not kwargs.get("force_insert"):
            kwargs["update_fields"] = [
                f.name for f in self._meta.concrete_fields if not f.primary_key and f.name != "plans_version"
            ]
        super().save(*args, **kwargs)

    def clean(self) -> None:
        factor = self.market_guard_spread_factor
        if factor is not None and 0 < factor <= 1:
            raise ValidationError(
                {"market_guard_spread_factor": "Must be above 1 (wider than the median), or 0 for never."}
            )


def percent_limit_validator(value: Decimal | None) -> None:
    """A risk limit is a share of the account: above 0 and below 100 per cent."""
    if value is not None and not Decimal(0) < value < Decimal(100):
        raise ValidationError(
            "A limit is a percentage above 0 and below 100 (leave it empty for the default setting).",
            code="percent_range",
        )


PERCENT_LIMIT = {"max_digits": 5, "decimal_places": 2, "null": True, "blank": True}


class Client(models.Model):
    """A subscriber. Every active client receives each published signal."""

    name = models.CharField(max_length=100, unique=True)
    contact_email = models.EmailField(blank=True)
    telegram_chat_id = models.CharField(max_length=32, blank=True)
    notify_by_telegram = models.BooleanField(
        default=True, help_text="send this client's notifications to its Telegram chat (when it has one)"
    )
    notify_by_email = models.BooleanField(
        default=True, help_text="send this client's notifications to its e-mail address (when it has one)"
    )
    active = models.BooleanField(default=True)
    auto_approve = models.BooleanField(default=False, help_text="approve every signal without asking")
    default_volume = models.DecimalField(
        **VOLUME, default=Decimal("0.01"), validators=[MinValueValidator(Decimal("0.01"))]
    )
    auto_close_enabled = models.BooleanField(
        default=True, help_text="server closes this client's positions at hidden levels (canary switch)"
    )
    # Exposure limits (positions.exposure): the EA poll holds back approvals beyond them.
    max_open_positions = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text=(
            "most live positions plus approvals handed to the EA and not yet filled "
            "(empty: GUARD_MAX_OPEN_POSITIONS)"
        ),
    )
    max_volume_per_instrument = models.DecimalField(
        **VOLUME,
        null=True,
        blank=True,
        validators=[MinValueValidator(Decimal("0.01"))],
        help_text=("most lots live or handed out per instrument (empty: GUARD_MAX_VOLUME_PER_INSTRUMENT)"),
    )
    # The client's risk guards (positions.guards); empty: the GUARD_* default setting.
    drawdown_limit_percent = models.DecimalField(
        **PERCENT_LIMIT,
        validators=[percent_limit_validator],
        help_text=(
            "close every position and stop new trades when an account's equity falls this many per "
            "cent below its peak; empty: GUARD_DRAWDOWN_LIMIT_PERCENT"
        ),
    )
    daily_loss_limit_percent = models.DecimalField(
        **PERCENT_LIMIT,
        validators=[percent_limit_validator],
        help_text=(
            "the same when an account has lost this many per cent of its first equity of the day; "
            "empty: GUARD_DAILY_LOSS_LIMIT_PERCENT"
        ),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(default_volume__gt=0), name="client_volume_positive"),
            models.CheckConstraint(
                condition=Q(max_open_positions__isnull=True) | Q(max_open_positions__gte=1),
                name="client_max_open_positions_positive",
            ),
            models.CheckConstraint(
                condition=Q(max_volume_per_instrument__isnull=True) | Q(max_volume_per_instrument__gt=0),
                name="client_max_volume_positive",
            ),
            models.CheckConstraint(
                condition=Q(drawdown_limit_percent__isnull=True)
                | Q(drawdown_limit_percent__gt=0, drawdown_limit_percent__lt=100),
                name="client_drawdown_limit_range",
            ),
            models.CheckConstraint(
                condition=Q(daily_loss_limit_percent__isnull=True)
                | Q(daily_loss_limit_percent__gt=0, daily_loss_limit_percent__lt=100),
                name="client_daily_loss_limit_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


MAX_TTL_MINUTES = 7 * 24 * 60  # a week: sweeps look this far back for signals open for entries


class Signal(models.Model):
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="signals")
    side = models.CharField(max_length=4, choices=Side.choices)
    entry_price = models.DecimalField(**PRICE)
    payload = models.JSONField(default=dict, blank=True, help_text="client-visible metadata")
    # The owner's exits: Fernet-encrypted, never sent to a client.
    owner_only = EncryptedJSONField()
    status = models.CharField(max_length=10, choices=SignalStatus.choices, default=SignalStatus.DRAFT)
    ttl_minutes = models.PositiveIntegerField(
        help_text="how long clients may still enter", validators=[MaxValueValidator(MAX_TTL_MINUTES)]
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    published_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        permissions = [("view_hidden_levels", "Can see and edit hidden levels (SL/TP)")]
        indexes = [
            models.Index(fields=["status", "instrument"]),
            # Sweeps follow the signals still open for entries: published within the longest TTL.
            models.Index(
                fields=["published_at"], name="signal_published_at", condition=Q(status="published")
            ),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(entry_price__gt=0), name="signal_entry_positive"),
            models.CheckConstraint(condition=Q(ttl_minutes__gte=1), name="signal_ttl_positive"),
            models.CheckConstraint(
                condition=Q(ttl_minutes__lte=MAX_TTL_MINUTES), name="signal_ttl_at_most_a_week"
            ),
        ]

    def __str__(self) -> str:
        if not self.instrument_id:
            return f"#{self.pk} {self.side} @ {self.entry_price}"
        entry = formatting.price(self.entry_price, self.instrument.digits)
        return f"#{self.pk} {self.side} {self.instrument.symbol} @ {entry}"


class Approval(models.Model):
    signal = models.ForeignKey(Signal, on_delete=models.CASCADE, related_name="approvals")
    client = models.ForeignKey(Client, on_delete=models.PROTECT, related_name="approvals")
    volume = models.DecimalField(**VOLUME)
    status = models.CharField(max_length=10, choices=ApprovalStatus.choices, default=ApprovalStatus.PENDING)
    decided_by = models.CharField(max_length=6, choices=DecidedBy.choices, blank=True)
    decided_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    decided_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField()
    # The EA poll (positions.exposure): first handed to an EA (it counts against the client's
    # limits from then until filled), and first held back by a limit (audited once).
    handed_out_at = models.DateTimeField(null=True, blank=True)
    held_back_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["signal", "client"], name="approval_one_per_signal_and_client"),
            models.CheckConstraint(condition=Q(volume__gt=0), name="approval_volume_positive"),
        ]
        indexes = [
            models.Index(fields=["client", "status", "expires_at"]),
            models.Index(
                fields=["expires_at"],
                name="approval_open_expiry",
                condition=Q(status__in=[ApprovalStatus.PENDING, ApprovalStatus.APPROVED]),
            ),
        ]

    def __str__(self) -> str:
        return f"approval #{self.pk} ({self.status})"


class AuditEvent(models.Model):
    """Append-only record of every owner action and server-initiated change.

    PostgreSQL refuses UPDATE (except re-encrypting ``secret_data``) and DELETE
    on this table (migration 0003). Secrets such as old and new hidden levels go
    in ``secret_data``, encrypted like ``Signal.owner_only``; ``data`` is plain.
    """

    occurred_at = models.DateTimeField(auto_now_add=True, db_index=True)
    actor_kind = models.CharField(max_length=8, choices=ActorKind.choices)
    actor = models.CharField(max_length=150, help_text="username, device key or system component")
    action = models.CharField(max_length=40)
    subject_type = models.CharField(max_length=30)
    subject_id = models.BigIntegerField()
    data = models.JSONField(default=dict, blank=True)
    secret_data = EncryptedJSONField(null=True, blank=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]
        indexes = [
            models.Index(fields=["subject_type", "subject_id"]),
            # Equality only (the admin's filter, counts of an action): no second,
            # pattern-matching index as ``db_index=True`` would add; every close writes a row.
            models.Index(fields=["action"], name="audit_by_action"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.subject_type}#{self.subject_id} by {self.actor}"


# The notifications' tables live in their own module (this one would grow past what a
# reader takes in); imported here so Django finds them as signals_app's models.
from signals_app.models_outbox import OutboxMessage, TelegramLinkCode  # noqa: E402, F401
