"""The second factor: one TOTP authenticator per staff user (django-otp's TOTPDevice).

- Enrolment: the user's unconfirmed device (made on first visit, the same on every
  reload until confirmed) is shown as a QR code and its base32 secret; a correct code
  confirms it and verifies the session. A user who already has a confirmed device cannot
  enrol another: only ``manage.py reset_two_factor`` removes it.
- Verification: a code of the user's confirmed device. django-otp refuses a code already
  used (each is valid once: only a later time step is accepted after it) and throttles
  wrong ones per device (``verify_is_allowed``: 1, 2, 4 ... seconds between tries).
- A wrong code also counts as a failed login for django-axes (same username + IP key as
  the password step): at ``AXES_FAILURE_LIMIT`` the session is logged out and the lockout
  page shown, and the password step refuses that username + IP until the cool-off ends.
- Every accepted, refused and throttled code and every reset is audited; the code and
  the secret never are.
"""

from __future__ import annotations

import math
from base64 import b32encode
from dataclasses import dataclass

import django_otp
from axes.handlers.proxy import AxesProxyHandler
from axes.utils import reset as axes_reset
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_login_failed
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from signals_app.choices import AuditAction
from signals_app.events import Actor
from staff_auth.events import auth_audit, client_ip

DEVICE_NAME = "authenticator"
# Marks the failed logins this module reports to django-axes: a wrong code, not a password
# (staff_auth.receivers audits those as two_factor_failed, not as login_failed).
SECOND_FACTOR = "second_factor"


def is_verified(user) -> bool:
    """Whether this request's user passed the code step (django-otp's middleware ran)."""
    check = getattr(user, "is_verified", None)
    return bool(check and check())


def confirmed_device(user) -> TOTPDevice | None:
    return TOTPDevice.objects.filter(user=user, confirmed=True).order_by("pk").first()


def enrolment_device(*, user) -> TOTPDevice:
    """The user's device waiting for its first code: the same one until it is confirmed."""
    with transaction.atomic():
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()  # one at a time
        device = TOTPDevice.objects.filter(user=user, confirmed=False).order_by("pk").first()
        if device is None:
            device = TOTPDevice.objects.create(user=user, name=DEVICE_NAME, confirmed=False)
    return device


def base32_secret(device: TOTPDevice) -> str:
    """The key as authenticator apps take it by hand, in groups of four."""
    secret = b32encode(device.bin_key).decode().rstrip("=")
    return " ".join(secret[index : index + 4] for index in range(0, len(secret), 4))


@dataclass(frozen=True)
class CodeCheck:
    accepted: bool
    message: str = ""
    locked_out: bool = False  # django-axes' limit reached: end the session, show the lockout


def lockout_credentials(user) -> dict:
    return {"username": user.get_username(), SECOND_FACTOR: True}


def is_locked_out(request) -> bool:
    return AxesProxyHandler.is_locked(request, lockout_credentials(request.user))


def two_factor_code_check(*, request, device: TOTPDevice, token: str, enrolling: bool) -> CodeCheck:
    """Judge ``token`` for ``device`` (the request's user's); on success the session is
    verified by that device (under a new session key) and, when enrolling, the device is
    confirmed."""
    user = request.user
    step = "enrol" if enrolling else "verify"
    if is_locked_out(request):
        return CodeCheck(False, locked_out=True)
    allowed, why = device.verify_is_allowed()
    if not allowed:
        wait = math.ceil(((why or {}).get("locked_until", timezone.now()) - timezone.now()).total_seconds())
        auth_audit(
            action=AuditAction.AUTH_TWO_FACTOR_FAILED,
            request=request,
            user=user,
            data={"step": step, "reason": "throttled"},
        )
        return CodeCheck(False, f"Too many wrong codes: wait {max(wait, 1)} s, then enter the current code.")
    verified = django_otp.verify_token(user, device.persistent_id, token)
    if verified is None:
        auth_audit(
            action=AuditAction.AUTH_TWO_FACTOR_FAILED,
            request=request,
            user=user,
            data={"step": step, "reason": "wrong_or_used"},
        )
        user_login_failed.send(sender=__name__, credentials=lockout_credentials(user), request=request)
        if getattr(request, "axes_locked_out", False):
            return CodeCheck(False, locked_out=True)
        return CodeCheck(False, "That code is wrong or was already used: enter the next one your app shows.")
    with transaction.atomic():
        if enrolling:
            confirmed = TOTPDevice.objects.filter(pk=verified.pk, user=user, confirmed=False).update(
                confirmed=True
            )
            if confirmed != 1 or TOTPDevice.objects.filter(user=user, confirmed=True).count() != 1:
                transaction.set_rollback(True)
                return CodeCheck(False, "This account already has an authenticator: log in with its code.")
            verified.confirmed = True
        auth_audit(
            action=AuditAction.AUTH_TWO_FACTOR_ENROLLED if enrolling else AuditAction.AUTH_TWO_FACTOR_PASSED,
            request=request,
            user=user,
        )
    # Both steps passed: this username + IP starts afresh, as after a password-only login.
    axes_reset(ip=client_ip(request), username=user.get_username())
    request.session.cycle_key()
    django_otp.login(request, verified)
    return CodeCheck(True)


def two_factor_reset(*, user, by: Actor) -> int:
    """Remove every authenticator of ``user`` (a lost phone): their sessions lose their
    verification at once, and their next login enrols a new one. Returns how many went."""
    with transaction.atomic():
        removed, _ = TOTPDevice.objects.filter(user=user).delete()
        auth_audit(
            action=AuditAction.AUTH_TWO_FACTOR_RESET,
            user=user,
            by=by,
            data={"authenticators_removed": removed},
        )
    return removed
