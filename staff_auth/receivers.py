"""Audit the logins django.contrib.auth and django-axes see (connected in apps.ready)."""

from __future__ import annotations

from axes.signals import user_locked_out
from django.conf import settings
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from signals_app.choices import AuditAction
from staff_auth.events import auth_audit
from staff_auth.session_clock import session_clock_start
from staff_auth.two_factor import SECOND_FACTOR


@receiver(user_logged_in, dispatch_uid="staff_auth.login")
def _logged_in(sender, request, user, **kwargs) -> None:
    if request is None:
        return
    session_clock_start(request.session)
    auth_audit(
        action=AuditAction.AUTH_LOGIN,
        request=request,
        user=user,
        data={"second_factor": "required" if settings.STAFF_TWO_FACTOR else "off"},
    )


@receiver(user_login_failed, dispatch_uid="staff_auth.login_failed")
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    if credentials.get(SECOND_FACTOR):  # a wrong code, audited as such by staff_auth.two_factor
        return
    # Django has already masked the password in ``credentials``; only the username is kept.
    auth_audit(
        action=AuditAction.AUTH_LOGIN_FAILED,
        request=request,
        username=str(credentials.get("username") or ""),
    )


@receiver(user_locked_out, dispatch_uid="staff_auth.locked_out")
def _locked_out(sender, request, username, ip_address, **kwargs) -> None:
    auth_audit(
        action=AuditAction.AUTH_LOCKED_OUT,
        request=request,
        username=str(username or ""),
        data={"failure_limit": settings.AXES_FAILURE_LIMIT},
    )


@receiver(user_logged_out, dispatch_uid="staff_auth.logout")
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is None or request is None:
        return
    auth_audit(action=AuditAction.AUTH_LOGOUT, request=request, user=user)
