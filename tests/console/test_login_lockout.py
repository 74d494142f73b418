"""django-axes on the admin login: a username + IP is locked out after AXES_FAILURE_LIMIT
failed logins, even with the right password afterwards, until AXES_COOLOFF_TIME passes; a
clear lockout page; every failure and lockout audited. Bot tokens and EA signatures never
reach axes."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from axes.models import AccessAttempt
from django.test import override_settings
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.authtoken.models import Token

from signals_app.choices import ActorKind, AuditAction
from signals_app.models import AuditEvent
from tests.console.auth_helpers import PASSWORD, VERIFY_URL, audited, code_for, password_login
from tests.ea_helpers import make_device, signed_headers
from tests.factories import OwnerFactory

pytestmark = pytest.mark.django_db
LIMIT = 3
POLL = "/api/v1/client/poll"
lockout_after_three = override_settings(AXES_FAILURE_LIMIT=LIMIT, AXES_COOLOFF_TIME=timedelta(minutes=15))


@pytest.fixture
def owner():
    user = OwnerFactory()
    user.set_password(PASSWORD)
    user.save()
    return user


def _logged_in(client) -> bool:
    return client.get("/admin/").status_code == 200


@lockout_after_three
def test_lockout_after_the_limit_even_with_the_right_password(client, owner):
    # given: wrong passwords up to the limit
    for attempt in range(1, LIMIT + 1):
        response = password_login(client, owner.username, "not-the-password")
        if attempt < LIMIT:
            assert response.status_code == 200  # the login form again, with its error
            assert "Please enter the correct username and password" in response.content.decode()
    # the last one already answers with the lockout page
    assert response.status_code == 429
    assert "Login locked" in response.content.decode()

    # when: the right password from the same address
    response = password_login(client, owner.username, PASSWORD)

    # then: still locked, not logged in
    assert response.status_code == 429
    page = response.content.decode()
    assert 'id="lockout-title"' in page
    assert "/static/console/console.css" in page  # in the console's look (unfold's login layout)
    assert "--color-primary-600" in page
    assert owner.username in page
    assert "0:15:00" in page  # the cool-off, said plainly
    assert PASSWORD not in page
    assert not _logged_in(client)

    # audited: each failure (the refused right password too) and the lockout, never a password
    failures = audited(AuditAction.AUTH_LOGIN_FAILED, subject_id=owner.pk)
    assert len(failures) == LIMIT + 1
    assert {event.actor_kind for event in failures} == {ActorKind.VISITOR}
    assert {event.data["ip"] for event in failures} == {"127.0.0.1"}
    assert audited(AuditAction.AUTH_LOCKED_OUT, subject_id=owner.pk)
    assert not audited(AuditAction.AUTH_LOGIN)
    for event in AuditEvent.objects.filter(action__startswith="auth."):
        assert "not-the-password" not in repr(event.data)
        assert PASSWORD not in repr(event.data)
    assert "not-the-password" not in "".join(AccessAttempt.objects.values_list("post_data", flat=True))


@lockout_after_three
def test_the_lockout_is_per_username_and_address(client, owner):
    for _ in range(LIMIT):
        password_login(client, owner.username, "not-the-password", ip="203.0.113.9")
    assert password_login(client, owner.username, PASSWORD, ip="203.0.113.9").status_code == 429

    # the owner at their own address is not locked out by a stranger's failures
    response = password_login(client, owner.username, PASSWORD, ip="198.51.100.7")
    assert response.status_code == 302
    assert _logged_in(client)


@lockout_after_three
def test_the_lockout_ends_after_the_cool_off(client, owner):
    start = timezone.now()
    with time_machine.travel(start, tick=False) as clock:
        for _ in range(LIMIT):
            password_login(client, owner.username, "not-the-password")
        assert password_login(client, owner.username, PASSWORD).status_code == 429

        clock.shift(timedelta(minutes=16))
        response = password_login(client, owner.username, PASSWORD)
        assert response.status_code == 302
        assert _logged_in(client)


def test_an_unknown_username_is_audited_against_no_account(client):
    password_login(client, "nobody-here", "whatever-it-is")
    (event,) = audited(AuditAction.AUTH_LOGIN_FAILED)
    assert event.subject_type == "user"
    assert event.subject_id == 0
    assert event.actor == "nobody-here"


@lockout_after_three
def test_a_bot_token_works_while_its_user_is_locked_out_in_the_browser(client, owner):
    for _ in range(LIMIT):
        password_login(client, owner.username, "not-the-password")
    token = Token.objects.create(user=owner)
    response = client.get("/api/v1/admin/positions/monitor/status", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200


@lockout_after_three
def test_ea_requests_never_reach_axes(client, redis_client):
    # given: an EA, and many requests with a wrong signature
    issued = make_device()
    key = issued.device.key_id
    for _ in range(LIMIT + 2):
        headers = signed_headers(key=key, secret="not-its-secret", method="GET", path=POLL)
        assert client.get(POLL, headers=headers).status_code == 401
    # then: axes recorded nothing and the right signature still works
    assert not AccessAttempt.objects.exists()
    assert not AuditEvent.objects.filter(action__startswith="auth.").exists()
    headers = signed_headers(key=key, secret=issued.secret, method="GET", path=POLL)
    assert client.get(POLL, headers=headers).status_code == 200


@lockout_after_three
@override_settings(LOGIN_TRUSTED_PROXIES=1)
def test_behind_a_proxy_the_lockout_keys_on_the_address_the_proxy_saw(client, owner):
    def through_proxy(seen_by_proxy: str, password: str, claimed: str = ""):
        forwarded = f"{claimed}, {seen_by_proxy}" if claimed else seen_by_proxy
        return client.post(
            "/admin/login/",
            {"username": owner.username, "password": password, "next": "/admin/"},
            REMOTE_ADDR="10.0.0.2",  # the proxy
            HTTP_X_FORWARDED_FOR=forwarded,
        )

    # a stranger, whatever address they claim, is locked out at the address the proxy saw
    for attempt in range(LIMIT):
        through_proxy("203.0.113.9", "not-the-password", claimed=f"198.51.100.{attempt}")
    assert through_proxy("203.0.113.9", PASSWORD, claimed="198.51.100.7").status_code == 429
    assert {event.data["ip"] for event in audited(AuditAction.AUTH_LOGIN_FAILED)} == {"203.0.113.9"}

    # the owner, through the same proxy from their own address, logs in
    assert through_proxy("198.51.100.7", PASSWORD).status_code == 302
    assert _logged_in(client)


@lockout_after_three
@override_settings(STAFF_TWO_FACTOR=True)
def test_wrong_codes_count_towards_the_lockout_too(client, owner):
    device = TOTPDevice.objects.create(user=owner, name="authenticator", confirmed=True)
    right = code_for(device.bin_key)
    wrong = "000000" if right != "000000" else "111111"
    with time_machine.travel(timezone.now(), tick=False) as clock:
        # given: the password step passed
        assert password_login(client, owner.username).status_code == 302
        # when: wrong codes up to the limit (each after django-otp's throttle)
        for attempt in range(1, LIMIT + 1):
            clock.shift(timedelta(seconds=2**attempt))
            response = client.post(VERIFY_URL, {"otp_token": wrong, "next": "/admin/"})
        # then: the lockout page, the half-logged-in session ended, the password refused too
        assert response.status_code == 429
        assert "Login locked" in response.content.decode()
        assert client.get("/admin/")["Location"].startswith("/admin/login/")
        assert password_login(client, owner.username).status_code == 429

    assert len(audited(AuditAction.AUTH_TWO_FACTOR_FAILED, subject_id=owner.pk)) == LIMIT
    assert audited(AuditAction.AUTH_LOCKED_OUT, subject_id=owner.pk)
    # the wrong codes are not also reported as wrong passwords; the refused password is
    assert len(audited(AuditAction.AUTH_LOGIN_FAILED)) == 1
    for event in AuditEvent.objects.filter(action__startswith="auth."):
        assert wrong not in repr(event.data)


@lockout_after_three
@override_settings(STAFF_TWO_FACTOR=True)
def test_a_right_code_clears_the_wrong_ones_before_it(client, owner):
    device = TOTPDevice.objects.create(user=owner, name="authenticator", confirmed=True)
    with time_machine.travel(timezone.now(), tick=False) as clock:
        password_login(client, owner.username)
        wrong = "000000" if code_for(device.bin_key) != "000000" else "111111"
        client.post(VERIFY_URL, {"otp_token": wrong, "next": "/admin/"})
        assert AccessAttempt.objects.filter(username=owner.username).exists()
        clock.shift(2)
        response = client.post(VERIFY_URL, {"otp_token": code_for(device.bin_key), "next": "/admin/"})
        assert response.status_code == 302
    assert not AccessAttempt.objects.filter(username=owner.username).exists()
