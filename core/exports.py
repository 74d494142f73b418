"""Exports of the console's large tables (positions, close commands, audit events) as CSV
or XLSX, through django-import-export: what the changelist shows under its filters (a
date range among them), never more than ``EXPORT_MAX_ROWS`` rows in one file. Export
only: nothing is ever imported into these tables. Prices leave at their instrument's
digits and money at two decimals, as numbers (a spreadsheet can add them up)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from urllib.parse import parse_qsl

from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import PAGE_VAR
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.shortcuts import redirect
from django.urls import reverse
from django.utils import timezone
from import_export.admin import ExportMixin
from import_export.formats.base_formats import CSV, XLSX
from unfold.contrib.import_export.forms import ExportForm

_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: str | None) -> str:
    """Text that came from outside (an EA's ticket, a broker's error) as a spreadsheet must
    read it: as text, never as a formula (OWASP CSV injection: a leading quote)."""
    text = value or ""
    return "'" + text if text.startswith(_FORMULA_START) else text


class BoundedExportMixin(ExportMixin):
    """CSV and XLSX of the filtered changelist; a selection over ``EXPORT_MAX_ROWS`` is
    refused with a message saying to narrow it (one file is built in the web request)."""

    export_formats = [CSV, XLSX]
    export_form_class = ExportForm  # every column: what a statement needs

    def export_action(self, request):
        if not self.has_export_permission(request):
            raise PermissionDenied  # before anything is counted: the refusal tells nothing
        try:
            rows = self.get_export_queryset(request).count() if request.method == "POST" else 0
        except IncorrectLookupParameters as error:  # a filter in the address that is no filter
            self.message_user(request, f"Nothing exported: {error}", messages.ERROR)
            return redirect(reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist"))
        if rows > settings.EXPORT_MAX_ROWS:
            self.message_user(
                request,
                f"{rows:,} rows selected: an export holds at most {settings.EXPORT_MAX_ROWS:,} "
                "(EXPORT_MAX_ROWS). Narrow the date range or the filters.",
                messages.ERROR,
            )
            return redirect(request.get_full_path())
        return super().export_action(request)


class DateRangeFilter(admin.SimpleListFilter):
    """From and to (inclusive) dates, in UTC, on ``field``: ``?<field>_from=2026-11-01``."""

    template = "admin/date_range_filter.html"
    field: str

    def __init__(self, request, params, model, model_admin):
        self.parameter_name = f"{self.field}_from"
        self.to_parameter = f"{self.field}_to"
        super().__init__(request, params, model, model_admin)
        if self.to_parameter in params:
            self.used_parameters[self.to_parameter] = params.pop(self.to_parameter)[-1]

    def lookups(self, request, model_admin) -> list:
        return []

    def has_output(self) -> bool:
        return True

    def expected_parameters(self) -> list[str]:
        return [self.parameter_name, self.to_parameter]

    def _day(self, name: str) -> date | None:
        value = (self.used_parameters.get(name) or "").strip()
        if not value:
            return None
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise IncorrectLookupParameters(f"{name} must be a date, YYYY-MM-DD") from None

    def queryset(self, request, queryset: QuerySet) -> QuerySet:
        start, end = self._day(self.parameter_name), self._day(self.to_parameter)
        if start is not None:
            queryset = queryset.filter(**{f"{self.field}__gte": _midnight(start)})
        if end is not None:
            try:
                queryset = queryset.filter(**{f"{self.field}__lt": _midnight(end + timedelta(days=1))})
            except OverflowError:  # 9999-12-31: there is no day after it
                raise IncorrectLookupParameters(f"{self.to_parameter} is past the last date") from None
        return queryset

    def choices(self, changelist):
        remaining = changelist.get_query_string(remove=[self.parameter_name, self.to_parameter, PAGE_VAR])
        yield {
            "from_parameter": self.parameter_name,
            "to_parameter": self.to_parameter,
            "from_value": self.used_parameters.get(self.parameter_name) or "",
            "to_value": self.used_parameters.get(self.to_parameter) or "",
            "hidden": parse_qsl(remaining.lstrip("?"), keep_blank_values=True),
            "clear_query_string": remaining or "?",
        }


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


def date_range_filter(field: str, title: str) -> type[DateRangeFilter]:
    return type(f"{field.title()}RangeFilter", (DateRangeFilter,), {"field": field, "title": title})
