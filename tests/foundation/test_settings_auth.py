"""The staff login's settings: two-factor is on in production and cannot be turned off
there; secure session cookies in production; bad values stop the boot with a clear message."""

from __future__ import annotations

import pytest

from tests.foundation.test_settings import GOOD_PRODUCTION, _boot

PRODUCTION = {
    "DJANGO_ENV": "production",
    "SECRET_KEY": GOOD_PRODUCTION["secret_key"],
    "FERNET_KEYS": GOOD_PRODUCTION["fernet_keys"][0],
    "ALLOWED_HOSTS": "veilstop.example.com",
}
SHOW = (
    "from django.conf import settings as s; "
    "print(s.STAFF_TWO_FACTOR, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, "
    "s.SESSION_IDLE_TIMEOUT_SECONDS, s.SESSION_COOKIE_AGE, s.AXES_FAILURE_LIMIT, s.AXES_COOLOFF_TIME)"
)


def _settings_line(**environment: str) -> str:
    import subprocess
    import sys

    from tests.helpers import REPO_ROOT, process_environment

    result = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {SHOW}"],
        cwd=REPO_ROOT,
        env=process_environment(DJANGO_SETTINGS_MODULE="config.settings", **environment),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.django_db
def test_production_refuses_to_boot_with_two_factor_off():
    result = _boot(**PRODUCTION, STAFF_TWO_FACTOR="false")

    assert result.returncode != 0
    assert "refusing to start in production: STAFF_TWO_FACTOR is off" in result.stderr
    assert "booted" not in result.stdout


@pytest.mark.django_db
def test_production_has_two_factor_and_secure_cookies_by_default():
    assert _settings_line(**PRODUCTION) == "True True True True 1800 43200 5 0:15:00"


@pytest.mark.django_db
def test_development_keeps_a_one_step_login_unless_configured():
    assert _settings_line(DJANGO_ENV="development").startswith("False False")
    assert _settings_line(DJANGO_ENV="development", STAFF_TWO_FACTOR="true").startswith("True")


@pytest.mark.django_db
def test_the_tunables_are_read_and_checked():
    line = _settings_line(
        SESSION_IDLE_TIMEOUT_MINUTES="10",
        SESSION_MAX_AGE_HOURS="2",
        AXES_FAILURE_LIMIT="7",
        AXES_COOLOFF_MINUTES="60",
    )
    assert line.endswith("600 7200 7 1:00:00")
    result = _boot(SESSION_IDLE_TIMEOUT_MINUTES="600", SESSION_MAX_AGE_HOURS="2")
    assert result.returncode != 0
    assert "SESSION_IDLE_TIMEOUT_MINUTES must not be longer than SESSION_MAX_AGE_HOURS" in result.stderr
    result = _boot(AXES_FAILURE_LIMIT="none")
    assert "AXES_FAILURE_LIMIT must be a whole number, got 'none'" in result.stderr
