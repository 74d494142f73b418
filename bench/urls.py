"""The product's URLs plus one bare DRF endpoint, for ``bench/ea_bench.py`` only."""

from __future__ import annotations

from django.urls import path
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.urls import urlpatterns as product_urlpatterns

BARE_PATH = "bench/bare"


class BareView(APIView):
    """The floor an EA endpoint is measured against: DRF and the product's middleware,
    nothing else (no authentication, no throttle, no query)."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


urlpatterns = [path(BARE_PATH, BareView.as_view(), name="bench-bare"), *product_urlpatterns]
