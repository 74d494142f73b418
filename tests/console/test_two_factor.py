"""The second factor of a staff login (STAFF_TWO_FACTOR on): no admin page, custom view or
session API call for a password-only session; enrolment then login with real codes; wrong,
reused and throttled codes refused; the reset command; nothing changes with it off."""

from __future__ import annotations

import threading
import time

import pytest
import time_machine
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.http import HttpResponse
from django.test import Client, RequestFactory, override_settings
from django_otp.plugins.otp_totp.models import TOTPDevice
from rest_framework.authtoken.models import Token

from ea_gateway.middleware import (
    BrowserAuthenticationMiddleware,
    BrowserAxesMiddleware,
    BrowserMessageMiddleware,
    BrowserOTPMiddleware,
    BrowserSessionMiddleware,
)
from signals_app.choices import ActorKind, AuditAction
from signals_app.models import AuditEvent
from staff_auth.middleware import StaffSessionMiddleware
from staff_auth.two_factor import base32_secret
from tests.console.auth_helpers import (
    ENROLL_URL,
    PASSWORD,
    VERIFY_URL,
    admin_paths,
    audited,
    code_for,
    password_login,
    verified_session,
)
from tests.factories import OwnerFactory, UserFactory

pytestmark = pytest.mark.django_db
two_factor_on = override_settings(STAFF_TWO_FACTOR=True)
STATUS_API = "/api/v1/admin/positions/monitor/status"


@pytest.fixture
def owner():
    user = OwnerFactory()
    user.set_password(PASSWORD)
    user.save()
    return user


def test_the_console_has_custom_views_to_guard():
    paths = admin_paths()
    for expected in ("/admin/monitor/", "/admin/guards/", "/admin/positions/openposition/export/"):
        assert expected in paths
    assert any(path.endswith("/test-breach/") for path in paths)
    assert len(paths) > 40


@two_factor_on
def test_a_password_only_session_is_sent_to_the_code_step_from_every_admin_page(client, owner):
    # given: the password step passed, no code yet
    response = password_login(client, owner.username)
    assert response.status_code == 302
    # when / then: every console page sends it to the code step, the custom views included
    for path in admin_paths():
        response = client.get(path)
        assert response.status_code == 302, path
        assert response["Location"].startswith(f"{VERIFY_URL}?next="), (path, response["Location"])
    # and the session does not authenticate the owner API either
    assert client.get(STATUS_API).status_code in {401, 403}


@two_factor_on
def test_the_admin_site_itself_refuses_a_password_only_session(client, owner):
    # without the middleware's redirect, every admin_view still refuses (has_permission)
    middleware = [entry for entry in settings.MIDDLEWARE if "StaffSessionMiddleware" not in entry]
    with override_settings(MIDDLEWARE=middleware):
        client.force_login(owner)
        for path in admin_paths():
            response = client.get(path)
            assert response.status_code == 302, path
            assert response["Location"].startswith("/admin/login/?next="), (path, response["Location"])


@two_factor_on
def test_a_verified_session_reaches_the_console_and_its_api(client, owner):
    verified_session(client, owner)
    for path in ("/admin/", "/admin/monitor/", "/admin/guards/", "/admin/signals_app/auditevent/"):
        assert client.get(path).status_code == 200, path
    assert client.get(STATUS_API).status_code == 200


@two_factor_on
def test_a_bot_token_needs_no_second_factor(client, owner):
    token = Token.objects.create(user=owner)
    response = client.get(STATUS_API, HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200


@two_factor_on
def test_enrol_then_log_in_with_real_codes_wrong_and_reused_ones_refused(client, owner):
    start = time.time()
    with time_machine.travel(start, tick=False) as clock:
        # given: the password step; no authenticator yet, so the code step leads to enrolment
        password_login(client, owner.username)
        response = client.get("/admin/")
        assert response["Location"] == f"{VERIFY_URL}?next=%2Fadmin%2F"
        response = client.get(response["Location"])
        assert response["Location"] == f"{ENROLL_URL}?next=%2Fadmin%2F"

        # the enrolment page: a QR code (inline SVG) and the secret; the same on a reload
        page = client.get(response["Location"]).content.decode()
        device = TOTPDevice.objects.get(user=owner)
        assert not device.confirmed
        assert 'id="two-factor-qr"' in page
        assert "<svg" in page
        assert 'id="two-factor-form"' in page
        assert 'id="id_otp_token"' in page
        assert base32_secret(device) in page
        assert base32_secret(device) in client.get(ENROLL_URL).content.decode()
        assert TOTPDevice.objects.filter(user=owner).count() == 1

        # a wrong code does not confirm it
        wrong = "000000" if code_for(device.bin_key) != "000000" else "111111"
        response = client.post(ENROLL_URL, {"otp_token": wrong, "next": "/admin/"})
        assert response.status_code == 200
        assert "wrong or was already used" in response.content.decode()
        # the next try, at once, is throttled (django-otp), even with the right code
        response = client.post(ENROLL_URL, {"otp_token": code_for(device.bin_key), "next": "/admin/"})
        assert "Too many wrong codes" in response.content.decode()
        assert client.get("/admin/").status_code == 302

        # when: the right code, once the throttle has passed
        clock.shift(2)
        enrol_code = code_for(device.bin_key)
        response = client.post(ENROLL_URL, {"otp_token": enrol_code, "next": "/admin/monitor/"})

        # then: confirmed, verified, in
        assert response.status_code == 302
        assert response["Location"] == "/admin/monitor/"
        device.refresh_from_db()
        assert device.confirmed
        assert client.get("/admin/monitor/").status_code == 200
        assert client.get(ENROLL_URL)["Location"] == "/admin/"  # nothing left to enrol

        # a new login: password, then the code step (not enrolment)
        client.post("/admin/logout/")
        password_login(client, owner.username)
        assert client.get("/admin/")["Location"] == f"{VERIFY_URL}?next=%2Fadmin%2F"
        page = client.get(f"{VERIFY_URL}?next=/admin/").content.decode()
        assert 'id="two-factor-form"' in page
        assert 'id="id_otp_token"' in page
        assert base32_secret(device) not in page

        # the code used to enrol is refused: each code works once
        response = client.post(VERIFY_URL, {"otp_token": enrol_code, "next": "/admin/"})
        assert "wrong or was already used" in response.content.decode()
        assert client.get("/admin/").status_code == 302

        # the app's next code is taken
        clock.shift(2)
        next_code = code_for(device.bin_key, steps_ahead=1)
        response = client.post(VERIFY_URL, {"otp_token": next_code, "next": "/admin/"})
        assert response.status_code == 302
        assert response["Location"] == "/admin/"
        assert client.get("/admin/").status_code == 200
        assert client.get(VERIFY_URL)["Location"] == "/admin/"

    # every step is audited, and none holds the code or the secret
    assert [event.data["reason"] for event in audited(AuditAction.AUTH_TWO_FACTOR_FAILED)] == [
        "wrong_or_used",
        "throttled",
        "wrong_or_used",
    ]
    assert len(audited(AuditAction.AUTH_TWO_FACTOR_ENROLLED, subject_id=owner.pk)) == 1
    assert len(audited(AuditAction.AUTH_TWO_FACTOR_PASSED, subject_id=owner.pk)) == 1
    assert len(audited(AuditAction.AUTH_LOGIN, subject_id=owner.pk)) == 2
    assert len(audited(AuditAction.AUTH_LOGOUT, subject_id=owner.pk)) == 1
    secret = base32_secret(device)
    for event in AuditEvent.objects.filter(action__startswith="auth."):
        text = repr(event.data) + event.actor
        assert enrol_code not in text
        assert secret.replace(" ", "")[:8] not in text
        assert device.key not in text
        assert PASSWORD not in text
        assert event.secret_data is None


@two_factor_on
def test_a_malformed_code_is_refused_with_a_clear_message(client, owner):
    password_login(client, owner.username)
    client.get(ENROLL_URL)
    response = client.post(ENROLL_URL, {"otp_token": "12ab", "next": "/admin/"})
    assert response.status_code == 200
    assert "Enter the 6 digits" in response.content.decode()
    assert audited(AuditAction.AUTH_TWO_FACTOR_FAILED)[0].data["reason"] == "malformed"


@two_factor_on
def test_an_enrolled_user_cannot_enrol_another_authenticator(client, owner):
    TOTPDevice.objects.create(user=owner, name="authenticator", confirmed=True)
    password_login(client, owner.username)
    response = client.get(ENROLL_URL)
    assert response["Location"] == f"{VERIFY_URL}?next=%2Fadmin%2F"
    assert TOTPDevice.objects.filter(user=owner).count() == 1


@two_factor_on
def test_the_code_pages_are_no_way_around_the_password(client, owner):
    for url in (VERIFY_URL, ENROLL_URL):
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert not TOTPDevice.objects.exists()


@two_factor_on
def test_next_is_kept_on_this_site_only(client, owner):
    verified_session(client, owner)
    assert client.get(f"{VERIFY_URL}?next=https://evil.example/")["Location"] == "/admin/"


@two_factor_on
def test_reset_removes_the_authenticator_and_the_next_login_enrols_again(client, owner):
    verified_session(client, owner)
    assert client.get("/admin/").status_code == 200

    call_command("reset_two_factor", owner.username)

    assert not TOTPDevice.objects.filter(user=owner).exists()
    # the session's verification went with the device
    response = client.get("/admin/", follow=True)
    assert response.redirect_chain[-1][0] == f"{ENROLL_URL}?next=%2Fadmin%2F"
    (event,) = audited(AuditAction.AUTH_TWO_FACTOR_RESET)
    assert event.subject_id == owner.pk
    assert event.actor_kind == ActorKind.SYSTEM
    assert event.data == {"authenticators_removed": 1}


def test_reset_of_an_unknown_user_is_a_clear_error():
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("reset_two_factor", "nobody")


def test_with_it_off_the_login_is_one_step_and_the_code_pages_do_not_exist(client, owner):
    assert settings.STAFF_TWO_FACTOR is False  # development and test default
    response = password_login(client, owner.username)
    assert response["Location"] == "/admin/"
    assert client.get("/admin/").status_code == 200
    assert client.get("/admin/monitor/").status_code == 200
    assert client.get(VERIFY_URL).status_code == 404
    assert client.get(ENROLL_URL).status_code == 404
    assert audited(AuditAction.AUTH_LOGIN)[0].data["second_factor"] == "off"


@two_factor_on
def test_a_staff_user_without_hidden_levels_permission_gets_the_same_gate(client):
    staff = UserFactory(is_staff=True)
    staff.set_password(PASSWORD)
    staff.save()
    password_login(client, staff.username)
    assert client.get("/admin/")["Location"].startswith(VERIFY_URL)


@two_factor_on
@pytest.mark.parametrize(
    ("path", "browser"),
    [("/api/v1/client/poll", False), ("/api/v1/feed/quotes", False), ("/admin/", True)],
)
def test_the_device_api_gets_none_of_the_login_machinery(path, browser):
    seen = {}

    def view(request):
        user = getattr(request, "user", None)
        seen.update(
            session=hasattr(request, "session"), otp=user is not None and hasattr(user, "is_verified")
        )
        return HttpResponse()

    # the browser stack in settings' order, around the view
    chain = BrowserSessionMiddleware(
        BrowserAuthenticationMiddleware(
            BrowserOTPMiddleware(
                StaffSessionMiddleware(BrowserMessageMiddleware(BrowserAxesMiddleware(view)))
            )
        )
    )
    response = chain(RequestFactory().get(path))

    assert response.status_code == 200
    assert seen == {"session": browser, "otp": browser}
    assert "Set-Cookie" not in response.headers


@two_factor_on
@pytest.mark.django_db(transaction=True)
def test_two_sessions_sending_one_code_at_once_get_in_once():
    owner = OwnerFactory()
    owner.set_password(PASSWORD)
    owner.save()
    device = TOTPDevice.objects.create(user=owner, name="authenticator", confirmed=True)
    clients = [Client(), Client()]
    for client in clients:
        password_login(client, owner.username)
    code = code_for(device.bin_key)
    barrier = threading.Barrier(2)
    results = []

    def send(client) -> None:
        try:
            barrier.wait()
            results.append(client.post(VERIFY_URL, {"otp_token": code, "next": "/admin/"}).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=send, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(results) == [200, 302]  # one in, the other told the code was used
    assert len(audited(AuditAction.AUTH_TWO_FACTOR_PASSED)) == 1


@two_factor_on
def test_a_session_of_a_user_who_is_not_staff_is_no_login_and_no_redirect_loop(client):
    user = UserFactory(is_staff=False)
    client.force_login(user)
    response = client.get("/admin/")
    assert response["Location"].startswith("/admin/login/")
    assert client.get("/admin/login/").status_code == 200  # the login form, not a redirect
    assert client.get(STATUS_API).status_code in {401, 403}
