from __future__ import annotations

from cryptography.fernet import InvalidToken
from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.urls import reverse
from unfold.decorators import display
from unfold.widgets import UnfoldAdminDecimalFieldWidget as DecimalInput
from unfold.widgets import UnfoldAdminIntegerFieldWidget as IntegerInput
from unfold.widgets import UnfoldAdminTextareaWidget as Textarea
from unfold.widgets import UnfoldAdminTextInputWidget as TextInput

from core import formatting
from core.admin_base import ConsoleAdmin, ReadOnlyAdmin
from core.badges import badge
from core.errors import DomainError
from signals_app.admin_badges import APPROVAL_COLOURS, APPROVAL_WORDS, DECIDED_BY_WORDS, SIGNAL_COLOURS
from signals_app.choices import DecidedBy
from signals_app.events import Actor
from signals_app.guard_settings import guard_settings_save
from signals_app.models import Approval, Client, Instrument, Signal
from signals_app.selectors import user_sees_hidden_levels
from signals_app.services import (
    approval_decide,
    signal_create,
    signal_publish,
    signal_update_hidden_levels,
    signal_validate,
)
from signals_app.telegram import telegram_link_code_create

LEVEL_FIELDS = ["sl", "tp", "max_holding_minutes", "strategy", "reason", "advanced"]
ADVANCED_KEYS = ("partial_take_profits", "trailing", "breakeven")
HIDDEN_PRICE = {"required": False, "max_digits": 20, "decimal_places": 10, "widget": DecimalInput}


@admin.register(Instrument)
class InstrumentAdmin(ConsoleAdmin):
    list_display = [
        "symbol",
        "description",
        "digits",
        "pip_size",
        "contract_size",
        "quote_currency",
        "active",
        "market_guard_mode",
    ]
    list_filter = ["active", "market_guard_mode"]

    def save_model(self, request, obj, form, change) -> None:
        guard_settings_save(obj=obj, by=Actor.user(request.user))

    search_fields = ["symbol", "description"]


@admin.register(Client)
class ClientAdmin(ConsoleAdmin):
    list_display = [
        "name",
        "active",
        "auto_approve",
        "default_volume",
        "auto_close_enabled",
        "max_open_positions",
        "max_volume_per_instrument",
        "drawdown_limit_percent",
        "daily_loss_limit_percent",
    ]
    list_filter = ["active", "auto_approve", "auto_close_enabled"]

    def save_model(self, request, obj, form, change) -> None:
        guard_settings_save(obj=obj, by=Actor.user(request.user))

    search_fields = ["name", "contact_email", "telegram_chat_id"]
    # A chat is linked only by the client sending a one-time code to the bot (a new code
    # links the new chat in its place): never typed in, where a typo or a rogue edit would
    # send the client's messages and approval buttons to someone else.
    readonly_fields = ["telegram_chat_id"]
    actions = ["telegram_link_code"]

    @admin.action(description="Create a Telegram link code (shown once)", permissions=["change"])
    def telegram_link_code(self, request, queryset) -> None:
        for client in queryset.order_by("pk")[:20]:
            code = telegram_link_code_create(client=client, by=Actor.user(request.user))
            self.message_user(
                request,
                f"{client.name}: send /start {code} to the bot (valid 7 days, once); "
                "that chat then receives this client's notifications and approval buttons.",
                messages.SUCCESS,
            )


class OptionalJSONField(forms.JSONField):
    """A JSON object that may be left out: shown empty, never as ``null``."""

    def prepare_value(self, value):
        return "" if value is None else super().prepare_value(value)


class SignalForm(forms.ModelForm):
    """Signal fields plus the hidden levels, which go through the same validation as the API."""

    # Unfold's widgets: the form's own fields look like the model's (which unfold styles itself).
    sl = forms.DecimalField(label="Stop-loss (hidden)", **HIDDEN_PRICE)
    tp = forms.DecimalField(label="Take-profit (hidden)", **HIDDEN_PRICE)
    max_holding_minutes = forms.IntegerField(required=False, min_value=1, widget=IntegerInput)
    strategy = forms.CharField(required=False, max_length=500, widget=TextInput)
    reason = forms.CharField(required=False, max_length=500, widget=Textarea(attrs={"rows": 2}))
    advanced = OptionalJSONField(
        required=False,
        label="Trade management (hidden)",
        help_text='JSON with any of "partial_take_profits", "trailing", "breakeven".',
        widget=Textarea(attrs={"rows": 4}),
    )

    class Meta:
        model = Signal
        fields = ["instrument", "side", "entry_price", "ttl_minutes", "payload"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        levels = self.instance.owner_only if self.instance.pk else None
        if levels:
            for name in ("sl", "tp", "max_holding_minutes", "strategy", "reason"):
                self.initial.setdefault(name, levels.get(name))
            advanced = {key: levels[key] for key in ADVANCED_KEYS if key in levels}
            self.initial.setdefault("advanced", advanced or None)

    def hidden_levels(self) -> dict:
        data = self.cleaned_data
        levels: dict = {key: value for key, value in (data.get("advanced") or {}).items()}
        for name in ("sl", "tp"):
            if data.get(name) is not None:
                levels[name] = format(data[name], "f")
        for name in ("max_holding_minutes", "strategy", "reason"):
            if data.get(name) not in (None, ""):
                levels[name] = data[name]
        return levels

    def clean_advanced(self):
        advanced = self.cleaned_data.get("advanced")
        if advanced in (None, ""):
            return {}
        if not isinstance(advanced, dict) or not set(advanced) <= set(ADVANCED_KEYS):
            raise forms.ValidationError(f"Use an object with keys among {', '.join(ADVANCED_KEYS)}.")
        return advanced

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        signal = self.instance
        try:
            # The same whole-signal rules as the API: levels vs entry, payload vs levels.
            signal_validate(
                side=cleaned.get("side", signal.side),
                entry_price=cleaned.get("entry_price", signal.entry_price),
                payload=cleaned.get("payload", signal.payload),
                owner_only=self.hidden_levels(),
            )
        except DomainError as error:
            for name, problems in error.fields.items():
                field = name.removeprefix("owner_only.")
                target = field if field in self.fields else None
                for problem in problems:
                    self.add_error(target, f"{field}: {problem}" if target is None else problem)
        return cleaned


@admin.register(Signal)
class SignalAdmin(ConsoleAdmin):
    form = SignalForm
    list_display = [
        "id",
        "instrument",
        "side",
        "entry",
        "state",
        "ttl_minutes",
        "approvals",
        "created_at",
    ]
    list_filter = ["status", "side", "instrument"]
    list_select_related = ["instrument"]
    search_fields = ["=id"]
    date_hierarchy = "created_at"
    actions = ["publish_selected"]
    readonly_fields = ["status", "created_by", "created_at", "published_at", "levels"]

    @admin.display(description="entry", ordering="entry_price")
    def entry(self, signal: Signal) -> str:
        return formatting.price(signal.entry_price, signal.instrument.digits)

    def get_queryset(self, request):
        # The list never decrypts hidden levels: no cost per row, and one signal whose
        # levels no longer decrypt cannot break the whole page.
        return super().get_queryset(request).annotate(approval_count=Count("approvals"))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        try:
            return super().change_view(request, object_id, form_url, extra_context)
        except InvalidToken:
            # Levels written under a key since removed from FERNET_KEYS: say so, do not 500.
            self.message_user(
                request,
                f"Signal #{object_id}: its hidden levels do not decrypt with FERNET_KEYS (a key removed "
                "before `manage.py reencrypt`?). Put the old key back, run reencrypt, then remove it.",
                messages.ERROR,
            )
            return HttpResponseRedirect(reverse("admin:signals_app_signal_changelist"))

    def get_changelist(self, request, **kwargs):
        changelist = super().get_changelist(request, **kwargs)

        class WithoutLevels(changelist):
            def get_queryset(self, request, exclude_parameters=None):
                return super().get_queryset(request, exclude_parameters).defer("owner_only")

        return WithoutLevels

    @display(description="status", ordering="status", label=SIGNAL_COLOURS)
    def state(self, signal: Signal) -> tuple[str, str]:
        return badge(signal.status, {})

    @admin.display(description="approvals", ordering="approval_count")
    def approvals(self, signal: Signal) -> int:
        return signal.approval_count

    @admin.display(description="hidden levels")
    def levels(self, signal: Signal) -> str:
        return "set (hidden)" if signal.owner_only else "none"

    def get_fields(self, request, obj=None):
        fields = ["instrument", "side", "entry_price", "ttl_minutes", "payload"]
        if user_sees_hidden_levels(request.user):
            fields += LEVEL_FIELDS
        else:
            fields += ["levels"]
        return [*fields, "status", "created_by", "created_at", "published_at"]

    def get_readonly_fields(self, request, obj=None):
        readonly = list(self.readonly_fields)
        if obj is not None:
            # What clients were sent is fixed once the signal exists; only the hidden levels move.
            readonly += ["instrument", "side", "entry_price", "ttl_minutes", "payload"]
        return readonly

    def has_add_permission(self, request) -> bool:
        return super().has_add_permission(request) and user_sees_hidden_levels(request.user)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # signals are history: positions and the audit point at them

    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["fields"] = [
            name
            for name in self.get_fields(request, obj)
            if name in SignalForm.base_fields or name in SignalForm.declared_fields
        ]
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj: Signal, form: SignalForm, change: bool) -> None:
        by = Actor.user(request.user)
        if change:
            if user_sees_hidden_levels(request.user):
                signal_update_hidden_levels(signal=obj, owner_only=form.hidden_levels(), by=by)
            return
        created = signal_create(
            instrument=obj.instrument.symbol,
            side=obj.side,
            entry_price=obj.entry_price,
            ttl_minutes=obj.ttl_minutes,
            payload=obj.payload,
            owner_only=form.hidden_levels(),
            by=by,
        )
        obj.pk = created.pk

    @admin.action(description="Publish selected signals to all active clients")
    def publish_selected(self, request, queryset) -> None:
        by = Actor.user(request.user)
        created = 0
        for signal in queryset.order_by("pk"):
            try:
                created += signal_publish(signal=signal, by=by).approvals_created
            except DomainError as error:
                self.message_user(request, f"Signal #{signal.pk}: {error.message}", messages.WARNING)
        self.message_user(request, f"Published; {created} approvals created.", messages.SUCCESS)


@admin.register(Approval)
class ApprovalAdmin(ReadOnlyAdmin):
    """Approvals come from publishing; decisions go through the actions, which audit them."""

    list_display = ["id", "of_signal", "client", "volume", "state", "decided", "expires_at", "created_at"]
    list_filter = ["status", "decided_by", "signal__instrument"]
    list_select_related = ["signal__instrument", "client"]
    raw_id_fields = ["signal", "client", "decided_by_user"]
    search_fields = ["=id", "=signal__id", "client__name"]
    actions = ["approve_on_behalf", "decline_on_behalf"]

    @admin.display(description="signal", ordering="signal_id")
    def of_signal(self, approval: Approval) -> str:
        return f"#{approval.signal_id} {approval.signal.instrument.symbol} {approval.signal.side}"

    @display(description="status", ordering="status", label=APPROVAL_COLOURS)
    def state(self, approval: Approval) -> tuple[str, str]:
        return badge(approval.status, APPROVAL_WORDS)

    @admin.display(description="decided by", ordering="decided_by")
    def decided(self, approval: Approval) -> str:
        return DECIDED_BY_WORDS.get(approval.decided_by, approval.decided_by or "—")

    def _decide(self, request, queryset, approve: bool) -> None:
        by = Actor.user(request.user)
        done = 0
        for approval in queryset.order_by("pk"):
            try:
                approval_decide(approval=approval, approve=approve, decided_by=DecidedBy.OWNER, by=by)
                done += 1
            except DomainError as error:
                self.message_user(request, f"Approval #{approval.pk}: {error.message}", messages.WARNING)
        verb = "approved" if approve else "declined"
        self.message_user(request, f"{done} approval(s) {verb} on behalf of the client.", messages.SUCCESS)

    @admin.action(description="Approve on behalf of the client", permissions=["view"])
    def approve_on_behalf(self, request, queryset) -> None:
        self._decide(request, queryset, approve=True)

    @admin.action(description="Decline on behalf of the client", permissions=["view"])
    def decline_on_behalf(self, request, queryset) -> None:
        self._decide(request, queryset, approve=False)


# The audit log's admin and export: its own module (this one would outgrow a sitting).
import signals_app.admin_audit  # noqa: E402, F401
