"""The EA protocol: one view per operation, every query scoped by ``request.auth`` (the device)."""

from __future__ import annotations

import time

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from core import wake
from ea_gateway.api import serializers as io
from ea_gateway.api.authentication import HMACDeviceAuthentication
from ea_gateway.api.negotiation import JSON, DeviceContentNegotiation
from ea_gateway.api.permissions import IsEADevice, IsFeedDevice
from ea_gateway.api.throttling import DeviceRateThrottle
from ea_gateway.models import Device
from ea_gateway.services import Fill, approval_ack, approvals_for_ea, device_actor, device_heartbeat
from ea_gateway.wake import Fetched, long_poll, peer_closed
from ea_protocol.signing import HEADER_SERVER_TIME
from positions.close_delivery import (
    CloseResult,
    close_command_ack,
    close_commands_lease,
)
from positions.quotes import Quote, quotes_ingest


class ErrorDetail(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(
        child=serializers.JSONField(),
        required=False,
        help_text="field name -> list of messages; for a list or nested input, an object of the same shape",
    )


class ErrorOutput(serializers.Serializer):
    """The one error shape (core.errors): 401 is the same body for every failure."""

    error = ErrorDetail()


_ERROR = OpenApiResponse(ErrorOutput)
ERRORS = {401: _ERROR, 403: _ERROR, 413: _ERROR, 429: _ERROR, 503: _ERROR}
WRITE_ERRORS = {**ERRORS, 400: _ERROR, 404: _ERROR, 409: _ERROR}
WAIT = OpenApiParameter(
    "wait",
    {"type": "integer", "minimum": 0, "maximum": io.LONG_POLL_MAX_SECONDS},
    description=(
        f"Long-poll: answer as soon as something is deliverable, or with an empty list after this many "
        f"seconds (0 to {io.LONG_POLL_MAX_SECONDS}; default 0, answer at once). Anything else is a 400."
    ),
)


def _nothing(key: str) -> HttpResponse:
    """``{key: []}``, the answer to an idle EA's request, exactly as DRF's JSON renderer
    writes it, without a serializer or a renderer."""
    return HttpResponse(b'{"%s":[]}' % key.encode(), content_type=JSON)


class DeviceAPIView(APIView):
    authentication_classes = [HMACDeviceAuthentication]
    permission_classes = [IsEADevice]
    throttle_classes = [DeviceRateThrottle]
    content_negotiation_class = DeviceContentNegotiation

    def finalize_response(self, request, response, *args, **kwargs):
        # On every answer, so an EA whose clock drifted can correct it (docs/ea-protocol.md).
        response = super().finalize_response(request, response, *args, **kwargs)
        response[HEADER_SERVER_TIME] = str(int(time.time()))
        return response


class LongPollView(DeviceAPIView):
    """``?wait=N`` (``ea_gateway.wake``): the answer waits for something to deliver."""

    def wake_topic(self, device: Device) -> tuple[str, int]:
        raise NotImplementedError

    def pending_topic(self, request: Request, device: Device) -> tuple[str, int] | None:
        """For the authentication: the wake topic whose "anything pending?" it may read in
        its own round trip (``ea_gateway.wake`` step 1), for an answer without a wait only."""
        if not request._request.META.get("QUERY_STRING"):  # an idle EA's request: no QueryDict to build
            return self.wake_topic(device)
        return self.wake_topic(device) if request.query_params.getlist("wait") in ([], ["0"]) else None

    def waited(self, request: Request, *, fetch) -> list:
        wait = 0  # no query string: nothing to validate (an idle EA's request, the common one)
        if request.META.get("QUERY_STRING"):
            query = io.WaitQuery(data=request.query_params)
            query.is_valid(raise_exception=True)
            wait = query.validated_data.get("wait", 0)
        kind, key = self.wake_topic(request.auth)
        return long_poll(
            kind=kind,
            key=key,
            wait=wait,
            fetch=fetch,
            client_gone=lambda: peer_closed(request.META.get("gunicorn.socket")),
            checked=getattr(request.user, "pending", None),
        )


class PollView(LongPollView):
    def wake_topic(self, device: Device) -> tuple[str, int]:
        return wake.CLIENT, device.client_id

    @extend_schema(
        parameters=[WAIT],
        responses={200: io.PollOutput, 400: _ERROR, **ERRORS},
        tags=["ea"],
        operation_id="client_poll",
    )
    def get(self, request: Request) -> Response:
        device = request.auth
        approvals = self.waited(request, fetch=lambda: (approvals_for_ea(device=device), None))
        if not approvals:  # an idle EA: the output serializer would only copy its fields
            return _nothing("approvals")
        return Response(io.PollOutput({"approvals": approvals}).data)


class AckView(DeviceAPIView):
    @extend_schema(
        request=io.AckInput,
        responses={200: io.AckOutput, **WRITE_ERRORS},
        tags=["ea"],
        operation_id="client_ack",
    )
    def post(self, request: Request) -> Response:
        data = io.AckInput(data=request.data)
        data.is_valid(raise_exception=True)
        ack = data.validated_data
        fill = (
            Fill(broker_ticket=ack["broker_ticket"], entry_price=ack["entry_price"], volume=ack["volume"])
            if ack["status"] == "placed"
            else None
        )
        result = approval_ack(
            device=request.auth, approval_id=ack["approval_id"], fill=fill, error=ack.get("error", "")
        )
        body = {"approval_id": result.approval_id, "status": "placed" if result.placed else "failed"}
        if result.placed:
            body["position_id"] = result.position_id
        return Response(io.AckOutput(body).data)


class CloseCommandsView(LongPollView):
    def wake_topic(self, device: Device) -> tuple[str, int]:
        return wake.DEVICE, device.pk

    @extend_schema(
        parameters=[WAIT],
        responses={200: io.CloseCommandsOutput, 400: _ERROR, **ERRORS},
        tags=["ea"],
        operation_id="client_close_commands",
    )
    def get(self, request: Request) -> Response:
        device_id = request.auth.pk

        def deliver() -> Fetched:
            limit = settings.CLOSE_COMMANDS_PER_POLL
            lease = close_commands_lease(device_id=device_id, limit=limit)
            if len(lease.commands) == limit:  # maybe more: the next request looks
                return Fetched(lease.commands, None)
            # All that was due, leased: "nothing pending" holds until a wake or the next due.
            return Fetched(lease.commands, lease.next_due_in, drained=True)

        commands = self.waited(request, fetch=deliver)
        if not commands:
            return _nothing("commands")
        return Response(io.CloseCommandsOutput({"commands": commands}).data)


class CloseAckView(DeviceAPIView):
    @extend_schema(
        request=io.CloseAckInput,
        responses={200: io.CloseAckOutput, **WRITE_ERRORS},
        tags=["ea"],
        operation_id="client_close_ack",
    )
    def post(self, request: Request) -> Response:
        data = io.CloseAckInput(data=request.data)
        data.is_valid(raise_exception=True)
        ack = data.validated_data
        executed = ack["status"] == "executed"
        result = CloseResult(
            executed=executed,
            close_price=ack.get("close_price") if executed else None,
            closed_volume=ack.get("closed_volume") if executed else None,
            error=ack.get("error", ""),
        )
        command = close_command_ack(
            command_id=ack["command_id"],
            device_id=request.auth.pk,
            result=result,
            by=device_actor(request.auth),
        )
        return Response(io.CloseAckOutput({"command_id": command.pk, "status": command.status}).data)


class HeartbeatView(DeviceAPIView):
    @extend_schema(
        request=io.HeartbeatInput,
        responses={200: io.HeartbeatOutput, **WRITE_ERRORS},
        tags=["ea"],
        operation_id="client_heartbeat",
    )
    def post(self, request: Request) -> Response:
        data = io.HeartbeatInput(data=request.data)
        data.is_valid(raise_exception=True)
        device_heartbeat(device=request.auth, **data.validated_data)
        return Response(io.HeartbeatOutput({"server_time": int(time.time())}).data)


class FeedQuotesView(DeviceAPIView):
    permission_classes = [IsFeedDevice]

    @extend_schema(
        request=io.QuotesInput,
        responses={200: io.QuotesOutput, **WRITE_ERRORS},
        tags=["feed"],
        operation_id="feed_quotes",
    )
    def post(self, request: Request) -> Response:
        data = io.QuotesInput(data=request.data)
        data.is_valid(raise_exception=True)
        quotes = [Quote(**quote) for quote in data.validated_data["quotes"]]
        result = quotes_ingest(quotes=quotes, source=request.auth.key_id)
        return Response(io.QuotesOutput({"accepted": result.accepted, "ignored": result.ignored}).data)
