"""Settings come from the environment, strictly; production refuses development secrets."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.environment import (
    DEVELOPMENT_FERNET_KEY,
    DEVELOPMENT_SECRET_KEY,
    EnvironmentReader,
    production_problems,
    with_redis_db,
)
from tests.helpers import REPO_ROOT, process_environment


def reader(**values: str) -> EnvironmentReader:
    return EnvironmentReader(values)


def test_defaults_apply_when_unset_or_blank():
    env = reader(BLANK="  ")
    assert env.int("MISSING", 5) == 5
    assert env.int("BLANK", 7) == 7
    assert env.bool("MISSING", True) is True
    assert env.decimal("MISSING", "0.5") == Decimal("0.5")
    assert env.list("MISSING", ["a"]) == ["a"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("ON", True), ("0", False), ("off", False)],
)
def test_booleans(raw, expected):
    assert reader(FLAG=raw).bool("FLAG", not expected) is expected


@pytest.mark.parametrize(
    ("method", "raw", "kwargs", "message"),
    [
        ("bool", "ture", {}, "FLAG must be true or false"),
        ("int", "abc", {}, "FLAG must be a whole number, got 'abc'"),
        ("int", "1.5", {}, "FLAG must be a whole number"),
        ("int", "0", {"minimum": 1}, "FLAG must be at least 1, got 0"),
        ("int", "99", {"maximum": 60}, "FLAG must be at most 60, got 99"),
        ("decimal", "pips", {}, "FLAG must be a decimal number, got 'pips'"),
        ("decimal", "NaN", {}, "FLAG must be a finite decimal number"),
        ("decimal", "-1", {"minimum": Decimal(0)}, "FLAG must be at least 0, got -1"),
    ],
)
def test_bad_values_name_the_variable_and_the_expectation(method, raw, kwargs, message):
    default = "1" if method == "decimal" else (False if method == "bool" else 1)
    with pytest.raises(ImproperlyConfigured, match=message.replace(".", r"\.")):
        getattr(reader(FLAG=raw), method)("FLAG", default, **kwargs)


def test_database_url_must_be_postgres():
    with pytest.raises(ImproperlyConfigured, match="must be a postgres:// URL"):
        reader(DATABASE_URL="sqlite:///db.sqlite3").database("DATABASE_URL")
    with pytest.raises(ImproperlyConfigured, match="not a valid database URL: Port could not be cast"):
        reader(DATABASE_URL="postgres://host:notaport/db").database("DATABASE_URL")
    with pytest.raises(ImproperlyConfigured, match="must name a database"):
        reader(DATABASE_URL="postgres://").database("DATABASE_URL")


def test_database_url_with_socket_directory():
    config = reader(DATABASE_URL="postgres://postgres@/veilstop?host=/run/pg").database("DATABASE_URL")
    assert config["HOST"] == "/run/pg"
    assert config["NAME"] == "veilstop"
    assert config["OPTIONS"] == {}


def test_redis_url_scheme_is_checked():
    with pytest.raises(ImproperlyConfigured, match="must be a redis://"):
        reader(REDIS_URL="http://localhost:6379").redis_url("REDIS_URL")


def test_with_redis_db():
    assert with_redis_db("redis://127.0.0.1:6379/0", 9) == "redis://127.0.0.1:6379/9"
    assert with_redis_db("redis://:pw@host:1", 3) == "redis://:pw@host:1/3"
    assert with_redis_db("unix:///tmp/r.sock?db=0", 9) == "unix:///tmp/r.sock?db=9"


GOOD_PRODUCTION = {
    "debug": False,
    "secret_key": "k3y-" + "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJ",
    "fernet_keys": ["a-real-production-fernet-key-of-enough-length"],
    "allowed_hosts": ["veilstop.example.com"],
    "database_url_set": True,
    "redis_url_set": True,
}


def test_production_guard_accepts_a_proper_configuration():
    assert production_problems(**GOOD_PRODUCTION) == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"debug": True}, "DEBUG is on"),
        ({"secret_key": DEVELOPMENT_SECRET_KEY}, "SECRET_KEY is the development key"),
        ({"secret_key": "django-insecure-xyz" * 5}, "SECRET_KEY is the development key"),
        ({"secret_key": "short"}, "SECRET_KEY is too weak"),
        ({"secret_key": "a" * 60}, "SECRET_KEY is too weak"),
        ({"fernet_keys": [DEVELOPMENT_FERNET_KEY]}, "FERNET_KEYS holds the development key"),
        ({"fernet_keys": ["x" * 40, DEVELOPMENT_FERNET_KEY]}, "FERNET_KEYS holds the development key"),
        ({"fernet_keys": []}, "FERNET_KEYS holds the development key"),
        ({"fernet_keys": ["short"]}, "shorter than 32"),
        ({"allowed_hosts": ["*"]}, "ALLOWED_HOSTS"),
        ({"database_url_set": False}, "DATABASE_URL is not set"),
        ({"redis_url_set": False}, "REDIS_URL is not set"),
    ],
)
def test_production_guard_names_each_problem(change, problem):
    problems = production_problems(**{**GOOD_PRODUCTION, **change})
    assert any(problem in text for text in problems), problems


def _boot(**environment: str) -> subprocess.CompletedProcess:
    """Load the real settings module in a fresh interpreter, as manage.py would."""
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('booted')"],
        cwd=REPO_ROOT,
        env=process_environment(DJANGO_SETTINGS_MODULE="config.settings", **environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.django_db
def test_production_refuses_to_boot_with_development_defaults():
    result = _boot(DJANGO_ENV="production", ALLOWED_HOSTS="veilstop.example.com")

    assert result.returncode != 0
    assert "refusing to start in production" in result.stderr
    assert "SECRET_KEY is too weak" in result.stderr  # unset: no default in production
    assert "FERNET_KEYS holds the development key" in result.stderr
    assert "booted" not in result.stdout


@pytest.mark.django_db
def test_production_refuses_debug_even_with_real_secrets():
    result = _boot(
        DJANGO_ENV="production",
        DEBUG="true",
        SECRET_KEY=GOOD_PRODUCTION["secret_key"],
        FERNET_KEYS=GOOD_PRODUCTION["fernet_keys"][0],
        ALLOWED_HOSTS="veilstop.example.com",
    )

    assert result.returncode != 0
    assert "refusing to start in production: DEBUG is on" in result.stderr


@pytest.mark.django_db
def test_production_boots_with_a_proper_configuration():
    result = _boot(
        DJANGO_ENV="production",
        SECRET_KEY=GOOD_PRODUCTION["secret_key"],
        FERNET_KEYS=GOOD_PRODUCTION["fernet_keys"][0],
        ALLOWED_HOSTS="veilstop.example.com",
    )

    assert result.returncode == 0, result.stderr
    assert "booted" in result.stdout


@pytest.mark.django_db
def test_a_bad_tunable_stops_the_boot_with_a_clear_message():
    result = _boot(POSITION_MONITOR_INTERVAL_SECONDS="soon")

    assert result.returncode != 0
    assert "POSITION_MONITOR_INTERVAL_SECONDS must be a whole number, got 'soon'" in result.stderr


@pytest.mark.parametrize(
    "url",
    [
        "postgres://postgres@/veilstop?host=/run/pg",
        "postgres://user:p%40ss@db.example:5433/veilstop",
        "postgres://user@db.example/veilstop",
    ],
)
def test_database_url_is_the_inverse_of_reading_one(url):
    from config.environment import database_url

    config = reader(DATABASE_URL=url).database("DATABASE_URL")
    assert reader(DATABASE_URL=database_url(config)).database("DATABASE_URL") == config


def test_importing_settings_starts_nothing(tmp_path):
    # given: no server named, and an empty state folder for the embedded ones
    environment = {
        key: value
        for key, value in process_environment(DJANGO_SETTINGS_MODULE="config.settings").items()
        if key not in {"DATABASE_URL", "REDIS_URL"}
    }
    environment["VEILSTOP_STATE_DIR"] = str(tmp_path / "state")

    # when: the settings are imported, as any process importing Django would
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('booted')"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # then: a clear refusal naming the launchers, and no server started or state written
    assert result.returncode != 0
    assert "DATABASE_URL and REDIS_URL not set" in result.stderr
    assert "python -m config.embedded run" in result.stderr
    assert not (tmp_path / "state").exists()


def test_notification_settings_are_read_strictly():
    # an e-mail URL becomes Django's EMAIL_* settings; unset, nothing is configured
    assert reader().email("EMAIL_URL") == {}
    assert reader(EMAIL_URL="smtp+tls://user:pw@mail.example:587").email("EMAIL_URL") == {
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "EMAIL_HOST": "mail.example",
        "EMAIL_PORT": 587,
        "EMAIL_HOST_USER": "user",
        "EMAIL_HOST_PASSWORD": "pw",
        "EMAIL_USE_TLS": True,
    }
    with pytest.raises(ImproperlyConfigured, match="EMAIL_URL is not a valid e-mail URL"):
        reader(EMAIL_URL="ftp://mail.example").email("EMAIL_URL")
    with pytest.raises(ImproperlyConfigured, match="takes no query options"):
        reader(EMAIL_URL="smtp://mail.example:25?timeout=3").email("EMAIL_URL")
    # the Bot API base URL, and the webhook secret in Telegram's alphabet
    assert reader().http_url("TELEGRAM_API_URL", "https://api.telegram.org/") == "https://api.telegram.org"
    with pytest.raises(ImproperlyConfigured, match="TELEGRAM_API_URL must be an http"):
        reader(TELEGRAM_API_URL="api.telegram.org").http_url("TELEGRAM_API_URL", "")
    with pytest.raises(ImproperlyConfigured, match="TELEGRAM_API_URL must be an http"):
        reader(TELEGRAM_API_URL="http://host/bot{0}").http_url("TELEGRAM_API_URL", "")
    assert reader(SECRET="abc_DEF-123").token("SECRET") == "abc_DEF-123"
    with pytest.raises(ImproperlyConfigured, match="SECRET must be 1 to 256 of"):
        reader(SECRET="has space").token("SECRET")
