"""Fixtures for the owner console: the owner, staff with chosen permissions, and a real
Chromium logged in as the owner (tests/console/browser.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission

from tests.console.browser import OWNER_PASSWORD, chromium_driver, log_in
from tests.factories import OwnerFactory, UserFactory


@pytest.fixture
def owner(db):
    return OwnerFactory()


@pytest.fixture
def owner_browser(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def staff_with(db) -> Callable[..., object]:
    """A staff user (not a superuser) holding exactly the named permissions."""

    def make(*permissions: str):
        user = UserFactory(is_staff=True)
        for permission in permissions:
            app_label, codename = permission.split(".")
            user.user_permissions.add(
                Permission.objects.get(content_type__app_label=app_label, codename=codename)
            )
        return get_user_model().objects.get(pk=user.pk)  # no stale permission cache

    return make


@pytest.fixture(scope="session")
def browser(tmp_path_factory):
    """One Chromium for every browser test of the run (each test logs in afresh)."""
    yield from chromium_driver(tmp_path_factory.mktemp("chromium-profile"))


@pytest.fixture
def owner_session(browser, live_server, redis_client):
    """A browser logged in as the owner through the real login form."""
    get_user_model().objects.create_superuser("owner", "owner@example.com", OWNER_PASSWORD)
    log_in(browser, live_server.url, "owner", OWNER_PASSWORD)
    return browser
