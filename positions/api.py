"""The owner's REST API for positions: manual close and test-breach of one position,
and the strategy's exit signal for a whole signal.

Staff only (core.owner_api). Hidden levels appear in a response only for users with
``signals_app.view_hidden_levels``. The monitor's state, under the same
``/api/v1/admin/positions/`` prefix, is monitoring's (monitoring.api).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from cryptography.fernet import InvalidToken
from django.urls import path
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from core.errors import DomainError
from core.owner_api import ERROR, POSITION_ERRORS, OwnerAPIView
from core.serializers import StrictInputSerializer
from positions.closes import positions_close_manual
from positions.exit_plan import BREAKEVEN, PARTIAL_TP, PLAN_UNWALKABLE, SIGNAL_EXIT, SL, TP, TRAILING
from positions.models import OpenPosition
from positions.selectors import CLOSE_REASON_FOR, breach_test
from positions.signal_exit import signal_exit
from signals_app.choices import ActorKind
from signals_app.events import Actor
from signals_app.hidden_levels import HiddenLevelsError
from signals_app.models import PRICE, VOLUME
from signals_app.selectors import user_sees_hidden_levels

MIN_PRICE = Decimal("0.0000000001")
# Test-breach's vocabulary (positions.exit_plan's kinds, positions.choices' close reasons).
BREACH_TYPES = [SL, TP, TRAILING, BREAKEVEN, PARTIAL_TP]
EXIT_KINDS = [SL, TP, TRAILING, BREAKEVEN, SIGNAL_EXIT]
STOP_RULES = [SL, TRAILING, BREAKEVEN]
CLOSE_LEVELS = [reason.value for reason in CLOSE_REASON_FOR.values()]


def _position_or_404(position_id: int) -> OpenPosition:
    position = (
        OpenPosition.objects.select_related("signal__instrument", "instrument").filter(pk=position_id).first()
    )
    if position is None:
        raise NotFound()
    return position


# --- manual close -------------------------------------------------------------------


class PositionCloseInput(StrictInputSerializer):
    """Why the owner closes: kept with the close command and in the audit trail."""

    reason = serializers.CharField(min_length=1, max_length=100, help_text='e.g. "manual_override"')
    note = serializers.CharField(max_length=1000, required=False, allow_blank=True, default="")


class PositionCloseOutput(serializers.Serializer):
    position_id = serializers.IntegerField()
    queued = serializers.BooleanField()
    command_id = serializers.IntegerField()


class PositionCloseView(OwnerAPIView):
    @extend_schema(
        request=PositionCloseInput,
        responses={202: PositionCloseOutput, **POSITION_ERRORS, 409: ERROR},
        tags=["owner"],
        operation_id="owner_position_close",
        summary="Close a position by hand",
        description=(
            "Queues a close command for the position's EA. 409 (`not_open`) when the position "
            "is already closing or closed, so a repeated request never closes twice."
        ),
    )
    def post(self, request: Request, position_id: int) -> Response:
        position = _position_or_404(position_id)
        data = PositionCloseInput(data=request.data)
        data.is_valid(raise_exception=True)
        result = positions_close_manual(
            position_ids=[position.pk],
            reason=data.validated_data["reason"],
            note=data.validated_data["note"],
            by=Actor.user(request.user),
        )
        if position.pk not in result.queued:
            raise DomainError(
                "not_open",
                "The position is not open (already closing or closed).",
                status_code=status.HTTP_409_CONFLICT,
            )
        command_id = result.commands[position.pk]
        output = PositionCloseOutput({"position_id": position.pk, "queued": True, "command_id": command_id})
        return Response(output.data, status=status.HTTP_202_ACCEPTED)


# --- test-breach --------------------------------------------------------------------


class BreachTestInput(StrictInputSerializer):
    """Either one price (used as bid and ask) or a bid/ask pair."""

    one_group_of = (("simulated_price",), ("bid", "ask"))

    simulated_price = serializers.DecimalField(**PRICE, min_value=MIN_PRICE, required=False)
    bid = serializers.DecimalField(**PRICE, min_value=MIN_PRICE, required=False)
    ask = serializers.DecimalField(**PRICE, min_value=MIN_PRICE, required=False, help_text="not below bid")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Decimal]:
        if "simulated_price" in attrs:
            return {"bid": attrs["simulated_price"], "ask": attrs["simulated_price"]}
        if attrs["ask"] < attrs["bid"]:
            raise serializers.ValidationError({"ask": ["ask must not be lower than bid."]})
        return {"bid": attrs["bid"], "ask": attrs["ask"]}


class _Price(serializers.DecimalField):
    def __init__(self, **kwargs: Any) -> None:
        # Plain notation, trailing zeros dropped: "2644.8", "0", never "0E-5".
        super().__init__(**PRICE, normalize_output=True, **kwargs)


class HiddenLevelsOutput(serializers.Serializer):
    sl = _Price(allow_null=True)
    tp = _Price(allow_null=True)


class BreachPositionOutput(serializers.Serializer):
    id = serializers.IntegerField()
    instrument = serializers.CharField(source="instrument.symbol")
    side = serializers.CharField()
    entry_price = _Price()
    remaining_volume = serializers.DecimalField(**VOLUME)


class PlanAfterQuoteOutput(serializers.Serializer):
    """The signal's exit plan as it would stand after the quote (nothing is saved)."""

    exit_kind = serializers.ChoiceField(
        choices=EXIT_KINDS, allow_null=True, help_text="what ended the plan, before or by this quote"
    )
    ended = serializers.BooleanField(source="plan_ended")
    effective_stop = _Price(allow_null=True, help_text="the stop-loss, or tighter where a rule moved it")
    stop_set_by = serializers.ChoiceField(choices=STOP_RULES, allow_null=True)
    stop_moved = serializers.BooleanField(help_text="this quote would move the stop")
    best = _Price(allow_null=True, help_text="best price since publication (kept for trailing and breakeven)")
    partials_hit = serializers.ListField(child=serializers.IntegerField(), help_text="partial indexes")


class BreachTestOutput(serializers.Serializer):
    position_id = serializers.IntegerField()
    position = BreachPositionOutput()
    side = serializers.CharField()
    bid = _Price()
    ask = _Price()
    judged_price = _Price(help_text="the bid for a buy, the ask for a sell")
    breach_detected = serializers.BooleanField(
        help_text="this quote crosses an exit or a partial take-profit"
    )
    breach_type = serializers.ChoiceField(choices=BREACH_TYPES, allow_null=True)
    partial_index = serializers.IntegerField(
        allow_null=True, help_text="for partial_tp: the first partial take-profit this quote reaches"
    )
    partials_triggered = serializers.ListField(child=serializers.IntegerField())
    would_close = serializers.BooleanField(
        help_text="the plan would close positions: an exit (by this quote or earlier) or a partial"
    )
    level = serializers.ChoiceField(
        choices=CLOSE_LEVELS, allow_null=True, help_text="the close reason the commands would carry"
    )
    open_positions_affected = serializers.IntegerField(
        source="open_positions", help_text="open positions of the signal that would get a close command"
    )
    tolerance = _Price(help_text="price distance beyond the level (tolerance pips x pip size)")


class BreachTestWithLevelsOutput(BreachTestOutput):
    """Test-breach is only for users with ``signals_app.view_hidden_levels``: they see the levels
    too, and the plan's stop as it moved."""

    hidden_levels = HiddenLevelsOutput(source="*", required=False)
    plan = PlanAfterQuoteOutput(source="*")


class PositionBreachTestView(OwnerAPIView):
    @extend_schema(
        request=BreachTestInput,
        responses={200: BreachTestWithLevelsOutput, **POSITION_ERRORS},
        tags=["owner"],
        operation_id="owner_position_test_breach",
        summary="What would this price do to the position's exit plan?",
        description=(
            "One synthetic quote (now) walked through the signal's exit plan from its stored state, "
            "as a sweep would: stop (as trailing or breakeven moved it), target, partial take-profits. "
            "By the rule alone (no recheck delay, spike guard or staleness). A read: nothing is "
            "closed, stored or audited."
        ),
    )
    def post(self, request: Request, position_id: int) -> Response:
        if not user_sees_hidden_levels(request.user):
            # "Would this price close?" asked a few dozen times finds the level by bisection:
            # the answer is as secret as the level itself.
            raise PermissionDenied("Test-breach needs the permission to see hidden levels.")
        data = BreachTestInput(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            position = _position_or_404(position_id)  # reads the signal: its levels decrypt here
            result = breach_test(signal=position.signal, **data.validated_data)
        except (InvalidToken, HiddenLevelsError, *PLAN_UNWALKABLE):
            raise DomainError.conflict(
                "This signal's hidden levels or exit plan cannot be read (see the owner's alerts)."
            ) from None
        output = BreachTestWithLevelsOutput(
            {
                **vars(result),
                "position_id": position.pk,
                "position": position,
                "breach_detected": result.breach_detected,
                "partial_index": result.partials_triggered[0] if result.partials_triggered else None,
                "would_close": result.would_close,
            }
        )
        return Response(output.data)


# --- the strategy's exit signal ------------------------------------------------------


class SignalExitOutput(serializers.Serializer):
    signal_id = serializers.IntegerField()
    exit_kind = serializers.CharField(help_text="signal_exit, or the exit that had already ended the plan")
    already_ended = serializers.BooleanField(help_text="true on a repeated call: nothing changed")
    approvals_withdrawn = serializers.IntegerField()
    closes_queued = serializers.IntegerField()


class SignalExitView(OwnerAPIView):
    @extend_schema(
        request=None,
        responses={200: SignalExitOutput, **POSITION_ERRORS, 409: ERROR},
        tags=["owner"],
        operation_id="signal_exit",
        summary="The strategy exits: close every open position of the signal",
        description=(
            "Ends the signal's exit plan whatever its levels say, withdraws its approvals not yet "
            "filled and queues a close of every open position (clients see 'closed by the provider'). "
            "A fill that lands afterwards is closed at once. Idempotent: a repeated call, or one after "
            "a level already ended the plan, changes nothing (`already_ended`). 409 for a signal that "
            "is not published."
        ),
    )
    def post(self, request: Request, signal_id: int) -> Response:
        if request.data:
            raise DomainError("invalid", "This request takes no body.")
        result = signal_exit(signal_id=signal_id, by=Actor.user(request.user, kind=_actor_kind(request)))
        return Response(SignalExitOutput(vars(result)).data)


def _actor_kind(request: Request) -> str:
    # A token is how the strategy bot calls; a browser session is the owner.
    return ActorKind.BOT if request.auth is not None else ActorKind.OWNER


# Mounted after monitoring.api in config/urls.py: its literal monitor/status route comes first.
urlpatterns = [
    path("admin/positions/<id:position_id>/close", PositionCloseView.as_view(), name="owner-position-close"),
    path(
        "admin/positions/<id:position_id>/test-breach",
        PositionBreachTestView.as_view(),
        name="owner-position-test-breach",
    ),
    path("signals/<id:signal_id>/exit", SignalExitView.as_view(), name="signal-exit"),
]
