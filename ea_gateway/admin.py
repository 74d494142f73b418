from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.cache import add_never_cache_headers
from django.views.decorators.http import require_POST

from core.errors import DomainError
from ea_gateway.models import Device
from ea_gateway.services import IssuedCredentials, device_create, device_revoke, device_rotate_secret
from positions.handover import positions_left_on
from signals_app.events import Actor


class DeviceCreateForm(forms.ModelForm):
    class Meta:
        model = Device
        fields = ["name", "role", "client"]

    def clean(self):
        cleaned = super().clean()
        if (cleaned.get("role") == "ea") != (cleaned.get("client") is not None):
            raise forms.ValidationError("An EA device belongs to a client; a feed device to none.")
        return cleaned


@admin.register(Device)
class DeviceAdmin(admin.ModelAdmin):
    list_display = ["name", "role", "client", "key_id", "active", "last_seen_at", "revoked_at"]
    list_filter = ["role", "active"]
    list_select_related = ["client"]
    search_fields = ["name", "key_id", "client__name"]
    raw_id_fields = ["client"]
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

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = DeviceCreateForm
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fields(self, request, obj=None):
        return ["name", "role", "client"] if obj is None else self.readonly_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # revoke instead: positions and the audit point at devices

    def save_model(self, request, obj: Device, form, change: bool) -> None:
        credentials = device_create(
            name=obj.name, role=obj.role, client=obj.client, by=Actor.user(request.user)
        )
        obj.pk = credentials.device.pk
        request.issued_credentials = credentials

    def response_add(self, request, obj, post_url_continue=None):
        return self._secret_page(request, request.issued_credentials, created=True)

    def _secret_page(self, request, credentials: IssuedCredentials, *, created: bool) -> TemplateResponse:
        # Rendered straight into this response: never put in a message, a cookie or a log.
        response = TemplateResponse(
            request,
            "admin/ea_gateway/device/secret.html",
            {
                **self.admin_site.each_context(request),
                "title": "Device secret",
                "device": credentials.device,
                "secret": credentials.secret,
                "created": created,
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
        try:
            credentials = device_rotate_secret(device=device, by=Actor.user(request.user))
        except DomainError as error:
            self.message_user(request, error.message, messages.ERROR)
            return redirect(reverse("admin:ea_gateway_device_change", args=[device.pk]))
        return self._secret_page(request, credentials, created=False)

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
