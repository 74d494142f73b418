"""When a session logged in and when it was last used: the two clocks of its expiry.

Unix seconds in the session itself (PostgreSQL, never a cookie). The last use is written
at most every ``_resolution`` seconds, so an active console session costs one session save
a minute, not one a request.
"""

from __future__ import annotations

import time

from django.conf import settings

LOGIN_AT = "staff_auth.login_at"
SEEN_AT = "staff_auth.seen_at"


def _resolution() -> int:
    return max(1, min(60, settings.SESSION_IDLE_TIMEOUT_SECONDS // 10))


def session_clock_start(session) -> None:
    now = int(time.time())
    session[LOGIN_AT] = now
    session[SEEN_AT] = now


def session_expiry_reason(session) -> str | None:
    """``"idle"``, ``"max_age"`` or None; marks the session as used when it lives on."""
    now = int(time.time())
    login_at = session.get(LOGIN_AT)
    if not isinstance(login_at, int):  # a session from before these clocks: they start now
        session_clock_start(session)
        return None
    seen_at = session.get(SEEN_AT, login_at)
    if now - login_at >= settings.SESSION_COOKIE_AGE:
        return "max_age"
    if now - seen_at >= settings.SESSION_IDLE_TIMEOUT_SECONDS:
        return "idle"
    if now - seen_at >= _resolution():
        session[SEEN_AT] = now
    return None
