"""Creating a device or rotating its secret is post/redirect/get (issue 14): the secret
is shown once on a page reached by a redirect, a reload of that page shows it no more,
and the same form sent again (a browser resubmitting it) creates or rotates nothing."""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.db import connection
from django.test import Client as HttpClient

from ea_gateway.models import Device
from signals_app.choices import AuditAction
from signals_app.models import AuditEvent
from tests.ea_helpers import make_device
from tests.factories import ClientFactory

pytestmark = pytest.mark.django_db

ADD = "/admin/ea_gateway/device/add/"


def _once(page: str) -> str:
    """The one-time token of the first form on the page."""
    match = re.search(r'name="once" value="([^"]+)"', page)
    assert match, "the form carries no one-time token"
    return match.group(1)


def _secret_on(page: str) -> str | None:
    match = re.search(r'<code id="device-secret">([^<]+)</code>', page)
    return match.group(1) if match else None


def test_a_created_device_shows_its_secret_once_and_a_resubmitted_form_creates_nothing(
    owner_browser, redis_client
):
    client = ClientFactory(name="Alice")
    form = {"name": "alice's EA", "role": "ea", "client": client.pk}
    form["once"] = _once(owner_browser.get(ADD).content.decode())

    # when: the owner creates the device
    created = owner_browser.post(ADD, form)

    # then: redirected (303) to a page that shows the secret, never cached
    assert created.status_code == 303, created.content[:500]
    device = Device.objects.get(name="alice's EA")
    shown = owner_browser.get(created["Location"])
    assert shown.status_code == 200
    secret = _secret_on(shown.content.decode())
    assert secret == device.secret
    assert "no-store" in shown["Cache-Control"]
    # the secret is in neither the redirect's address nor the stored copy in Redis
    assert secret not in created["Location"]
    assert all(secret.encode() not in (redis_client.get(key) or b"") for key in redis_client.keys("*"))

    # when: the page is reloaded, and the same form is sent again (back, resubmit)
    again = owner_browser.get(created["Location"])
    resubmitted = owner_browser.post(ADD, form, follow=True)

    # then: the secret is not shown again, and still one device, created once
    assert _secret_on(again.content.decode()) is None
    assert "already shown" in again.content.decode()
    assert Device.objects.filter(name="alice's EA").count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.DEVICE_CREATED).count() == 1
    assert resubmitted.status_code == 200
    assert resubmitted.redirect_chain[-1][0] == f"/admin/ea_gateway/device/{device.pk}/change/"
    assert _secret_on(resubmitted.content.decode()) is None
    assert "already submitted" in resubmitted.content.decode()


def test_a_rotation_resubmitted_rotates_once(owner_browser, redis_client):
    device = make_device(name="bob's EA").device
    change = f"/admin/ea_gateway/device/{device.pk}/change/"
    rotate = f"/admin/ea_gateway/device/{device.pk}/rotate-secret/"
    once = _once(owner_browser.get(change).content.decode())

    rotated = owner_browser.post(rotate, {"once": once})
    assert rotated.status_code == 303
    secret = _secret_on(owner_browser.get(rotated["Location"]).content.decode())
    assert secret == Device.objects.get(pk=device.pk).secret

    # the same rotation sent again rotates nothing: the shown secret still works
    resubmitted = owner_browser.post(rotate, {"once": once}, follow=True)
    assert "already submitted" in resubmitted.content.decode()
    assert Device.objects.get(pk=device.pk).secret == secret
    assert AuditEvent.objects.filter(action=AuditAction.DEVICE_SECRET_ROTATED).count() == 1
    # a new form (a new token) rotates again, as asked
    fresh = _once(owner_browser.get(change).content.decode())
    assert owner_browser.post(rotate, {"once": fresh}).status_code == 303
    assert AuditEvent.objects.filter(action=AuditAction.DEVICE_SECRET_ROTATED).count() == 2


def test_a_rotation_without_its_token_is_refused_and_changes_nothing(owner_browser, redis_client):
    device = make_device(name="carol's EA").device
    before = device.secret
    refused = owner_browser.post(f"/admin/ea_gateway/device/{device.pk}/rotate-secret/", {}, follow=True)
    assert refused.status_code == 200
    assert "Reload the device page" in refused.content.decode()
    assert Device.objects.get(pk=device.pk).secret == before


def test_a_secret_page_is_for_the_owner_who_made_it(owner_browser, redis_client, staff_with):
    clt = ClientFactory(name="Dan")
    form = {"name": "dan's EA", "role": "ea", "client": clt.pk}
    form["once"] = _once(owner_browser.get(ADD).content.decode())
    location = owner_browser.post(ADD, form)["Location"]

    # another staff user who can see devices, given the address, sees no secret
    other = HttpClient()
    other.force_login(staff_with("ea_gateway.view_device", "ea_gateway.change_device"))
    assert _secret_on(other.get(location).content.decode()) is None
    # and has not used it up for the owner
    secret = Device.objects.get(name="dan's EA").secret
    assert _secret_on(owner_browser.get(location).content.decode()) == secret


def test_with_redis_unreachable_nothing_is_created_or_rotated(owner_browser, settings, unused_tcp_port):
    device = make_device(name="erin's EA").device
    before = device.secret
    form = {"name": "frank's EA", "role": "ea", "client": ClientFactory().pk}
    form["once"] = _once(owner_browser.get(ADD).content.decode())
    once = _once(owner_browser.get(f"/admin/ea_gateway/device/{device.pk}/change/").content.decode())
    settings.REDIS_URL = f"redis://127.0.0.1:{unused_tcp_port}/0"  # nothing listens there

    created = owner_browser.post(ADD, form, follow=True)
    rotated = owner_browser.post(
        f"/admin/ea_gateway/device/{device.pk}/rotate-secret/", {"once": once}, follow=True
    )

    # then: a clear message, no 500, no device, no rotation
    assert (created.status_code, rotated.status_code) == (200, 200)
    assert "unreachable" in created.content.decode()
    assert "nothing was" in rotated.content.decode().lower()
    assert not Device.objects.filter(name="frank's EA").exists()
    assert Device.objects.get(pk=device.pk).secret == before


@pytest.mark.django_db(transaction=True)
def test_a_double_click_creates_one_device(owner, redis_client, monkeypatch):
    # given: the same add form sent twice (two browser connections, one token), the second
    # arriving while the first has claimed the token but not yet committed its device
    from ea_gateway import admin as device_admin

    client = ClientFactory(name="Gina")
    browsers = [HttpClient(), HttpClient()]
    for browser in browsers:
        browser.force_login(owner)
    form = {"name": "gina's EA", "role": "ea", "client": client.pk}
    form["once"] = _once(browsers[0].get(ADD).content.decode())
    claimed = threading.Event()
    real_claim = device_admin.once_claim

    def claim_then_linger(token, *, device_id):  # the first transaction stays open a while
        real_claim(token, device_id=device_id)
        claimed.set()
        time.sleep(1.0)

    monkeypatch.setattr(device_admin, "once_claim", claim_then_linger)
    answers: list[int] = []

    def submit(browser, after: threading.Event | None) -> None:
        if after is not None:
            after.wait(10)
        answers.append(browser.post(ADD, form).status_code)
        connection.close()

    threads = [
        threading.Thread(target=submit, args=(browsers[0], None)),
        threading.Thread(target=submit, args=(browsers[1], claimed)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # then: one device, one secret issued; the other submission was told it was done
    assert Device.objects.filter(name="gina's EA").count() == 1
    assert AuditEvent.objects.filter(action=AuditAction.DEVICE_CREATED).count() == 1
    assert sorted(answers) == [302, 303]
