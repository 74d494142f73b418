"""What the login tests share: codes computed from a device's key, logins through the real
form, a session that passed the code step, and the console's admin paths."""

from __future__ import annotations

import re
import time
from base64 import b32decode

from django.urls import URLResolver, get_resolver
from django.urls.resolvers import RoutePattern
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from signals_app.models import AuditEvent

PASSWORD = "a-long-test-password-for-staff"
LOGIN_URL = "/admin/login/"
VERIFY_URL = "/admin/two-factor/"
ENROLL_URL = "/admin/two-factor/enroll/"


def code_for(key: bytes, *, at: float | None = None, steps_ahead: int = 0) -> str:
    """The code an authenticator app holding ``key`` shows at ``at`` (now), ``steps_ahead``
    30-second steps later."""
    totp = TOTP(key, step=30, t0=0, digits=6)
    totp.time = (time.time() if at is None else at) + 30 * steps_ahead
    return f"{totp.token():06d}"


def key_from_secret(secret: str) -> bytes:
    """The key from the base32 secret the enrolment page shows (groups of four)."""
    compact = secret.replace(" ", "")
    return b32decode(compact + "=" * (-len(compact) % 8))


def password_login(client, username: str, password: str = PASSWORD, *, ip: str = "127.0.0.1"):
    return client.post(
        LOGIN_URL, {"username": username, "password": password, "next": "/admin/"}, REMOTE_ADDR=ip
    )


def verified_session(client, user) -> TOTPDevice:
    """``client`` logged in as ``user`` with both steps passed, through a confirmed device."""
    device = TOTPDevice.objects.create(user=user, name="authenticator", confirmed=True)
    client.force_login(user)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = device.persistent_id
    session.save()
    return device


def audited(action: str, **filters) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, **filters).order_by("pk"))


def admin_paths() -> list[str]:
    """Every console path under /admin/ (converters filled with 1): Django's admin, each
    table's own get_urls() views, the monitor dashboard, the guards page, the exports.
    The login, logout and the code pages themselves are left out."""
    found: list[str] = []

    def walk(patterns, prefix: str) -> None:
        for entry in patterns:
            if not isinstance(entry.pattern, RoutePattern):
                continue
            route = prefix + re.sub(r"<[^>]+>", "1", str(entry.pattern))
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, route)
            elif route.startswith("admin/"):
                found.append("/" + route)

    walk(get_resolver().url_patterns, "")
    skipped = {LOGIN_URL, "/admin/logout/", VERIFY_URL, ENROLL_URL}
    return sorted(set(found) - skipped)
