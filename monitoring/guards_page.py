"""The owner's guards page (``/admin/guards/``): every client's risk guard (equity, peak,
drawdown and daily loss against their limits, armed / tripped / stale) with re-arm, and
every instrument's market guard (spread against its median, quote age, held / closing)
with a link to its mode. The same figures as ``GET /api/v1/guards/status``."""

from __future__ import annotations

import logging

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.views.decorators.http import require_POST, require_safe
from redis.exceptions import RedisError

from core.errors import DomainError
from positions.guard_status import instruments_guard_status
from positions.guards.selectors import guards_status_clients
from positions.guards.trip import client_guard_rearm
from signals_app.events import Actor
from signals_app.models import Client

logger = logging.getLogger(__name__)

VIEW = "positions.view_clientguard"
REARM = "positions.rearm_clientguard"


@require_safe
def guards_page(request: HttpRequest) -> TemplateResponse:
    if not request.user.has_perm(VIEW):
        raise PermissionDenied
    try:
        instruments = instruments_guard_status()
    except RedisError as error:  # the quotes live there: the clients' half is still shown
        logger.warning("guards page: Redis unreachable: %s", error)
        instruments = None
    context = {
        **admin.site.each_context(request),
        "title": "Risk guards",
        "clients": guards_status_clients(),
        "instruments": instruments,
        "may_rearm": request.user.has_perm(REARM),
    }
    return TemplateResponse(request, "admin/monitoring/guards.html", context)


@require_POST
def guard_rearm(request: HttpRequest, client_id: int) -> HttpResponse:
    """Re-arm one client's tripped guard, then back to the page (post/redirect/get)."""
    if not request.user.has_perm(REARM):
        raise PermissionDenied
    client = get_object_or_404(Client, pk=client_id)
    try:
        client_guard_rearm(client=client, by=Actor.user(request.user))
    except DomainError as error:
        messages.warning(request, error.message)
    else:
        messages.success(request, f"{client.name}: risk guard re-armed; new trades resume.")
    return redirect(reverse("guards-page"))
