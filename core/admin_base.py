"""What every read-only owner-console table shares."""

from __future__ import annotations

from django.contrib import admin
from unfold.admin import ModelAdmin

from core.paginator import EstimatedCountPaginator


class ReadOnlyAdmin(ModelAdmin):
    """A table the owner reads but never edits through a form: its state changes go
    through services (closes, acks, audit writes), and it may grow large."""

    show_full_result_count = False
    paginator = EstimatedCountPaginator
    # Facet counts are a COUNT per filter choice over the whole table.
    show_facets = admin.ShowFacets.NEVER

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
