"""Settings of the staff's login: the second factor (TOTP), login throttling and lockout,
session expiry (README: The owner's account, Configuration); read by config.settings."""

from __future__ import annotations

import os
from datetime import timedelta

from django.core.exceptions import ImproperlyConfigured

from config.environment import EnvironmentReader

env = EnvironmentReader(os.environ)
_IS_PRODUCTION = env.str("DJANGO_ENV", "development").lower() == "production"

# The test suite creates and logs in owners hundreds of times: there a fast hash (Django's
# own advice for test runs); development and production keep Django's PBKDF2 (0.3 s a hash).
if env.str("DJANGO_ENV", "development").lower() == "test":
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# --- Two-factor login for staff (staff_auth): a TOTP code after the password ----------------
# On by default in production, off in development and test (one-step login). Production
# refuses to boot with it off: every staff account there can reach the console, where users
# holding signals_app.view_hidden_levels (superusers among them) see the hidden levels.
STAFF_TWO_FACTOR = env.bool("STAFF_TWO_FACTOR", _IS_PRODUCTION)
if _IS_PRODUCTION and not STAFF_TWO_FACTOR:
    raise ImproperlyConfigured(
        "refusing to start in production: STAFF_TWO_FACTOR is off (staff who may see hidden "
        "levels must log in with a second factor; unset STAFF_TWO_FACTOR or set it to true)"
    )
# The name an authenticator app shows next to the account.
OTP_TOTP_ISSUER = env.str("OTP_TOTP_ISSUER", "Veilstop")
# django-otp's throttle of wrong codes: after n wrong codes in a row the next one is judged
# only 2^(n-1) seconds after the last, per device (1, 2, 4 ... s; 10 wrong codes: 8.5 min).
OTP_TOTP_THROTTLE_FACTOR = 1

# --- Login throttling and lockout (django-axes) -----------------------------------------------
# The AxesStandaloneBackend refuses a locked-out username + IP before any password check;
# ModelBackend then checks the password. Only the admin login form (Django's authenticate())
# and the code step (staff_auth.two_factor reports wrong codes) reach axes: DRF tokens and
# EA/feed HMAC signatures never do.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = True
# No "AXES: BEGIN" banner on every manage.py command; failures are still logged (WARNING) and audited.
AXES_VERBOSE = False
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", 5, minimum=1, maximum=1000)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", 15, minimum=1, maximum=7 * 24 * 60))
# Failures count per username and IP together: a stranger failing the owner's username locks
# out only themselves, not the owner at their own address.
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The reverse proxies in front of the web process that append to X-Forwarded-For (0: none,
# the connection's address is the client's). Behind one, set 1, or every login seems to come
# from the proxy and the lockout works per username alone (staff_auth.client_address).
LOGIN_TRUSTED_PROXIES = env.int("LOGIN_TRUSTED_PROXIES", 0, minimum=0, maximum=5)
AXES_CLIENT_IP_CALLABLE = "staff_auth.client_address.client_ip_address"
AXES_LOCKOUT_TEMPLATE = "staff_auth/lockout.html"
# The attempts' form data stays out of axes' table (it would hold the username typed as a
# password by mistake, for one).
AXES_SENSITIVE_PARAMETERS = ["username", "ip_address", "password", "otp_token"]

# --- Session expiry (staff_auth.middleware) -------------------------------------------------
# A session ends after this long without a request, and at the latest this long after its login.
SESSION_IDLE_TIMEOUT_SECONDS = 60 * env.int("SESSION_IDLE_TIMEOUT_MINUTES", 30, minimum=1, maximum=24 * 60)
SESSION_COOKIE_AGE = 3600 * env.int("SESSION_MAX_AGE_HOURS", 12, minimum=1, maximum=24 * 30)
if SESSION_IDLE_TIMEOUT_SECONDS > SESSION_COOKIE_AGE:
    raise ImproperlyConfigured("SESSION_IDLE_TIMEOUT_MINUTES must not be longer than SESSION_MAX_AGE_HOURS")
SESSION_COOKIE_SAMESITE = "Lax"
# axes looks for its middleware by name; ours is that class, skipped for the device API
# (ea_gateway.middleware.BrowserAxesMiddleware).
SILENCED_SYSTEM_CHECKS = ["axes.W002"]
