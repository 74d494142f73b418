"""The owner tools on positions: manual close (one, selected, a whole signal) through a
confirmation page, and test-breach (nothing is closed). They act through services, which
write the audit: ``positions_close_manual`` and ``breach_test``.

Extra views hang off ``OpenPositionAdmin.get_urls()`` wrapped in ``admin_view`` (staff,
CSRF, never cached) and check their model permissions themselves: the position admin is
read-only (no change permission for anyone), so "may close positions" is
``positions.view_openposition``; test-breach also needs ``signals_app.view_hidden_levels``.
The signal page's buttons (templates/admin/signals_app/signal/change_form.html) lead here:
signals_app never imports positions.
"""

from __future__ import annotations

from collections.abc import Iterable

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_http_methods

import core.converters  # noqa: F401  (registers <id:...>, which get_urls uses)
from positions.admin.forms import BreachTestForm, ManualCloseForm
from positions.choices import PositionStatus
from positions.closes import Claim, ManualCloseResult, positions_close_manual
from positions.exit_plan import KIND_NAMES, PARTIAL_TP, PLAN_UNWALKABLE
from positions.models import OpenPosition
from positions.selectors import BreachTest, breach_test, plan_status
from signals_app.events import Actor
from signals_app.hidden_levels import HiddenLevelsError
from signals_app.models import Signal
from signals_app.selectors import user_sees_hidden_levels

# A bigger selection is almost always a mis-click on "select all"; a whole signal has its own button.
MANUAL_CLOSE_LIMIT = 1000
LISTED_ON_CONFIRMATION = 200

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

# What the owner's close claims: an open position, or one whose last close failed
# (still a live trade at the broker). Read from the claim itself, so the page never drifts.
CLOSABLE_STATUSES = list(Claim.POSITIONS.value.statuses)
# A close-all lists these; the closing ones are shown and reported as skipped.
SIGNAL_CLOSE_STATUSES = [*CLOSABLE_STATUSES, PositionStatus.CLOSING]


def _require(request: HttpRequest, permissions: Iterable[str]) -> None:
    if not request.user.has_perms(list(permissions)):
        raise PermissionDenied


def _parse_ids(values: list[str]) -> list[int] | None:
    """Position ids from a form; None if any is not an id."""
    ids: list[int] = []
    for value in values:
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            return None
        ids.append(int(value))
    return sorted(set(ids))


class OwnerToolsMixin:
    """Mixed into ``OpenPositionAdmin`` (a ModelAdmin): the views use its ``admin_site``,
    ``opts`` and ``message_user``."""

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
        """The signal's exit plan as it stands, and what one quote would do to it. Reads
        only: nothing is closed, queued or recorded."""
        form = BreachTestForm(request.POST if request.method == "POST" else None)
        # The permission check above already requires it; the page never relies on that alone.
        sees_levels = user_sees_hidden_levels(request.user)
        outcome, plan, unreadable = None, None, False
        try:
            if request.method == "POST" and form.is_valid():
                quote = {"bid": form.cleaned_data["bid"], "ask": form.cleaned_data["ask"]}
                tested = breach_test(signal=signal, **quote)
                outcome = _outcome(tested, sees_levels=sees_levels)
                plan = tested.status if sees_levels else None
            elif sees_levels:
                plan = plan_status(signal=signal)
        except (InvalidToken, HiddenLevelsError, *PLAN_UNWALKABLE):
            unreadable = True  # the scanner alerts on such a signal and skips it; the page says so
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Test breach: signal {signal}",
            "signal": signal,
            "position": position,
            "form": form,
            "outcome": outcome,
            # The plan's live state reveals levels (the stop as it moved, the best price).
            "plan": plan,
            "stop_set_by": plan and KIND_NAMES.get(plan.stop_set_by or ""),
            "exit_name": plan and KIND_NAMES.get(plan.state.exit_kind),
            "unreadable": unreadable,
            "sees_levels": sees_levels,
            "back_url": back_url,
        }
        return TemplateResponse(request, "admin/positions/test_breach.html", context)


def _outcome(tested: BreachTest, *, sees_levels: bool) -> dict:
    """Only what this user may see reaches the template: never the whole result."""
    partials = ", ".join(f"#{index}" for index in tested.partials_triggered)
    names = {**KIND_NAMES, PARTIAL_TP: f"partial take-profit {partials}", None: ""}
    outcome = {
        "would_close": tested.would_close,
        "level": names[tested.exit_kind or (PARTIAL_TP if partials else None)],
        "by_this_quote": tested.breach_detected,
        "plan_ended": tested.plan_ended,
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
        outcome.update(sl=tested.sl, tp=tested.tp, stop=tested.effective_stop, stop_moved=tested.stop_moved)
        outcome["stop_set_by"] = names[tested.stop_set_by]
    return outcome
