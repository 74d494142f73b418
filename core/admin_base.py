"""What every owner-console table shares."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import FieldDoesNotExist
from django.db import models
from django.db.models.constants import LOOKUP_SEP
from fernet_fields.fields import EncryptedField
from unfold.admin import ModelAdmin

from core.paginator import EstimatedCountPaginator

# Pattern lookups a query string could send with a broken pattern (a database error).
REFUSED_LOOKUPS = frozenset({"regex", "iregex"})


class ConsoleAdmin(ModelAdmin):
    """Every console table: only the lookups its filters need.

    Django's changelist accepts a lookup on any of the model's own fields from the query
    string, keys inside a JSON field included (``?trigger_quote__bid__startswith=1.08``):
    a filter answered by a row count would reveal, digit by digit, what the page hides
    from staff without ``view_hidden_levels`` (trigger quotes, audit data). Lookups into
    a JSON or encrypted field, on this model or across a relation, and pattern lookups
    (a bad pattern is a database error, not a filter) are refused: Django answers 400."""

    def lookup_allowed(self, lookup, value, request=None) -> bool:
        model = self.model
        parts = lookup.split(LOOKUP_SEP)
        if REFUSED_LOOKUPS & set(parts):
            return False
        for part in parts:
            try:
                field = model._meta.get_field(part)
            except FieldDoesNotExist:
                break
            if isinstance(field, models.JSONField | EncryptedField):
                return False
            if not field.is_relation or field.related_model is None:
                break
            model = field.related_model
        return super().lookup_allowed(lookup, value, request)


class ReadOnlyAdmin(ConsoleAdmin):
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
