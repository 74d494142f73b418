"""Alerts in the console: listed and filtered, acknowledged once (guarded, audited), never edited."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from positions.alerts import alert_raise, alerts_acknowledge
from positions.choices import AlertKind
from positions.models import Alert
from signals_app.events import Actor
from signals_app.models import AuditEvent
from tests.console.helpers import messages_of

CHANGELIST = "/admin/positions/alert/"


def _raise(key: str = "offline:1", kind: str = AlertKind.DEVICE_OFFLINE) -> Alert:
    alert_raise(kind=kind, dedupe_key=key, message=f"problem {key}")
    return Alert.objects.get(dedupe_key=key, acknowledged_at__isnull=True)


@pytest.mark.django_db
def test_the_list_shows_and_filters_open_alerts(owner_browser):
    stale = _raise("stale:EURUSD", AlertKind.STALE_QUOTE)
    _raise("stale:EURUSD", AlertKind.STALE_QUOTE)  # the same problem again: counted, not a new row
    done = _raise("offline:9")
    alerts_acknowledge(alert_ids=[done.pk], by=Actor.system("tests"))

    everything = owner_browser.get(CHANGELIST).content.decode()
    open_only = owner_browser.get(f"{CHANGELIST}?acknowledged=no")
    by_kind = owner_browser.get(f"{CHANGELIST}?kind__exact=device_offline")

    assert "problem stale:EURUSD" in everything
    assert "problem offline:9" in everything
    assert list(open_only.context["cl"].result_list) == [stale]
    assert open_only.context["cl"].result_list[0].occurrences == 2
    assert list(by_kind.context["cl"].result_list) == [done]


@pytest.mark.django_db
def test_acknowledge_sets_who_and_when_and_audits_once(owner_browser, owner):
    alert = _raise()
    form = {"action": "acknowledge", "_selected_action": [alert.pk], "index": 0}

    first = owner_browser.post(CHANGELIST, form, follow=True)
    second = owner_browser.post(CHANGELIST, form, follow=True)

    alert.refresh_from_db()
    assert alert.acknowledged_at is not None
    assert alert.acknowledged_by == owner.username
    events = AuditEvent.objects.filter(action="alert.acknowledged")
    assert events.count() == 1
    assert (events[0].subject_type, events[0].subject_id, events[0].actor) == (
        "alert",
        alert.pk,
        owner.username,
    )
    assert events[0].data == {"kind": "device_offline", "dedupe_key": "offline:1", "occurrences": 1}
    assert messages_of(first) == ["1 alert(s) acknowledged."]
    assert messages_of(second) == ["0 alert(s) acknowledged; 1 already acknowledged."]


@pytest.mark.django_db
def test_an_acknowledged_problem_seen_again_opens_a_new_alert(owner_browser):
    alert = _raise()
    alerts_acknowledge(alert_ids=[alert.pk], by=Actor.system("tests"))

    assert alert_raise(kind=AlertKind.DEVICE_OFFLINE, dedupe_key="offline:1", message="again") is True
    assert Alert.objects.filter(dedupe_key="offline:1").count() == 2


@pytest.mark.django_db
def test_no_add_change_or_delete(owner_browser):
    alert = _raise()

    assert owner_browser.get(f"{CHANGELIST}add/").status_code == 403
    assert owner_browser.get(f"{CHANGELIST}{alert.pk}/delete/").status_code == 403
    view = owner_browser.get(f"{CHANGELIST}{alert.pk}/change/")
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    owner_browser.post(f"{CHANGELIST}{alert.pk}/change/", {"message": "edited", "occurrences": 99})
    listing = owner_browser.get(CHANGELIST).content.decode()
    assert 'value="delete_selected"' not in listing
    alert.refresh_from_db()
    assert (alert.message, alert.occurrences) == ("problem offline:1", 1)


@pytest.mark.django_db
def test_staff_need_the_alert_view_permission(client, staff_with):
    alert = _raise()
    client.force_login(staff_with("positions.view_openposition"))

    assert client.get(CHANGELIST).status_code == 403
    client.post(CHANGELIST, {"action": "acknowledge", "_selected_action": [alert.pk], "index": 0})
    assert Alert.objects.get(pk=alert.pk).acknowledged_at is None

    client.force_login(staff_with("positions.view_alert"))
    client.post(CHANGELIST, {"action": "acknowledge", "_selected_action": [alert.pk], "index": 0})
    assert Alert.objects.get(pk=alert.pk).acknowledged_at is not None


@pytest.mark.django_db(transaction=True)
def test_two_owners_acknowledging_at_once_audit_it_once():
    # given: one open alert and two owners pressing the button at the same moment
    alert = _raise()
    barrier = threading.Barrier(2)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def acknowledge(name: str) -> None:
        try:
            barrier.wait(5)
            results.append(alerts_acknowledge(alert_ids=[alert.pk], by=Actor.system(name)))
        except BaseException as error:  # reported below; a thread's exception is lost otherwise
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=acknowledge, args=(f"owner-{n}",)) for n in range(2)]

    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    # then
    assert not errors
    assert sorted(results, key=len) == [[], [alert.pk]]
    assert AuditEvent.objects.filter(action="alert.acknowledged", subject_id=alert.pk).count() == 1
