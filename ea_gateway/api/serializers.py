"""Input and output allow-lists of the EA protocol.

Outputs name every field they send; nothing reaches an EA by default. No
serializer here can see a hidden level: none is given a Signal's owner_only,
a close command's internal reason or its trigger quote.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal

from django.core.validators import RegexValidator
from django.utils import timezone
from rest_framework import serializers

from core.serializers import PlainDecimalField, StrictInputSerializer
from positions.choices import CLIENT_REASON_FOR, CloseReason

# Prices keep the precision they were sent with (2644.80 stays 2644.80), up to 10 decimals.
# The upper bounds are the database's (numeric(20,10) prices, numeric(12,2) volumes):
# a value beyond them is a 400 here, never a database error.
PRICE = {
    "max_digits": 20,
    "places": 10,
    "min_value": Decimal("0.0000000001"),
    "max_value": Decimal("9999999999"),
}
VOLUME = {"max_digits": 12, "decimal_places": 2, "min_value": Decimal("0.01"), "max_value": Decimal("100000")}
# Terminals report money as floats (10000.300000000001): take any precision, keep cents.
MONEY = {
    "max_digits": None,
    "decimal_places": None,
    "min_value": Decimal(-(10**15)),
    "max_value": Decimal(10**15),
}
CENT = Decimal("0.01")
# Printable ASCII only: a ticket ends up in alerts and logs, so no control characters.
TICKET = {
    "max_length": 64,
    "min_length": 1,
    "allow_blank": False,
    "validators": [RegexValidator(r"^[\x21-\x7e]+$", "printable ASCII without spaces")],
}


LONG_POLL_MAX_SECONDS = 30  # the protocol's bound (docs/ea-protocol.md); a request beyond it is a 400


class WaitQuery(serializers.Serializer):
    """``?wait=N`` of the two long-polls: a whole number of seconds, 0 to 30, given at most once.
    Anything else is refused, never ignored or clamped: an EA must learn its wait is wrong."""

    wait = serializers.CharField(
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        help_text=f"seconds to wait for something to deliver, 0 to {LONG_POLL_MAX_SECONDS} (default 0)",
    )

    def to_internal_value(self, data):
        if hasattr(data, "getlist") and len(data.getlist("wait")) > 1:
            raise serializers.ValidationError({"wait": ["Give wait at most once."]})
        return super().to_internal_value(data)

    def validate_wait(self, value: str) -> int:
        if not re.fullmatch(r"[0-9]{1,9}", value) or int(value) > LONG_POLL_MAX_SECONDS:
            raise serializers.ValidationError(
                f"Must be a whole number of seconds from 0 to {LONG_POLL_MAX_SECONDS}."
            )
        return int(value)


class ExecutionParamsOutput(serializers.Serializer):
    instrument = serializers.CharField(source="signal.instrument.symbol")
    direction = serializers.CharField(source="signal.side")
    entry_price = serializers.DecimalField(
        source="signal.entry_price", max_digits=20, decimal_places=10, normalize_output=True
    )
    volume = serializers.DecimalField(max_digits=12, decimal_places=2)
    ttl_minutes = serializers.SerializerMethodField(help_text="whole minutes left to enter, at least 1")

    def get_ttl_minutes(self, approval) -> int:
        seconds = (approval.expires_at - timezone.now()).total_seconds()
        return max(1, math.ceil(seconds / 60))


class PollApprovalOutput(serializers.Serializer):
    approval_id = serializers.IntegerField(source="pk")
    signal_id = serializers.IntegerField()
    execution_params = ExecutionParamsOutput(source="*")


class PollOutput(serializers.Serializer):
    approvals = PollApprovalOutput(many=True)


class AckInput(StrictInputSerializer):
    required_when = {"status": {"placed": ("broker_ticket", "entry_price", "volume")}}

    approval_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    status = serializers.ChoiceField(choices=["placed", "failed"])
    broker_ticket = serializers.CharField(required=False, **TICKET)
    entry_price = PlainDecimalField(required=False, **PRICE)
    volume = serializers.DecimalField(required=False, help_text="at most the approval's volume", **VOLUME)
    error = serializers.CharField(required=False, allow_blank=True, max_length=500)


class AckOutput(serializers.Serializer):
    approval_id = serializers.IntegerField()
    status = serializers.CharField()
    position_id = serializers.IntegerField(required=False)


class CloseCommandOutput(serializers.Serializer):
    command_id = serializers.IntegerField(source="pk")
    position_id = serializers.IntegerField()
    broker_ticket = serializers.CharField(source="position.broker_ticket")
    volume = serializers.DecimalField(max_digits=12, decimal_places=2)
    reason = serializers.SerializerMethodField(help_text='generic: "profit target", "risk limit", ...')

    def get_reason(self, command) -> str:
        return CLIENT_REASON_FOR[CloseReason(command.reason)]


class CloseCommandsOutput(serializers.Serializer):
    commands = CloseCommandOutput(many=True)


class CloseAckInput(StrictInputSerializer):
    required_when = {"status": {"executed": ("close_price", "closed_volume")}}

    command_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    status = serializers.ChoiceField(choices=["executed", "failed"])
    close_price = PlainDecimalField(required=False, **PRICE)
    closed_volume = serializers.DecimalField(
        required=False, help_text="at most the position's open volume", **VOLUME
    )
    error = serializers.CharField(required=False, allow_blank=True, max_length=500)


class CloseAckOutput(serializers.Serializer):
    command_id = serializers.IntegerField()
    status = serializers.CharField()


class HeartbeatInput(StrictInputSerializer):
    balance = serializers.DecimalField(**MONEY)
    equity = serializers.DecimalField(**MONEY)
    open_tickets = serializers.ListField(child=serializers.CharField(**TICKET), max_length=1000)

    def validate(self, data):
        data["balance"] = data["balance"].quantize(CENT)
        data["equity"] = data["equity"].quantize(CENT)
        return data


class HeartbeatOutput(serializers.Serializer):
    server_time = serializers.IntegerField()


class QuoteInput(StrictInputSerializer):
    instrument = serializers.CharField(max_length=20, help_text="a configured instrument's symbol")
    bid = PlainDecimalField(**PRICE)
    ask = PlainDecimalField(help_text="not below bid", **PRICE)
    ts = serializers.FloatField(
        min_value=946684800,
        help_text="unix seconds when quoted (fractions allowed), not in the future (5 s of clock skew taken)",
    )

    def validate(self, data):
        if data["ask"] < data["bid"]:
            raise serializers.ValidationError({"ask": ["must not be below bid"]})
        if not math.isfinite(data["ts"]) or data["ts"] > timezone.now().timestamp() + 5:
            raise serializers.ValidationError({"ts": ["must not be in the future"]})
        data["instrument"] = data["instrument"].strip().upper()
        return data


class QuotesInput(StrictInputSerializer):
    quotes = QuoteInput(many=True, allow_empty=False)

    def get_fields(self):
        from django.conf import settings

        fields = super().get_fields()
        # Read per request (a setting), and before any quote is looked at: a batch too long
        # is refused whole. The schema's maxItems comes from the same attribute.
        fields["quotes"].max_length = settings.FEED_MAX_QUOTES_PER_BATCH
        return fields


class QuotesOutput(serializers.Serializer):
    accepted = serializers.IntegerField()
    ignored = serializers.IntegerField()
