"""What the positions and close-commands exports hold (``core.exports``): one row per
position or command, prices at the instrument's digits, P&L at two decimals with its
currency. No hidden level is on either table; the quote that triggered a close (which
sits on its level) is not exported."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

from import_export import fields, resources

from core.exports import text_cell
from positions.models import CloseCommand, OpenPosition


def _at(value: Decimal | None, places: int) -> Decimal | None:
    return None if value is None else Decimal(value).quantize(Decimal(1).scaleb(-places), ROUND_HALF_EVEN)


class PositionResource(resources.ModelResource):
    client = fields.Field(attribute="client__name", column_name="client")
    instrument = fields.Field(attribute="instrument__symbol", column_name="instrument")
    currency = fields.Field(attribute="instrument__quote_currency", column_name="P&L currency")

    class Meta:
        model = OpenPosition
        fields = [
            "id",
            "signal",
            "client",
            "instrument",
            "side",
            "volume",
            "remaining_volume",
            "broker_ticket",
            "entry_price",
            "status",
            "opened_at",
            "closed_at",
            "close_price",
            "close_reason",
            "realized_pnl",
            "currency",
        ]
        export_order = fields

    def get_queryset(self):
        return super().get_queryset().select_related("client", "instrument")

    def dehydrate_broker_ticket(self, position: OpenPosition) -> str:
        return text_cell(position.broker_ticket)

    def dehydrate_entry_price(self, position: OpenPosition):
        return _at(position.entry_price, position.instrument.digits)

    def dehydrate_close_price(self, position: OpenPosition):
        return _at(position.close_price, position.instrument.digits)

    def dehydrate_realized_pnl(self, position: OpenPosition):
        return _at(position.realized_pnl, 2)


class CloseCommandResource(resources.ModelResource):
    client = fields.Field(attribute="position__client__name", column_name="client")
    instrument = fields.Field(attribute="position__instrument__symbol", column_name="instrument")
    broker_ticket = fields.Field(attribute="position__broker_ticket", column_name="broker_ticket")

    class Meta:
        model = CloseCommand
        fields = [
            "id",
            "position",
            "client",
            "instrument",
            "broker_ticket",
            "device",
            "volume",
            "reason",
            "status",
            "attempts",
            "requested_by",
            "created_at",
            "completed_at",
            "executed_price",
            "broker_error",
        ]
        export_order = fields

    executed_price = fields.Field(column_name="executed_price")
    broker_error = fields.Field(column_name="broker_error")

    def get_queryset(self):
        return super().get_queryset().select_related("position__client", "position__instrument")

    def dehydrate_executed_price(self, command: CloseCommand):
        # The EA's acknowledgement (never the quote that triggered the close: it sits on the level).
        price = (command.result or {}).get("close_price")
        return None if price is None else _at(Decimal(price), command.position.instrument.digits)

    def dehydrate_broker_ticket(self, command: CloseCommand) -> str:
        return text_cell(command.position.broker_ticket)

    def dehydrate_broker_error(self, command: CloseCommand) -> str:
        return text_cell((command.result or {}).get("error", ""))
