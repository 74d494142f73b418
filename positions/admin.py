"""The owner console for positions: read-only tables, plus the owner tools that act on
positions through services — manual close (one, selected, a whole signal), test-breach
(nothing is closed) and alert acknowledgement.

Extra views hang off ``OpenPositionAdmin.get_urls()`` wrapped in ``admin_view`` (staff,
CSRF, never cached) and check their model permissions themselves: the position admin is
read-only (no change permission for anyone), so "may close positions" is
``positions.view_openposition``; test-breach also needs ``signals_app.view_hidden_levels``.
The signal page's buttons (templates/admin/signals_app/signal/change_form.html) lead here:
signals_app never imports positions.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from urllib.parse import parse_qsl

from cryptography.fernet import InvalidToken
from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.views.main import PAGE_VAR
from django.core.exceptions import PermissionDenied
from django.db import models
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods

from core.admin_base import ReadOnlyAdmin
from positions.alerts import alerts_acknowledge
from positions.choices import PositionStatus
from positions.closes import ManualCloseResult, positions_close_manual
from positions.models import Alert, CloseCommand, OpenPosition
from positions.rules import STOP, TARGET
from positions.selectors import breach_test
from signals_app.events import Actor
from signals_app.hidden_levels import HiddenLevelsError
from signals_app.models import PRICE, Client, Signal
from signals_app.selectors import user_sees_hidden_levels

# A bigger selection is almost always a mis-click on "select all"; a whole signal has its own button.
MANUAL_CLOSE_LIMIT = 1000
LISTED_ON_CONFIRMATION = 200
MIN_PRICE = Decimal("0.0000000001")

CLOSE_PERMISSIONS = ("positions.view_openposition",)
SIGNAL_CLOSE_PERMISSIONS = ("positions.view_openposition", "signals_app.view_signal")
# Test-breach answers "would this price trigger, and which level?": asked often enough it
# bisects the hidden levels. So only those who may see the levels may ask (as the owner
# REST API's test-breach), whatever else they may view.
TEST_BREACH_PERMISSIONS = (
    "positions.view_openposition",
    "signals_app.view_signal",
    "signals_app.view_hidden_levels",
)

# Internal only: it goes into the close command's note and the audit, never to a client
# (the client is told "closed by the desk").
MANUAL_CLOSE_REASONS = [
    ("risk", "Risk management"),
    ("news", "News or event risk"),
    ("signal_invalidated", "Signal no longer valid"),
    ("client_request", "Client asked to close"),
    ("correction", "Correcting an error"),
    ("other", "Other (say why in the note)"),
]
# What close_command_request will close: an open position, or one whose last close failed
# (still a live trade at the broker).
CLOSABLE_STATUSES = [PositionStatus.OPEN, PositionStatus.CLOSE_FAILED]
# A close-all lists these; the closing ones are shown and reported as skipped.
SIGNAL_CLOSE_STATUSES = [*CLOSABLE_STATUSES, PositionStatus.CLOSING]
LEVEL_NAMES = {STOP: "stop-loss", TARGET: "take-profit"}


def _require(request: HttpRequest, permissions: Iterable[str]) -> None:
    if not request.user.has_perms(list(permissions)):
        raise PermissionDenied


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


class ManualCloseForm(forms.Form):
    reason = forms.ChoiceField(choices=[("", "---------"), *MANUAL_CLOSE_REASONS])
    note = forms.CharField(
        required=False,
        max_length=900,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
        help_text="Internal: kept with the close command and in the audit log, never sent to the client.",
    )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("reason") == "other" and not cleaned.get("note", "").strip():
            self.add_error("note", "Say why when the reason is Other.")
        return cleaned


class BreachTestForm(forms.Form):
    """One price (taken as both bid and ask) or a bid/ask pair."""

    price = forms.DecimalField(
        required=False, **PRICE, min_value=MIN_PRICE, help_text="Used as both bid and ask."
    )
    bid = forms.DecimalField(required=False, **PRICE, min_value=MIN_PRICE)
    ask = forms.DecimalField(required=False, **PRICE, min_value=MIN_PRICE)

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        price, bid, ask = cleaned.get("price"), cleaned.get("bid"), cleaned.get("ask")
        if price is not None:
            if bid is not None or ask is not None:
                raise forms.ValidationError("Enter either one price or a bid and an ask, not both.")
            cleaned["bid"] = cleaned["ask"] = price
        elif bid is None or ask is None:
            raise forms.ValidationError("Enter a price, or both a bid and an ask.")
        elif bid > ask:
            raise forms.ValidationError("The bid cannot be above the ask.")
        return cleaned


def _parse_ids(values: list[str]) -> list[int] | None:
    """Position ids from a form; None if any is not an id."""
    ids: list[int] = []
    for value in values:
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            return None
        ids.append(int(value))
    return sorted(set(ids))


@admin.register(OpenPosition)
class OpenPositionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "client",
        "instrument",
        "side",
        "entry_price",
        "remaining_volume",
        "broker_ticket",
        "status",
        "opened_at",
        "close_price",
        "realized_pnl",
    ]
    list_filter = ["status", "instrument", "side", ClientIdFilter, SignalIdFilter]
    list_select_related = ["client", "instrument"]
    raw_id_fields = ["signal", "approval", "client", "device"]
    search_fields = ["=id", "=broker_ticket", "client__name", "=signal__id"]
    date_hierarchy = "opened_at"
    actions = ["close_selected"]
    change_form_template = "admin/positions/openposition/change_form.html"

    def get_urls(self):
        view = self.admin_site.admin_view
        # GET shows the form, POST acts: the confirmation page itself changes nothing.
        get_or_post = require_http_methods(["GET", "POST"])
        urls = [
            path("close/", view(get_or_post(self.close_view)), name="positions_openposition_close"),
            path(
                "<id:position_id>/close/",
                view(get_or_post(self.close_view)),
                name="positions_openposition_close_one",
            ),
            path(
                "<id:position_id>/test-breach/",
                view(get_or_post(self.position_test_breach_view)),
                name="positions_openposition_test_breach",
            ),
            path(
                "signal/<id:signal_id>/close/",
                view(get_or_post(self.signal_close_view)),
                name="positions_signal_close",
            ),
            path(
                "signal/<id:signal_id>/test-breach/",
                view(get_or_post(self.signal_test_breach_view)),
                name="positions_signal_test_breach",
            ),
        ]
        return urls + super().get_urls()

    # --- manual close ---------------------------------------------------------------

    @admin.action(description="Close selected positions…", permissions=["view"])
    def close_selected(self, request, queryset: QuerySet) -> HttpResponse | None:
        """Not a close yet: the confirmation page, whose form posts to the close view."""
        ids = list(queryset.order_by("pk").values_list("pk", flat=True)[: MANUAL_CLOSE_LIMIT + 1])
        if len(ids) > MANUAL_CLOSE_LIMIT:
            self.message_user(
                request,
                f"Select at most {MANUAL_CLOSE_LIMIT} positions at a time "
                "(a whole signal: use “Close all open positions…” on the signal).",
                messages.ERROR,
            )
            return None
        return self._close_confirmation(
            request,
            positions=OpenPosition.objects.filter(pk__in=ids),
            form=ManualCloseForm(),
            action_url=reverse("admin:positions_openposition_close"),
            hidden_ids=ids,
            cancel_url=reverse("admin:positions_openposition_changelist"),
            title=f"Close {len(ids)} selected position(s)?",
        )

    def close_view(self, request, position_id: int | None = None) -> HttpResponse:
        _require(request, CLOSE_PERMISSIONS)
        if position_id is not None:
            position = get_object_or_404(OpenPosition, pk=position_id)
            ids = [position.pk]
            done_url = reverse("admin:positions_openposition_change", args=[position.pk])
            title = f"Close position #{position.pk}?"
        else:
            source = request.POST if request.method == "POST" else request.GET
            ids = _parse_ids(source.getlist("position"))
            done_url = reverse("admin:positions_openposition_changelist")
            if not ids or len(ids) > MANUAL_CLOSE_LIMIT:
                self.message_user(
                    request,
                    f"Choose between 1 and {MANUAL_CLOSE_LIMIT} positions to close.",
                    messages.ERROR,
                )
                return redirect(done_url)
            title = f"Close {len(ids)} selected position(s)?"
        form = ManualCloseForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            result = self._close(request, ids=ids, form=form)
            self._report_close(request, result)
            return redirect(done_url)
        return self._close_confirmation(
            request,
            positions=OpenPosition.objects.filter(pk__in=ids),
            form=form,
            action_url=request.path,
            hidden_ids=ids if position_id is None else [],
            cancel_url=done_url,
            title=title,
        )

    def signal_close_view(self, request, signal_id: int) -> HttpResponse:
        _require(request, SIGNAL_CLOSE_PERMISSIONS)
        # Closing needs no hidden level: a signal whose levels no longer decrypt (unwatched
        # by the scanner) is exactly one the owner may have to close by hand.
        signal = get_object_or_404(
            Signal.objects.select_related("instrument").defer("owner_only"), pk=signal_id
        )
        positions = OpenPosition.objects.filter(signal=signal, status__in=SIGNAL_CLOSE_STATUSES)
        cancel_url = reverse("admin:signals_app_signal_change", args=[signal.pk])
        # Afterwards, the signal's positions: they show what was queued (and the signal page
        # itself cannot render a signal whose levels do not decrypt).
        done_url = f"{reverse('admin:positions_openposition_changelist')}?signal={signal.pk}"
        form = ManualCloseForm(request.POST if request.method == "POST" else None)
        if request.method == "POST" and form.is_valid():
            # Read when the owner confirms, not when the page was shown: "all open
            # positions" includes a fill that arrived in between.
            ids = list(positions.order_by("pk").values_list("pk", flat=True))
            if not ids:
                self.message_user(request, f"Signal {signal} has no open positions.", messages.WARNING)
                return redirect(done_url)
            self._report_close(request, self._close(request, ids=ids, form=form))
            return redirect(done_url)
        return self._close_confirmation(
            request,
            positions=positions,
            form=form,
            action_url=request.path,
            hidden_ids=[],
            cancel_url=cancel_url,
            title=f"Close all open positions of signal {signal}?",
            signal=signal,
        )

    @staticmethod
    def _close(request, *, ids: list[int], form: ManualCloseForm) -> ManualCloseResult:
        # The service writes the audit records and takes the same guarded path as the
        # scanner: a double submit or a breach at the same moment still makes one close.
        return positions_close_manual(
            position_ids=ids,
            reason=form.cleaned_data["reason"],
            note=form.cleaned_data["note"].strip(),
            by=Actor.user(request.user),
        )

    def _report_close(self, request, result: ManualCloseResult) -> None:
        text = f"{len(result.queued)} close command(s) queued"
        if result.skipped:
            text += f"; {len(result.skipped)} position(s) skipped (not open: already closing or closed)"
        if result.unknown:
            text += f"; {len(result.unknown)} id(s) name no position"
        self.message_user(request, text + ".", messages.SUCCESS if result.queued else messages.WARNING)

    def _close_confirmation(
        self,
        request,
        *,
        positions: QuerySet,
        form: ManualCloseForm,
        action_url: str,
        hidden_ids: list[int],
        cancel_url: str,
        title: str,
        signal: Signal | None = None,
    ) -> TemplateResponse:
        tally = positions.aggregate(
            total=Count("pk"), closable=Count("pk", filter=Q(status__in=CLOSABLE_STATUSES))
        )
        listed = list(
            positions.select_related("client", "instrument").order_by("pk")[:LISTED_ON_CONFIRMATION]
        )
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "positions": listed,
            "total": tally["total"],
            "will_close": tally["closable"],
            "will_skip": tally["total"] - tally["closable"],
            "closable_statuses": CLOSABLE_STATUSES,
            "more": tally["total"] - len(listed),
            "form": form,
            "action_url": action_url,
            "hidden_ids": hidden_ids,
            "cancel_url": cancel_url,
            "signal": signal,
        }
        return TemplateResponse(request, "admin/positions/openposition/close_confirmation.html", context)

    # --- test-breach ----------------------------------------------------------------

    def position_test_breach_view(self, request, position_id: int) -> TemplateResponse:
        _require(request, TEST_BREACH_PERMISSIONS)
        position = get_object_or_404(
            # Decrypted only inside _test_breach, where an unreadable signal is handled.
            OpenPosition.objects.select_related("signal__instrument", "client").defer("signal__owner_only"),
            pk=position_id,
        )
        return self._test_breach(
            request,
            signal=position.signal,
            position=position,
            back_url=reverse("admin:positions_openposition_change", args=[position.pk]),
        )

    def signal_test_breach_view(self, request, signal_id: int) -> TemplateResponse:
        _require(request, TEST_BREACH_PERMISSIONS)
        signal = get_object_or_404(
            Signal.objects.select_related("instrument").defer("owner_only"), pk=signal_id
        )
        return self._test_breach(
            request, signal=signal, back_url=reverse("admin:signals_app_signal_change", args=[signal.pk])
        )

    def _test_breach(
        self, request, *, signal: Signal, back_url: str, position: OpenPosition | None = None
    ) -> TemplateResponse:
        """What a price would do to the signal's hidden levels. Reads only: nothing is
        closed, queued or recorded."""
        form = BreachTestForm(request.POST if request.method == "POST" else None)
        # The permission check above already requires it; the page never relies on that alone.
        sees_levels = user_sees_hidden_levels(request.user)
        outcome = None
        tested = None
        if request.method == "POST" and form.is_valid():
            try:
                tested = breach_test(
                    signal=signal, bid=form.cleaned_data["bid"], ask=form.cleaned_data["ask"]
                )
            except (InvalidToken, HiddenLevelsError):
                # The scanner alerts on such a signal and skips it; the page says so instead of a 500.
                form.add_error(
                    None,
                    "This signal's hidden levels cannot be read (a Fernet key removed before "
                    "`reencrypt`, or invalid levels): the monitor does not watch it, nothing to test.",
                )
        if tested is not None:
            # Only what this user may see reaches the template: never the whole result.
            outcome = {
                "would_close": tested.would_close,
                "level": LEVEL_NAMES.get(tested.level, ""),
                "side": tested.side,
                "bid": tested.bid,
                "ask": tested.ask,
                "judged_on": "bid" if tested.side == "buy" else "ask",
                "judged_price": tested.judged_price,
                # 0E-10 reads as "0": the plain value, without the field's padding.
                "tolerance": format(tested.tolerance.normalize(), "f"),
                "tolerance_pips": settings.BREACH_PRICE_TOLERANCE_PIPS,
                "open_positions": tested.open_positions,
            }
            if sees_levels:
                outcome["sl"] = tested.sl
                outcome["tp"] = tested.tp
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Test breach: signal {signal}",
            "signal": signal,
            "position": position,
            "form": form,
            "outcome": outcome,
            "sees_levels": sees_levels,
            "back_url": back_url,
        }
        return TemplateResponse(request, "admin/positions/test_breach.html", context)


@admin.register(CloseCommand)
class CloseCommandAdmin(ReadOnlyAdmin):
    list_display = ["id", "position", "device", "reason", "status", "attempts", "created_at", "completed_at"]
    list_filter = ["status", "reason", CommandClientIdFilter, CommandSignalIdFilter]
    list_select_related = ["position", "device"]
    raw_id_fields = ["position", "device"]
    search_fields = ["=id", "=position__id"]
    date_hierarchy = "created_at"


# --- alerts ------------------------------------------------------------------------------


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
