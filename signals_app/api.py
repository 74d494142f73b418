"""The strategy bot's API: create and publish signals with their hidden levels.

Owner accounts only (staff), authenticated with DRF tokens
(``manage.py drf_create_token <user>``) or the admin session.
"""

from __future__ import annotations

from decimal import Decimal

from django.urls import path
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.permissions import IsAdminUser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core.serializers import StrictInputSerializer
from signals_app.choices import ActorKind, Side
from signals_app.events import Actor
from signals_app.hidden_levels_schema import HIDDEN_LEVELS_SCHEMA, PAYLOAD_SCHEMA
from signals_app.models import MAX_TTL_MINUTES
from signals_app.selectors import signal_approval_counts, signal_get_for_owner, user_sees_hidden_levels
from signals_app.services import signal_submit


@extend_schema_field(HIDDEN_LEVELS_SCHEMA)
class HiddenLevelsField(serializers.DictField):
    """Parsed by the service (signals_app.hidden_levels), with the side rules and the payload."""


@extend_schema_field(PAYLOAD_SCHEMA)
class PayloadField(serializers.DictField):
    """Checked by the service (signals_app.payload_guard) against the hidden levels."""


class SignalCreateInput(StrictInputSerializer):
    instrument = serializers.CharField(max_length=20, help_text="a configured instrument's symbol")
    side = serializers.ChoiceField(choices=Side.choices)
    entry_price = serializers.DecimalField(
        max_digits=20, decimal_places=10, min_value=Decimal("0.0000000001"), coerce_to_string=True
    )
    ttl_minutes = serializers.IntegerField(min_value=1, max_value=MAX_TTL_MINUTES)
    payload = PayloadField(required=False, default=dict)
    owner_only = HiddenLevelsField()
    publish = serializers.BooleanField(default=True)


class SignalOwnerOutput(serializers.Serializer):
    id = serializers.IntegerField()
    instrument = serializers.CharField(source="instrument.symbol")
    side = serializers.CharField()
    entry_price = serializers.DecimalField(max_digits=20, decimal_places=10, normalize_output=True)
    ttl_minutes = serializers.IntegerField()
    status = serializers.CharField()
    payload = serializers.DictField()
    owner_only = serializers.SerializerMethodField()
    approvals = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    published_at = serializers.DateTimeField(allow_null=True)

    def get_owner_only(self, signal) -> dict | None:
        # Staff without the hidden-levels permission see that levels exist, not what they are.
        request = self.context["request"]
        return signal.owner_only if user_sees_hidden_levels(request.user) else None

    def get_approvals(self, signal) -> dict[str, int]:
        return signal_approval_counts(signal=signal)


def _actor(request: Request) -> Actor:
    kind = ActorKind.BOT if request.auth is not None else ActorKind.OWNER
    return Actor.user(request.user, kind=kind)


class SignalCreateView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(request=SignalCreateInput, responses={201: SignalOwnerOutput}, tags=["owner"])
    def post(self, request: Request) -> Response:
        data = SignalCreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        signal = signal_submit(**data.validated_data, by=_actor(request))
        output = SignalOwnerOutput(signal, context={"request": request})
        return Response(output.data, status=status.HTTP_201_CREATED)


class SignalDetailView(APIView):
    permission_classes = [IsAdminUser]

    @extend_schema(responses={200: SignalOwnerOutput}, tags=["owner"])
    def get(self, request: Request, signal_id: int) -> Response:
        signal = signal_get_for_owner(signal_id=signal_id)
        if signal is None:
            raise NotFound()
        return Response(SignalOwnerOutput(signal, context={"request": request}).data)


urlpatterns = [
    path("signals", SignalCreateView.as_view(), name="signal-create"),
    path("signals/<id:signal_id>", SignalDetailView.as_view(), name="signal-detail"),
]
