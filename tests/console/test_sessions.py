"""Staff sessions end after SESSION_IDLE_TIMEOUT_SECONDS without a request and at the latest
SESSION_COOKIE_AGE after their login; the expiry is audited and a form posted after it
reaches the login page."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.contrib.sessions.models import Session
from django.utils import timezone

from signals_app.choices import AuditAction
from tests.console.auth_helpers import PASSWORD, audited, password_login
from tests.factories import OwnerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def owner():
    user = OwnerFactory()
    user.set_password(PASSWORD)
    user.save()
    return user


def test_the_defaults_an_owner_expects():
    assert settings.SESSION_IDLE_TIMEOUT_SECONDS == 30 * 60
    assert settings.SESSION_COOKIE_AGE == 12 * 3600
    assert settings.SESSION_COOKIE_HTTPONLY is True


def test_an_idle_session_ends_and_the_expiry_is_audited(client, owner):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        # given: a logged-in owner
        password_login(client, owner.username)
        assert client.get("/admin/").status_code == 200
        session_key = client.session.session_key

        # when: 31 minutes without a request
        clock.shift(timedelta(minutes=31))
        response = client.get("/admin/monitor/")

        # then: logged out, sent to the login page, audited
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/?next=/admin/monitor/")
        assert not Session.objects.filter(session_key=session_key).exists()
        (event,) = audited(AuditAction.AUTH_SESSION_EXPIRED, subject_id=owner.pk)
        assert event.data["reason"] == "idle"
        assert not audited(AuditAction.AUTH_LOGOUT)  # the user did not log out
        assert client.get("/admin/").status_code == 302


def test_activity_keeps_a_session_until_its_maximum_age(client, owner):
    with time_machine.travel(timezone.now(), tick=False) as clock:
        password_login(client, owner.username)
        # a request every 20 minutes keeps it alive ...
        for _ in range(35):  # 11 h 40 min
            clock.shift(timedelta(minutes=20))
            assert client.get("/admin/").status_code == 200
        # ... until 12 hours after the login, however active
        clock.shift(timedelta(minutes=20))
        assert client.get("/admin/").status_code == 302
        (event,) = audited(AuditAction.AUTH_SESSION_EXPIRED, subject_id=owner.pk)
        assert event.data["reason"] == "max_age"


def test_a_form_posted_after_the_expiry_reaches_the_login_page(client, owner):
    client.enforce_csrf_checks = True
    with time_machine.travel(timezone.now(), tick=False) as clock:
        password_login(client, owner.username)
        page = client.get("/admin/signals_app/client/add/")
        token = page.context["csrf_token"]
        clock.shift(timedelta(minutes=45))
        response = client.post("/admin/signals_app/client/add/", {"csrfmiddlewaretoken": token, "name": "x"})
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")


def test_logout_is_audited(client, owner):
    password_login(client, owner.username)
    client.post("/admin/logout/")
    (event,) = audited(AuditAction.AUTH_LOGOUT, subject_id=owner.pk)
    assert event.actor == owner.username
    assert event.data == {"ip": "127.0.0.1"}
