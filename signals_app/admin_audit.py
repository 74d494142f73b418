"""The audit log in the console: read-only, exported as CSV or XLSX (``core.exports``),
its encrypted part and the quotes that triggered closes only for those who may see the
hidden levels. Registered when ``signals_app.admin`` loads."""

from __future__ import annotations

import json

from django.contrib import admin
from import_export import resources
from unfold.decorators import display

from core.admin_base import ReadOnlyAdmin
from core.exports import BoundedExportMixin, date_range_filter
from signals_app.models import AuditEvent
from signals_app.selectors import audit_data_shown, user_sees_hidden_levels


class AuditEventResource(resources.ModelResource):
    """The audit log as exported: its public data only, never the encrypted part nor the
    quote that triggered a close (it sits on a hidden level; the event's page shows it to
    those who may see the levels)."""

    class Meta:
        model = AuditEvent
        fields = ["id", "occurred_at", "action", "subject_type", "subject_id", "actor_kind", "actor", "data"]
        export_order = fields

    def dehydrate_data(self, event: AuditEvent) -> str:
        return json.dumps(audit_data_shown(event.data, sees_levels=False), sort_keys=True)


@admin.register(AuditEvent)
class AuditEventAdmin(BoundedExportMixin, ReadOnlyAdmin):
    list_display = ["occurred_at", "action", "subject_type", "subject_id", "by_kind", "actor"]
    list_filter = [date_range_filter("occurred_at", "when (UTC)"), "action", "subject_type", "actor_kind"]
    resource_classes = [AuditEventResource]
    search_fields = ["=subject_id", "actor"]
    date_hierarchy = "occurred_at"

    @display(description="actor kind", ordering="actor_kind", label=True)
    def by_kind(self, event: AuditEvent) -> str:
        return event.actor_kind

    def get_fields(self, request, obj=None):
        fields = ["occurred_at", "action", "subject_type", "subject_id", "actor_kind", "actor", "shown_data"]
        return fields + (["secret"] if user_sees_hidden_levels(request.user) else [])

    def get_object(self, request, object_id, from_field=None):
        event = super().get_object(request, object_id, from_field)
        if event is not None:  # the reader decides what of its data is shown
            event.sees_levels = user_sees_hidden_levels(request.user)
        return event

    @admin.display(description="data")
    def shown_data(self, event: AuditEvent) -> str:
        shown = audit_data_shown(event.data, sees_levels=getattr(event, "sees_levels", False))
        return json.dumps(shown, indent=1, sort_keys=True)

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj)

    @admin.display(description="secret data (decrypted)")
    def secret(self, event: AuditEvent) -> str:
        return json.dumps(event.secret_data, indent=1) if event.secret_data else "-"
