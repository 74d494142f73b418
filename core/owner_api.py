"""What every view of the owner's REST API shares, whichever app serves it: who may call
it and how its errors are documented.

Staff only, authenticated with a DRF token (``manage.py drf_create_token <user>``) or the
admin session (CSRF enforced, as in the admin). Errors are the one shape of core.errors.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.permissions import IsAdminUser
from rest_framework.views import APIView


class OwnerErrorDetail(serializers.Serializer):
    code = serializers.CharField()
    message = serializers.CharField()
    fields = serializers.DictField(
        child=serializers.JSONField(), required=False, help_text="field name -> list of messages"
    )


class OwnerErrorOutput(serializers.Serializer):
    """The one error shape of core.errors. The EA API documents the same shape under
    its own component; that one belongs to the EA protocol, which this app does not import."""

    error = OwnerErrorDetail()


ERROR = OpenApiResponse(OwnerErrorOutput)
READ_ERRORS = {401: ERROR, 403: ERROR}
POSITION_ERRORS = {**READ_ERRORS, 400: ERROR, 404: ERROR}


class OwnerAPIView(APIView):
    # Token first: a call without credentials gets 401 with WWW-Authenticate, not 403.
    authentication_classes = [TokenAuthentication, SessionAuthentication]
    permission_classes = [IsAdminUser]
