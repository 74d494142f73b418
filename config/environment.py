"""Typed, strict reading of the environment for ``config.settings``.

django-environ does the parsing of URLs and lists; this module adds what it
lacks for settings a user tunes: a bad value is an ``ImproperlyConfigured``
naming the variable, the value and what is expected, never a bare
``ValueError`` deep in a stack trace, and never a silent fallback (django-environ
reads ``DEBUG=ture`` as False; here it is an error).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

import environ
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class EnvironmentReader:
    def __init__(self, environ_mapping: Mapping[str, str]) -> None:
        self._environ = environ_mapping

    def raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def is_set(self, name: str) -> bool:
        return self.raw(name) is not None

    def str(self, name: str, default: str) -> str:
        value = self.raw(name)
        return default if value is None else value

    def bool(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise ImproperlyConfigured(f"{name} must be true or false (1/0, yes/no, on/off), got {value!r}")

    def int(self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}") from None
        self._check_range(name, number, minimum, maximum)
        return number

    def decimal(
        self,
        name: str,
        default: str,
        *,
        minimum: Decimal | None = None,
        maximum: Decimal | None = None,
    ) -> Decimal:
        value = self.raw(name)
        if value is None:
            return Decimal(default)
        try:
            number = Decimal(value)
        except InvalidOperation:
            raise ImproperlyConfigured(f"{name} must be a decimal number, got {value!r}") from None
        if not number.is_finite():
            raise ImproperlyConfigured(f"{name} must be a finite decimal number, got {value!r}")
        self._check_range(name, number, minimum, maximum)
        return number

    def list(self, name: str, default: list[str]) -> list[str]:
        value = self.raw(name)
        if value is None:
            return list(default)
        return [item.strip() for item in value.split(",") if item.strip()]

    def rate(self, name: str, default: str) -> str:
        """A request rate as DRF throttles take it: ``120/min``, ``5/s``, ``1000/hour``, ``1/day``."""
        value = self.str(name, default)
        if not re.fullmatch(r"[1-9][0-9]*/(s|sec|second|m|min|minute|h|hour|d|day)", value):
            raise ImproperlyConfigured(f"{name} must be a rate like 300/min or 5/s, got {value!r}")
        return value

    def database(self, name: str) -> dict:
        value = self.raw(name)
        if value is None:
            raise ImproperlyConfigured(f"{name} is not set")
        try:
            config = environ.Env.db_url_config(value)
        except Exception as error:  # django-environ raises several types here
            raise ImproperlyConfigured(f"{name} is not a valid database URL: {error}") from None
        if config.get("ENGINE") != "django.db.backends.postgresql":
            raise ImproperlyConfigured(f"{name} must be a postgres:// URL (Veilstop runs on PostgreSQL only)")
        if not config.get("NAME"):
            raise ImproperlyConfigured(
                f"{name} must name a database, e.g. postgres://user@host:5432/veilstop"
            )
        # A Unix-socket directory arrives as ?host=/path; psycopg2 takes it as HOST.
        options = dict(config.get("OPTIONS") or {})
        if "host" in options:
            config["HOST"] = options.pop("host")
        config["OPTIONS"] = options
        return config

    def redis_url(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise ImproperlyConfigured(f"{name} is not set")
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ImproperlyConfigured(f"{name} must be a redis://, rediss:// or unix:// URL, got {value!r}")
        return value

    def http_url(self, name: str, default: str) -> str:
        value = self.str(name, default).rstrip("/")
        if not re.fullmatch(r"https?://[^\s/?#{}]+(/[^\s?#{}]*)?", value):
            raise ImproperlyConfigured(f"{name} must be an http:// or https:// URL, got {value!r}")
        return value

    def token(self, name: str) -> str:
        """A secret of Telegram's webhook alphabet (1-256 of A-Z a-z 0-9 _ -), or "" when unset."""
        value = self.str(name, "")
        if value and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", value):
            raise ImproperlyConfigured(f"{name} must be 1 to 256 of A-Z, a-z, 0-9, _ and -")
        return value

    def email(self, name: str) -> dict:
        """Django's EMAIL_* settings from an e-mail URL (django-environ's schemes:
        ``smtp://user:password@host:587``, ``smtp+tls://``, ``smtp+ssl://``, ``consolemail://``...);
        empty when unset (no e-mail is sent). Query options other than use_tls/use_ssl are refused:
        Django's backends would ignore them."""
        value = self.raw(name)
        if value is None:
            return {}
        try:
            config = environ.Env.email_url_config(value)
        except Exception as error:  # django-environ raises several types here
            raise ImproperlyConfigured(f"{name} is not a valid e-mail URL: {error}") from None
        if config.pop("OPTIONS", None):
            raise ImproperlyConfigured(f"{name} takes no query options but use_tls and use_ssl")
        return {key: item for key, item in config.items() if item not in (None, "")}

    @staticmethod
    def _check_range(name: str, number, minimum, maximum) -> None:
        if minimum is not None and number < minimum:
            raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise ImproperlyConfigured(f"{name} must be at most {maximum}, got {number}")


DEVELOPMENT_SECRET_KEY = "django-insecure-veilstop-development-only-never-use-in-production"  # noqa: S105
# A fixed development key so encrypted rows survive restarts on a dev machine.
DEVELOPMENT_FERNET_KEY = "veilstop-development-fernet-key-never-use-in-production"


def production_problems(
    *,
    debug: bool,
    secret_key: str,
    fernet_keys: list[str],
    allowed_hosts: list[str],
    database_url_set: bool,
    redis_url_set: bool,
) -> list[str]:
    """Everything that makes a configuration unfit for production, in words."""
    problems = []
    if debug:
        problems.append("DEBUG is on")
    if secret_key == DEVELOPMENT_SECRET_KEY or secret_key.startswith("django-insecure"):
        problems.append("SECRET_KEY is the development key (set a long random SECRET_KEY)")
    elif len(secret_key) < 50 or len(set(secret_key)) < 5:
        problems.append("SECRET_KEY is too weak (at least 50 characters, not repetitive)")
    if not fernet_keys or DEVELOPMENT_FERNET_KEY in fernet_keys:
        problems.append("FERNET_KEYS holds the development key (set FERNET_KEYS to your own keys)")
    elif any(len(key) < 32 for key in fernet_keys):
        problems.append("FERNET_KEYS has a key shorter than 32 characters")
    if not allowed_hosts or "*" in allowed_hosts:
        problems.append("ALLOWED_HOSTS must list this site's host names")
    if not database_url_set:
        problems.append("DATABASE_URL is not set (the embedded database is for development only)")
    if not redis_url_set:
        problems.append("REDIS_URL is not set (the embedded Redis is for development only)")
    return problems


def with_redis_db(url: str, db: int) -> str:
    """The same Redis server URL with another database number."""
    from urllib.parse import urlsplit, urlunsplit

    if url.startswith("unix://"):
        path, _, query = url.partition("?")
        kept = [item for item in query.split("&") if item and not item.startswith("db=")]
        return f"{path}?{'&'.join([*kept, f'db={db}'])}"
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


def database_url(settings_dict: dict) -> str:
    """The DATABASE_URL for a Django connection's settings: the inverse of
    ``EnvironmentReader.database``, for child processes (workers started by tests
    and benchmarks) that must reach the same database."""
    from urllib.parse import quote

    user = quote(settings_dict["USER"] or "")
    password = f":{quote(settings_dict['PASSWORD'])}" if settings_dict.get("PASSWORD") else ""
    host = settings_dict.get("HOST") or ""
    if host.startswith("/"):
        return f"postgres://{user}{password}@/{settings_dict['NAME']}?host={host}"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{user}{password}@{host}{port}/{settings_dict['NAME']}"
