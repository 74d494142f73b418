from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from monitoring.views import healthz

admin.site.site_header = "Veilstop owner console"
admin.site.site_title = "Veilstop"
admin.site.index_title = "Signals, positions and devices"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("healthz", healthz, name="healthz"),
    path("", include("django_prometheus.urls")),  # /metrics
]
