"""A URL map that mounts the device API twice (test_browser_middleware): the browser
middleware skips only the paths reverse() gives, so the check must refuse it."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("api/v1/", include("ea_gateway.api.urls")),
    path("api/v2/", include("ea_gateway.api.urls")),
]
