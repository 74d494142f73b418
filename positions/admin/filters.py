"""List filters for the positions console's tables."""

from __future__ import annotations

from urllib.parse import parse_qsl

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import PAGE_VAR
from django.db import models
from django.db.models import QuerySet

from positions.choices import LIVE_STATUSES
from signals_app.models import Client, Signal


class IdInputFilter(admin.SimpleListFilter):
    """Filter on a related row typed in by id. Clients and signals are too many to list
    as links, and listing them would query them all on every page of the changelist."""

    template = "admin/positions/id_input_filter.html"
    lookup: str  # the queryset lookup the id filters on, e.g. "client_id"
    related_model: type[models.Model]

    def lookups(self, request, model_admin) -> list:
        return []

    def has_output(self) -> bool:
        return True

    def selected_id(self) -> int | None:
        value = (self.value() or "").strip()
        if not value:
            return None
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise IncorrectLookupParameters(f"{self.parameter_name} must be a numeric id")
        return int(value)

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        selected = self.selected_id()
        return queryset if selected is None else queryset.filter(**{self.lookup: selected})

    def choices(self, changelist):
        selected = self.selected_id()
        remaining = changelist.get_query_string(remove=[self.parameter_name, PAGE_VAR])
        related = self.related_model.objects.filter(pk=selected).first() if selected is not None else None
        yield {
            "parameter": self.parameter_name,
            "value": "" if selected is None else selected,
            "hidden": parse_qsl(remaining.lstrip("?"), keep_blank_values=True),
            "clear_query_string": remaining or "?",
            "selected_label": str(related) if related else ("no such row" if selected is not None else ""),
        }


class ClientIdFilter(IdInputFilter):
    title = "client (id)"
    parameter_name = "client"
    lookup = "client_id"
    related_model = Client


class SignalIdFilter(IdInputFilter):
    title = "signal (id)"
    parameter_name = "signal"
    lookup = "signal_id"
    related_model = Signal


class CommandClientIdFilter(ClientIdFilter):
    lookup = "position__client_id"


class CommandSignalIdFilter(SignalIdFilter):
    lookup = "position__signal_id"


class AcknowledgedFilter(admin.SimpleListFilter):
    title = "acknowledged"
    parameter_name = "acknowledged"

    def lookups(self, request, model_admin) -> list[tuple[str, str]]:
        return [("no", "Open (not acknowledged)"), ("yes", "Acknowledged")]

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        if self.value() == "no":
            return queryset.filter(acknowledged_at__isnull=True)
        if self.value() == "yes":
            return queryset.filter(acknowledged_at__isnull=False)
        return queryset


class StateFilter(admin.SimpleListFilter):
    """Live positions (still at the broker) unless asked otherwise: closed ones, or all.
    A status picked in the status filter is shown as asked, live or not."""

    title = "state"
    parameter_name = "state"
    LIVE_TITLE = "Live (open, closing, close failed)"

    def lookups(self, request, model_admin) -> list:
        return [("closed", "Closed"), ("all", "All")]

    def choices(self, changelist):
        yield {
            "selected": self.value() is None,
            "query_string": changelist.get_query_string(remove=[self.parameter_name]),
            "display": self.LIVE_TITLE,
        }
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    @classmethod
    def lists_live_only(cls, request) -> bool:
        """The list shows live positions only: the default state, or a live status picked."""
        if cls.parameter_name in request.GET:
            return False
        status = request.GET.get("status__exact")
        return status is None or status in LIVE_STATUSES

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if value not in (None, "closed", "all"):
            raise IncorrectLookupParameters("state is closed or all")
        if value == "all" or "status__exact" in request.GET:
            return queryset
        if value == "closed":
            return queryset.exclude(status__in=LIVE_STATUSES)
        return queryset.filter(status__in=LIVE_STATUSES)
