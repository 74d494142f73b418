"""The positions console's tables: read-only, large, changed only through services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.utils.html import format_html
from unfold.decorators import display

from core import formatting
from core.admin_base import ReadOnlyAdmin
from core.badges import badge
from core.exports import BoundedExportMixin, date_range_filter
from positions.admin.badges import (
    ALERT_COLOURS,
    ALERT_KIND_WORDS,
    COMMAND_COLOURS,
    COMMAND_WORDS,
    POSITION_COLOURS,
    POSITION_WORDS,
    REASON_WORDS,
)
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

    # Fits 1366 px beside the sidebar: the status as a badge; the whole position on its page.
    list_display = [
        "id",
        "client_name",
        "trade",
        "entry",
        "lots_open",
        "ticket",
        "state",
        "opened",
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

    @admin.display(description="client", ordering="client__name")
    def client_name(self, position: OpenPosition) -> str:
        # A long name ends in an ellipsis (console.css), whole in its tooltip.
        name = position.client.name
        return format_html('<span class="vs-name" title="{}">{}</span>', name, name)

    @admin.display(description="trade", ordering="instrument__symbol")
    def trade(self, position: OpenPosition) -> str:
        return f"{position.instrument.symbol} {position.side}"

    @display(description="status", ordering="status", label=POSITION_COLOURS)
    def state(self, position: OpenPosition) -> tuple[str, str]:
        return badge(position.status, POSITION_WORDS)

    @admin.display(description="entry", ordering="entry_price")
    def entry(self, position: OpenPosition) -> str:
        return formatting.price(position.entry_price, position.instrument.digits)

    @admin.display(description="opened (UTC)", ordering="opened_at")
    def opened(self, position: OpenPosition) -> str:
        return formatting.list_timestamp(position.opened_at)

    @admin.display(description="ticket", ordering="broker_ticket")
    def ticket(self, position: OpenPosition) -> str:
        return position.broker_ticket

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
    list_display = ["id", "of_position", "client", "why", "state", "attempts", "queued", "completed"]
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

    @admin.display(description="queued (UTC)", ordering="created_at")
    def queued(self, command: CloseCommand) -> str:
        return formatting.list_timestamp(command.created_at)

    @admin.display(description="completed (UTC)", ordering="completed_at")
    def completed(self, command: CloseCommand) -> str:
        return formatting.list_timestamp(command.completed_at)

    @admin.display(description="position", ordering="position_id")
    def of_position(self, command: CloseCommand) -> str:
        return f"#{command.position_id} {command.position.instrument.symbol}"

    @admin.display(description="client", ordering="position__client__name")
    def client(self, command: CloseCommand) -> str:
        return command.position.client.name

    @display(description="reason", ordering="reason", label=True)
    def why(self, command: CloseCommand) -> str:
        return REASON_WORDS.get(command.reason, command.reason)

    @display(description="status", ordering="status", label=COMMAND_COLOURS)
    def state(self, command: CloseCommand) -> tuple[str, str]:
        return badge(command.status, COMMAND_WORDS)

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if user_sees_hidden_levels(request.user):
            return fields
        # The quote that triggered the close sits on the level it crossed.
        return [name for name in fields if name != TRIGGER_QUOTE]


@admin.register(Alert)
class AlertAdmin(ReadOnlyAdmin):
    """Raised by the scanner and the sweeps; acknowledging is the action, which audits it."""

    list_display = ["what", "message", "occurrences", "last_seen_at", "state", "acknowledged_by"]
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

    @display(description="kind", ordering="kind", label=True)
    def what(self, alert: Alert) -> str:
        return ALERT_KIND_WORDS.get(alert.kind, alert.kind.replace("_", " "))

    @display(description="state", ordering="acknowledged_at", label=ALERT_COLOURS)
    def state(self, alert: Alert) -> str:
        return "open" if alert.acknowledged_at is None else "acknowledged"

    @admin.action(description="Acknowledge selected alerts", permissions=["view"])
    def acknowledge(self, request, queryset: QuerySet) -> None:
        selected = list(queryset.values_list("pk", flat=True))
        done = alerts_acknowledge(alert_ids=selected, by=Actor.user(request.user))
        text = f"{len(done)} alert(s) acknowledged"
        if len(selected) > len(done):
            text += f"; {len(selected) - len(done)} already acknowledged"
        self.message_user(request, text + ".", messages.SUCCESS if done else messages.WARNING)
