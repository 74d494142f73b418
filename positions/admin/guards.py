"""The clients' risk guards in the console: read-only, re-armed by an action that calls
the service (``positions.guards.trip.client_guard_rearm``), which audits it. Re-arming
lets the client trade again, so it takes its own permission (``rearm_clientguard``),
not only the table's view permission."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from unfold.decorators import display

from core.admin_base import ReadOnlyAdmin
from core.badges import DANGER, SUCCESS
from core.errors import DomainError
from positions.choices import GuardState
from positions.guards.trip import client_guard_rearm
from positions.models import ClientGuard
from signals_app.events import Actor

GUARD_COLOURS = {GuardState.ARMED: SUCCESS, GuardState.TRIPPED: DANGER}


@admin.register(ClientGuard)
class ClientGuardAdmin(ReadOnlyAdmin):
    fields = ["client", "state", "tripped_at", "tripped_reason", "rearmed_at", "rearmed_by"]
    readonly_fields = fields
    list_display = ["client", "guard", "tripped_at", "tripped_reason", "rearmed_at", "rearmed_by"]
    list_filter = ["state"]
    list_select_related = ["client"]
    search_fields = ["client__name"]
    actions = ["rearm"]

    @display(description="state", ordering="state", label=GUARD_COLOURS)
    def guard(self, guard: ClientGuard) -> str:
        return guard.state

    def has_rearm_permission(self, request) -> bool:
        return request.user.has_perm("positions.rearm_clientguard")

    @admin.action(description="Re-arm selected tripped guards (new trades resume)", permissions=["rearm"])
    def rearm(self, request, queryset: QuerySet) -> None:
        by = Actor.user(request.user)
        rearmed, refused = [], []
        for guard in queryset.select_related("client").order_by("pk"):
            try:
                client_guard_rearm(client=guard.client, by=by)
            except DomainError:
                refused.append(guard.client.name)
            else:
                rearmed.append(guard.client.name)
        if rearmed:
            self.message_user(request, f"Re-armed: {', '.join(rearmed)}.", messages.SUCCESS)
        if refused:
            self.message_user(
                request, f"Not tripped, left as they are: {', '.join(refused)}.", messages.WARNING
            )
