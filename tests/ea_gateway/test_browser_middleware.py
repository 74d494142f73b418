"""The browser's middleware skips the signed device API, and only it (ea_gateway.middleware):
the admin keeps its session and CSRF protection, the device API its HMAC authentication."""

from __future__ import annotations

import pytest
from django.http import HttpResponse
from django.test import Client as DjangoClient
from django.test import RequestFactory
from django.urls import resolve, reverse

from ea_gateway.api import urls as device_api_urls
from ea_gateway.api.authentication import HMACDeviceAuthentication
from ea_gateway.middleware import (
    BrowserAuthenticationMiddleware,
    BrowserMessageMiddleware,
    BrowserSessionMiddleware,
    device_api_paths,
)
from tests.ea_helpers import ea_for, make_device
from tests.factories import OwnerFactory

PASSWORD = "correct horse battery staple"


def test_the_skipped_paths_are_the_device_api_views_and_each_authenticates_by_hmac_alone():
    paths = device_api_paths()

    assert paths == {reverse(pattern.name) for pattern in device_api_urls.urlpatterns}
    assert {"/api/v1/client/poll", "/api/v1/client/close-commands", "/api/v1/feed/quotes"} <= paths
    for path in paths:
        view = resolve(path).func.cls
        assert view.authentication_classes == [HMACDeviceAuthentication], path
    for path in ("/admin/", "/admin/login/", "/api/v1/signals", "/healthz", "/api/v1/client/poll/"):
        assert path not in paths


@pytest.mark.parametrize(
    ("path", "browser"),
    [
        ("/api/v1/client/poll", False),
        ("/api/v1/client/close-commands", False),
        ("/api/v1/feed/quotes", False),
        ("/admin/", True),
        ("/api/v1/admin/positions/monitor/status", True),
        ("/api/v1/client/poll-and-more", True),
    ],
)
def test_session_user_and_messages_are_set_up_only_off_the_device_api(path, browser):
    seen = {}

    def view(request):
        seen.update(
            session=hasattr(request, "session"),
            user=hasattr(request, "user"),
            messages=hasattr(request, "_messages"),
        )
        return HttpResponse()

    chain = BrowserSessionMiddleware(BrowserAuthenticationMiddleware(BrowserMessageMiddleware(view)))

    chain(RequestFactory().get(path))

    assert seen == {"session": browser, "user": browser, "messages": browser}


@pytest.mark.django_db
def test_the_admin_still_refuses_a_post_without_its_csrf_token():
    owner = OwnerFactory()
    owner.set_password(PASSWORD)
    owner.save()
    browser = DjangoClient(enforce_csrf_checks=True)

    refused = browser.post("/admin/login/", {"username": owner.username, "password": PASSWORD})
    assert refused.status_code == 403

    token = browser.get("/admin/login/").cookies["csrftoken"].value
    logged_in = browser.post(
        "/admin/login/", {"username": owner.username, "password": PASSWORD, "csrfmiddlewaretoken": token}
    )
    assert logged_in.status_code == 302
    assert browser.get("/admin/").status_code == 200  # the session holds


@pytest.mark.django_db
def test_an_owner_session_opens_nothing_on_the_device_api(redis_client):
    owner = OwnerFactory()
    browser = DjangoClient()
    browser.force_login(owner)

    response = browser.get("/api/v1/client/poll")

    assert response.status_code == 401
    assert "sessionid" not in response.cookies
    assert "csrftoken" not in response.cookies


@pytest.mark.django_db
def test_a_signed_request_is_answered_with_the_security_headers_and_no_cookie(redis_client):
    ea = ea_for(make_device())

    response = ea.poll()

    assert response.status_code == 200, response.content
    assert response.json() == {"approvals": []}
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert not response.cookies
    assert ea.poll().status_code == 200
