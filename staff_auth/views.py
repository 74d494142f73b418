"""The code step of a staff login and the enrolment of an authenticator (admin-styled
pages under /admin/two-factor/, mounted in config.urls). Both take a session that passed
the password step; both are 404 while ``STAFF_TWO_FACTOR`` is off."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import segno
from axes.helpers import get_lockout_response
from django import forms
from django.conf import settings
from django.contrib import admin
from django.contrib.auth import logout
from django.contrib.auth.views import redirect_to_login
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.safestring import mark_safe
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters

from signals_app.choices import AuditAction
from staff_auth.events import auth_audit
from staff_auth.two_factor import (
    CodeCheck,
    base32_secret,
    confirmed_device,
    enrolment_device,
    is_verified,
    lockout_credentials,
    two_factor_code_check,
)


class CodeForm(forms.Form):
    otp_token = forms.CharField(
        label="6-digit code from your authenticator app",
        max_length=12,
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True, "size": 8}
        ),
    )

    def clean_otp_token(self) -> str:
        token = re.sub(r"\s", "", self.cleaned_data["otp_token"])
        if not re.fullmatch(r"[0-9]{6}", token):
            raise forms.ValidationError("Enter the 6 digits your authenticator app shows.")
        return token


def _next_url(request) -> str:
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    allowed = url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    )
    return candidate if candidate and allowed else reverse("admin:index")


def _page(request, template: str, form: CodeForm, next_url: str, **context):
    return render(
        request,
        template,
        {
            **admin.site.each_context(request),  # unfold's colours and console.css
            "form": form,
            "next": next_url,
            "title": context.pop("title"),
            **context,
        },
    )


def _start(request):
    """The user if this session may take a code step now, or the response that says where to go."""
    if not settings.STAFF_TWO_FACTOR:
        raise Http404("Two-factor login is off (STAFF_TWO_FACTOR).")
    if not request.user.is_authenticated or not request.user.is_active or not request.user.is_staff:
        return None, redirect_to_login(request.get_full_path(), reverse("admin:login"))
    if is_verified(request.user):
        return None, HttpResponseRedirect(_next_url(request))
    return request.user, None


def _judge(request, form: CodeForm, device, *, enrolling: bool) -> CodeCheck:
    if not form.is_valid():
        auth_audit(
            action=AuditAction.AUTH_TWO_FACTOR_FAILED,
            request=request,
            user=request.user,
            data={"step": "enrol" if enrolling else "verify", "reason": "malformed"},
        )
        return CodeCheck(False)
    check = two_factor_code_check(
        request=request, device=device, token=form.cleaned_data["otp_token"], enrolling=enrolling
    )
    if check.message:
        form.add_error("otp_token", check.message)
    return check


def _lockout(request):
    """django-axes' limit reached on the code step: end the half-logged-in session and
    answer with the lockout page (429)."""
    credentials = lockout_credentials(request.user)
    logout(request)
    request.axes_locked_out = True
    return get_lockout_response(request, None, credentials)


def _posted(request, form: CodeForm, device, next_url: str, *, enrolling: bool):
    """The response to a posted code, or None to show the form again with its error."""
    check = _judge(request, form, device, enrolling=enrolling)
    if check.locked_out:
        return _lockout(request)
    return HttpResponseRedirect(next_url) if check.accepted else None


@sensitive_post_parameters("otp_token")
@never_cache
def two_factor_verify(request):
    user, elsewhere = _start(request)
    if elsewhere is not None:
        return elsewhere
    next_url = _next_url(request)
    device = confirmed_device(user)
    if device is None:
        return HttpResponseRedirect(f"{reverse('two-factor-enroll')}?{urlencode({'next': next_url})}")
    form = CodeForm(request.POST or None)
    if request.method == "POST":
        answered = _posted(request, form, device, next_url, enrolling=False)
        if answered is not None:
            return answered
    return _page(request, "staff_auth/two_factor_verify.html", form, next_url, title="Two-factor login")


@sensitive_post_parameters("otp_token")
@never_cache
def two_factor_enroll(request):
    user, elsewhere = _start(request)
    if elsewhere is not None:
        return elsewhere
    next_url = _next_url(request)
    if confirmed_device(user) is not None:
        return HttpResponseRedirect(f"{reverse('two-factor-verify')}?{urlencode({'next': next_url})}")
    device = enrolment_device(user=user)
    form = CodeForm(request.POST or None)
    if request.method == "POST":
        answered = _posted(request, form, device, next_url, enrolling=True)
        if answered is not None:
            return answered
    qr_svg = segno.make(device.config_url, error="m").svg_inline(scale=4, dark="#000", light="#fff")
    return _page(
        request,
        "staff_auth/two_factor_enroll.html",
        form,
        next_url,
        title="Set up two-factor login",
        qr_svg=mark_safe(qr_svg),  # noqa: S308 - segno's own SVG, built from our URL only
        secret=base32_secret(device),
    )
