"""The browser's middleware skips the signed device API, and only it (ea_gateway.middleware):
the admin keeps its session and CSRF protection, the device API its HMAC authentication."""

from __future__ import annotations

import secrets
import sys
import types

import pytest
from django.core.checks import Tags, run_checks
from django.http import HttpResponse
from django.test import Client as DjangoClient
from django.test import RequestFactory
from django.urls import include, path, resolve, reverse

from ea_gateway.api import urls as device_api_urls
from ea_gateway.api import views
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
    for device_path in paths:
        view = resolve(device_path).func.cls
        assert view.authentication_classes == [HMACDeviceAuthentication], device_path
    for device_path in ("/admin/", "/admin/login/", "/api/v1/signals", "/healthz", "/api/v1/client/poll/"):
        assert device_path not in paths


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


@pytest.fixture
def device_api_with(settings, monkeypatch):
    """The device API's URL module with more patterns (those a new endpoint could come
    with), mounted at /api/v1/ by a URL map of its own: the project's URL map keeps the
    patterns it read first, and keeps them."""

    def extend(*patterns) -> None:
        monkeypatch.setattr(device_api_urls, "urlpatterns", [*device_api_urls.urlpatterns, *patterns])
        url_map = types.ModuleType(f"device_api_map_{secrets.token_hex(4)}")
        url_map.urlpatterns = [path("api/v1/", include(device_api_urls))]
        monkeypatch.setitem(sys.modules, url_map.__name__, url_map)
        settings.ROOT_URLCONF = url_map.__name__

    return extend


def _device_api_errors() -> list[str]:
    return [message.msg for message in run_checks(tags=[Tags.urls]) if message.id == "ea_gateway.E001"]


def test_the_device_api_as_mounted_passes_the_check():
    assert _device_api_errors() == []


@pytest.mark.parametrize(
    ("pattern", "named"),
    [
        (path("client/positions/<int:position_id>", views.HeartbeatView.as_view(), name="ea-position"),
         "'client/positions/<int:position_id>' [name='ea-position']"),
        (path("client/unnamed", views.HeartbeatView.as_view()), "'client/unnamed'"),
        (path("client/poll", views.HeartbeatView.as_view(), name="ea-poll-again"),
         "'client/poll' [name='ea-poll-again'] reverses to /api/v1/client/poll, which another view answers"),
        (path("client/more/", include([path("positions", views.HeartbeatView.as_view(), name="ea-more")])),
         "is an include()"),
    ],
    ids=["converter", "no name", "shadowed", "include"],
)  # fmt: skip
def test_a_device_api_pattern_the_middleware_cannot_skip_fails_the_check(device_api_with, pattern, named):
    # given: a device-API pattern without an exact path of its own
    device_api_with(pattern)

    # when: the system checks run (manage.py check, migrate, runserver)
    errors = _device_api_errors()

    # then: it is named, and the device API's other paths are still skipped
    assert len(errors) == 1
    assert named in errors[0]
    assert {"/api/v1/client/poll", "/api/v1/client/heartbeat"} <= device_api_paths()


def test_a_device_api_path_that_is_not_skipped_runs_the_browser_middleware(device_api_with):
    # What the check prevents: the endpoint works, but pays for the browser's middleware.
    device_api_with(
        path("client/positions/<int:position_id>", views.HeartbeatView.as_view(), name="ea-position")
    )
    seen = {}

    def view(request):
        seen.update(session=hasattr(request, "session"), user=hasattr(request, "user"))
        return HttpResponse()

    BrowserSessionMiddleware(BrowserAuthenticationMiddleware(view))(
        RequestFactory().get("/api/v1/client/positions/7")
    )

    assert "/api/v1/client/positions/7" not in device_api_paths()
    assert seen == {"session": True, "user": True}


def test_a_device_api_mounted_twice_fails_the_check(device_api_with, settings):
    settings.ROOT_URLCONF = "tests.ea_gateway.urls_device_api_twice"

    assert any("mounted 2 times" in error for error in _device_api_errors())
