"""The console's theme (django-unfold, config/settings_console.py): its sidebar shows each
user only what they may open, messages keep Django's list, and no hidden level reaches a
staff user without the permission through the re-laid lists."""

from __future__ import annotations

import re

import pytest
from django.conf import settings

from positions.alerts import alert_raise
from positions.choices import AlertKind
from positions.models import Alert
from tests.console.helpers import a_busy_desk

pytestmark = pytest.mark.django_db

LINKS = {
    "dashboard": "/admin/monitor/",
    "guards": "/admin/guards/",
    "positions": "/admin/positions/openposition/",
    "live book": "/admin/positions/openposition/live/",
    "devices": "/admin/ea_gateway/device/",
    "audit": "/admin/signals_app/auditevent/",
    "signals": "/admin/signals_app/signal/",
}


def _sidebar_links(client) -> set[str]:
    page = client.get("/admin/monitor/").content.decode()
    (sidebar,) = re.findall(r'<div id="nav-sidebar-apps".*?</nav>', page, re.S)
    hrefs = set(re.findall(r'href="([^"]+)"', sidebar))
    return {name for name, link in LINKS.items() if link in hrefs}


def test_the_theme_comes_before_the_admin_it_replaces():
    apps = settings.INSTALLED_APPS
    assert apps.index("unfold") < apps.index("django.contrib.admin")
    assert apps.index("unfold.contrib.import_export") < apps.index("import_export")
    assert str(settings.UNFOLD["SITE_URL"]) == "/admin/monitor/"


def test_the_owner_sees_every_page_in_the_sidebar(owner_browser):
    assert _sidebar_links(owner_browser) == set(LINKS)


def test_a_staff_user_sees_only_what_they_may_open(client, staff_with):
    client.force_login(staff_with("positions.view_openposition"))

    assert _sidebar_links(client) == {"dashboard", "positions"}
    assert client.get(LINKS["devices"]).status_code == 403  # what the sidebar leaves out is refused too
    assert client.get(LINKS["guards"]).status_code == 403


def test_the_live_book_shows_only_beside_the_hidden_levels(client, staff_with):
    client.force_login(staff_with("positions.view_openposition", "signals_app.view_hidden_levels"))

    assert _sidebar_links(client) == {"dashboard", "positions", "live book"}
    assert client.get(LINKS["live book"]).status_code == 200


def test_the_guards_page_shows_for_who_may_see_the_guards(client, staff_with):
    client.force_login(staff_with("positions.view_clientguard", "ea_gateway.view_device"))

    assert _sidebar_links(client) == {"dashboard", "guards", "devices"}
    assert client.get(LINKS["guards"]).status_code == 200


def test_messages_keep_their_list_class(owner_browser):
    alert_raise(kind=AlertKind.SPIKE, dedupe_key="spike:XAUUSD", message="XAUUSD jumped")
    alert = Alert.objects.get()

    response = owner_browser.post(
        "/admin/positions/alert/",
        {"action": "acknowledge", "_selected_action": [alert.pk], "index": 0},
        follow=True,
    )

    # in the list the console's tests and pages find messages by
    found = re.search(
        r'<ul class="messagelist[^"]*">\s*<li[^>]*>\s*<div[^>]*>\s*([^<]+?)\s*</div>',
        response.content.decode(),
    )
    assert found is not None
    assert found.group(1) == "1 alert(s) acknowledged."


def test_the_relaid_lists_show_no_hidden_level_without_the_permission(client, staff_with, settings):
    # given: the levels of the desk's signals (2645.00 / 2670.00, 1.08900 / 1.07500, ...)
    settings.OWNER_ALERT_EMAILS = []
    desk = a_busy_desk()
    levels = [
        value for signal in desk.signals for value in (signal.owner_only["sl"], signal.owner_only["tp"])
    ]
    client.force_login(
        staff_with(
            "positions.view_openposition",
            "positions.view_closecommand",
            "signals_app.view_signal",
            "signals_app.view_approval",
            "signals_app.view_auditevent",
        )
    )

    # when
    pages = [
        client.get(path).content.decode()
        for path in (
            "/admin/positions/openposition/?state=all",
            "/admin/positions/closecommand/",
            "/admin/signals_app/signal/",
            "/admin/signals_app/approval/",
            "/admin/signals_app/auditevent/",
            f"/admin/signals_app/signal/{desk.signals[0].pk}/change/",
        )
    ]

    # then
    for page in pages:
        assert "Northwind" in page or "XAUUSD" in page or "signal." in page  # the page has its rows
        for level in levels:
            assert level not in page


def test_our_own_pages_get_the_plain_html_look_and_unfolds_pages_keep_theirs(owner_browser):
    def body_class(path: str) -> str:
        page = owner_browser.get(path).content.decode()
        assert '<link href="/static/console/console.css" rel="stylesheet">' in page
        (classes,) = re.findall(r'<body class="([^"]*)"', page)
        return classes

    for ours in ("/admin/monitor/", "/admin/guards/"):
        assert "console-page" in body_class(ours).split(), ours
    for unfolds in ("/admin/", "/admin/positions/openposition/", "/admin/signals_app/signal/add/"):
        assert "console-page" not in body_class(unfolds).split(), unfolds
