from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

import core.converters  # noqa: F401  (registers <id:...> before the apps' URLs load)
from monitoring.guards_page import guard_rearm, guards_page
from monitoring.views import healthz, monitor_dashboard
from staff_auth.admin_site import require_two_factor
from staff_auth.views import two_factor_enroll, two_factor_verify

# The site's header, title and "view site" link (the monitor dashboard): UNFOLD in
# config/settings_console.py, which the theme's admin site reads.
admin.site.index_title = "Signals, positions and devices"
# STAFF_TWO_FACTOR on: every admin view wants a session that passed the code step.
require_two_factor(admin.site)

urlpatterns = [
    # The EAs' and the feed's paths first: the busiest requests resolve on the first
    # patterns tried (their paths are literal: nothing below answers them).
    path("api/v1/", include("ea_gateway.api.urls")),
    # Before admin.site.urls, whose catch-all would otherwise answer. admin_view: staff only,
    # CSRF, never cached, like every console page.
    path("admin/monitor/", admin.site.admin_view(monitor_dashboard), name="monitor-dashboard"),
    path("admin/guards/", admin.site.admin_view(guards_page), name="guards-page"),
    path("admin/guards/<id:client_id>/rearm/", admin.site.admin_view(guard_rearm), name="guard-rearm"),
    # The code step of a login and the enrolment of an authenticator: a session that passed
    # only the password step reaches these (staff_auth.middleware), so they are not admin_view.
    path("admin/two-factor/", two_factor_verify, name="two-factor-verify"),
    path("admin/two-factor/enroll/", two_factor_enroll, name="two-factor-enroll"),
    path("admin/", admin.site.urls),
    path("", RedirectView.as_view(pattern_name="monitor-dashboard"), name="home"),
    path("healthz", healthz, name="healthz"),
    path("api/v1/", include("signals_app.api")),
    path("api/v1/", include("signals_app.telegram_webhook")),
    # monitoring.api before positions.api: its literal admin/positions/monitor/status is
    # matched before positions' admin/positions/<id:position_id>/... routes.
    path("api/v1/", include("monitoring.api")),
    path("api/v1/", include("positions.api")),
    path("api/v1/", include("positions.guards.api")),
    path("api/v1/schema", SpectacularAPIView.as_view(), name="schema"),
    path("api/v1/docs", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("django_prometheus.urls")),  # /metrics
]
