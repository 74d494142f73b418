from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import connection, transaction
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST
from redis.exceptions import RedisError
from unfold.decorators import display

from core.admin_base import ConsoleAdmin
from core.errors import DomainError
from ea_gateway.admin_once import (
    SECRET_SHOWN_SECONDS,
    AlreadySubmitted,
    is_token,
    new_token,
    once_claim,
    once_done,
    once_release,
    secret_hold,
    secret_take,
)
from ea_gateway.models import Device
from ea_gateway.services import device_create, device_revoke, device_rotate_secret
from positions.handover import positions_left_on
from signals_app.events import Actor

DEVICE_COLOURS = {"active": "success", "inactive": "warning", "revoked": "danger"}
UNREACHABLE = "The key store (Redis) is unreachable: try again shortly."


class DeviceCreateForm(forms.ModelForm):
    # One-time token (``ea_gateway.admin_once``): a resubmitted form creates nothing.
    once = forms.RegexField(regex=r"^[A-Za-z0-9_-]{22,64}$", initial=new_token, widget=forms.HiddenInput)

    class Meta:
        model = Device
        fields = ["name", "role", "client"]

    def clean(self):
        cleaned = super().clean()
        if (cleaned.get("role") == "ea") != (cleaned.get("client") is not None):
            raise forms.ValidationError("An EA device belongs to a client; a feed device to none.")
        return cleaned


@admin.register(Device)
class DeviceAdmin(ConsoleAdmin):
    list_display = ["name", "role", "client", "key_id", "state", "last_seen_at"]
    list_filter = ["role", "active"]
    list_select_related = ["client"]
    search_fields = ["name", "key_id", "client__name"]
    autocomplete_fields = ["client"]  # by name (the client admin's search)
    readonly_fields = [
        "name",
        "role",
        "client",
        "key_id",
        "active",
        "created_at",
        "secret_rotated_at",
        "revoked_at",
        "last_seen_at",
        "last_account",
    ]
    change_form_template = "admin/ea_gateway/device/change_form.html"

    @display(description="state", ordering="active", label=DEVICE_COLOURS)
    def state(self, device: Device) -> str:
        if device.revoked_at is not None:
            return "revoked"
        return "active" if device.active else "inactive"

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = DeviceCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["name", "role", "client", "once"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: positions and the audit point at devices

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        token = request.POST.get("once", "") if request.method == "POST" and object_id is None else ""
        try:
            with transaction.atomic():
                if is_token(token):
                    # Submissions of one form wait for each other (a double click): the second
                    # sees the first's device committed, never a claim it takes for abandoned.
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [f"device-form:{token}"])
                    if (done := self._done(token)) is not None:
                        raise AlreadySubmitted(done)
                return super().changeform_view(request, object_id, form_url, extra_context)
        except AlreadySubmitted as submitted:
            return self._already_submitted(request, submitted.device_id)
        except RedisError:
            self.message_user(
                request, "The key store (Redis) is unreachable: nothing was done.", messages.ERROR
            )
            return redirect(request.path)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The rotate button's one-time token: a fresh one each time the page is drawn.
        extra_context = {**(extra_context or {}), "once": new_token()}
        return super().change_view(request, object_id, form_url, extra_context)

    def save_model(self, request, obj: Device, form, change: bool) -> None:
        # Inside the add view's transaction: a claim that fails rolls the device back.
        credentials = device_create(
            name=obj.name, role=obj.role, client=obj.client, by=Actor.user(request.user)
        )
        once_claim(form.cleaned_data["once"], device_id=credentials.device.pk)
        obj.pk = credentials.device.pk
        request.secret_token = secret_hold(user_id=request.user.pk, credentials=credentials, created=True)

    def response_add(self, request, obj, post_url_continue=None):
        return self._to_secret_page(obj.pk, request.secret_token)

    @staticmethod
    def _done(token: str) -> int | None:
        done = once_done(token)
        if done is not None and not Device.objects.filter(pk=done).exists():
            once_release(token)  # its transaction never committed
            return None
        return done

    def _already_submitted(self, request, device_id: int):
        self.message_user(
            request,
            "This form was already submitted: it acted once, and the secret was shown once. "
            "Nothing was done again.",
            messages.WARNING,
        )
        return redirect(reverse("admin:ea_gateway_device_change", args=[device_id]))

    @staticmethod
    def _to_secret_page(device_id: int, token: str) -> HttpResponseRedirect:
        response = HttpResponseRedirect(reverse("admin:ea_gateway_device_secret", args=[device_id, token]))
        response.status_code = 303  # see other: a reload GETs the page, never POSTs again
        return response

    def secret_view(self, request, device_id: int, token: str):
        device = self._device_for_change(request, device_id)
        kept = secret_take(user_id=request.user.pk, token=token, device_id=device.pk)
        secret, created = kept if kept is not None else (None, False)
        # Rendered straight into this response: never put in a message, a cookie or a log.
        response = TemplateResponse(
            request,
            "admin/ea_gateway/device/secret.html",
            {
                **self.admin_site.each_context(request),
                "title": "Device secret",
                "device": device,
                "secret": secret,
                "created": created,
                "shown_for_minutes": SECRET_SHOWN_SECONDS // 60,
                "opts": self.opts,
            },
        )
        add_never_cache_headers(response)
        return response

    def get_urls(self):
        urls = [
            path(
                "<id:device_id>/rotate-secret/",
                self.admin_site.admin_view(require_POST(self.rotate_secret_view)),
                name="ea_gateway_device_rotate_secret",
            ),
            path(
                "<id:device_id>/secret/<str:token>/",
                self.admin_site.admin_view(self.secret_view),
                name="ea_gateway_device_secret",
            ),
            path(
                "<id:device_id>/revoke/",
                self.admin_site.admin_view(require_POST(self.revoke_view)),
                name="ea_gateway_device_revoke",
            ),
        ]
        return urls + super().get_urls()

    def _device_for_change(self, request, device_id: int) -> Device:
        device = get_object_or_404(Device, pk=device_id)
        if not self.has_change_permission(request, device):
            raise PermissionDenied
        return device

    def rotate_secret_view(self, request, device_id: int):
        device = self._device_for_change(request, device_id)
        back = redirect(reverse("admin:ea_gateway_device_change", args=[device.pk]))
        token = request.POST.get("once", "")
        if not is_token(token):
            self.message_user(
                request,
                "The rotate button's form carries no valid one-time token: nothing was rotated. "
                "Reload the device page and press Rotate secret again.",
                messages.ERROR,
            )
            return back
        try:
            if self._done(token) is not None:
                raise AlreadySubmitted(device.pk)
            with transaction.atomic():
                credentials = device_rotate_secret(device=device, by=Actor.user(request.user))
                once_claim(token, device_id=device.pk)
                shown = secret_hold(user_id=request.user.pk, credentials=credentials, created=False)
        except AlreadySubmitted:
            return self._already_submitted(request, device.pk)
        except DomainError as error:
            self.message_user(request, error.message, messages.ERROR)
            return back
        except RedisError:
            self.message_user(
                request, "The key store (Redis) is unreachable: nothing was rotated.", messages.ERROR
            )
            return back
        return self._to_secret_page(device.pk, shown)

    def revoke_view(self, request, device_id: int):
        device = self._device_for_change(request, device_id)
        try:
            device_revoke(device=device, by=Actor.user(request.user))
        except DomainError as error:
            self.message_user(request, error.message, messages.ERROR)
            return redirect(reverse("admin:ea_gateway_device_change", args=[device.pk]))
        self.message_user(request, f"Device {device.key_id} revoked; its requests are refused from now on.")
        left = positions_left_on(device_id=device.pk)
        if left:
            self.message_user(
                request,
                f"{left} live position(s) stay on it: no active EA of the client reports their tickets "
                "yet, so their closes cannot be delivered; a replacement EA takes them with its first "
                "heartbeat that does (see the open alerts).",
                messages.WARNING,
            )
        elif device.client_id is not None:
            self.message_user(
                request, "The client's live positions and their closes now go to its active EA."
            )
        return redirect(reverse("admin:ea_gateway_device_change", args=[device.pk]))
