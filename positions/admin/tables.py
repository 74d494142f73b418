"""The positions console's tables: read-only, large, changed only through services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet

from core import formatting
from core.admin_base import ReadOnlyAdmin
from core.exports import BoundedExportMixin, date_range_filter
from positions.admin.exports import CloseCommandResource, PositionResource
from positions.admin.filters import (
    AcknowledgedFilter,
    ClientIdFilter,
    CommandClientIdFilter,
    CommandSignalIdFilter,
    SignalIdFilter,
    StateFilter,
)
from positions.admin.live import LiveBookMixin
from positions.admin.owner_tools import OwnerToolsMixin
from positions.admin.signal_chart import SignalChartMixin
from positions.alerts import alerts_acknowledge
from positions.models import Alert, CloseCommand, OpenPosition
from signals_app.events import Actor
from signals_app.selectors import TRIGGER_QUOTE, user_sees_hidden_levels


@admin.register(OpenPosition)
class OpenPositionAdmin(BoundedExportMixin, LiveBookMixin, SignalChartMixin, OwnerToolsMixin, ReadOnlyAdmin):
    """The owner tools (manual close, test-breach) come from ``OwnerToolsMixin``: its
    ``get_urls()`` adds their views and ``close_selected`` is its action. A signal's chart
    comes from ``SignalChartMixin``; the live columns and the live book page from
    ``LiveBookMixin`` (owner only)."""

    list_display = [
        "id",
        "client",
        "instrument",
        "side",
        "entry",
        "lots_open",
        "broker_ticket",
        "status",
        "opened_at",
        "close",
        "pnl",
    ]
    list_filter = [
        StateFilter,
        date_range_filter("opened_at", "opened (UTC)"),
        "status",
        "instrument",
        "side",
        ClientIdFilter,
        SignalIdFilter,
    ]
    resource_classes = [PositionResource]
    list_select_related = ["client", "instrument"]
    raw_id_fields = ["signal", "approval", "client", "device"]
    search_fields = ["=id", "=broker_ticket", "client__name", "=signal__id"]
    date_hierarchy = "opened_at"
    actions = ["close_selected"]
    change_form_template = "admin/positions/openposition/change_form.html"
    # The export's list template with the live book's link among the object tools.
    import_export_change_list_template = "admin/positions/openposition/change_list.html"

    @admin.display(description="entry", ordering="entry_price")
    def entry(self, position: OpenPosition) -> str:
        return formatting.price(position.entry_price, position.instrument.digits)

    @admin.display(description="lots open", ordering="remaining_volume")
    def lots_open(self, position: OpenPosition) -> str:
        return formatting.volume(position.remaining_volume)

    @admin.display(description="close", ordering="close_price")
    def close(self, position: OpenPosition) -> str:
        return formatting.price(position.close_price, position.instrument.digits)

    @admin.display(description="realized P&L", ordering="realized_pnl")
    def pnl(self, position: OpenPosition) -> str:
        return formatting.money(position.realized_pnl, position.instrument.quote_currency)


@admin.register(CloseCommand)
class CloseCommandAdmin(BoundedExportMixin, ReadOnlyAdmin):
    list_display = ["id", "position", "device", "reason", "status", "attempts", "created_at", "completed_at"]
    list_filter = [
        date_range_filter("created_at", "queued (UTC)"),
        "status",
        "reason",
        CommandClientIdFilter,
        CommandSignalIdFilter,
    ]
    resource_classes = [CloseCommandResource]
    list_select_related = ["position__instrument", "position__client", "device"]
    raw_id_fields = ["position", "device"]
    search_fields = ["=id", "=position__id"]

    date_hierarchy = "created_at"

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if user_sees_hidden_levels(request.user):
            return fields
        # The quote that triggered the close sits on the level it crossed.
        return [name for name in fields if name != TRIGGER_QUOTE]


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    """Raised by the scanner and the sweeps; acknowledging is the action, which audits it."""

    list_display = ["kind", "message", "occurrences", "last_seen_at", "acknowledged", "acknowledged_by"]
    list_filter = ["kind", AcknowledgedFilter]
    search_fields = ["message", "dedupe_key"]
    fields = [
        "kind",
        "message",
        "dedupe_key",
        "occurrences",
        "created_at",
        "last_seen_at",
        "instrument",
        "position",
        "device",
        "acknowledged_at",
        "acknowledged_by",
    ]
    readonly_fields = fields
    actions = ["acknowledge"]

    @admin.display(description="acknowledged", boolean=True, ordering="acknowledged_at")
    def acknowledged(self, alert: Alert) -> bool:
        return alert.acknowledged_at is not None

    @admin.action(description="Acknowledge selected alerts", permissions=["view"])
    def acknowledge(self, request, queryset: QuerySet) -> None:
        selected = list(queryset.values_list("pk", flat=True))
        done = alerts_acknowledge(alert_ids=selected, by=Actor.user(request.user))
        text = f"{len(done)} alert(s) acknowledged"
        if len(selected) > len(done):
            text += f"; {len(selected) - len(done)} already acknowledged"
        self.message_user(request, text + ".", messages.SUCCESS if done else messages.WARNING)
