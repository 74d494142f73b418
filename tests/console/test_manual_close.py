"""Manual close from the console: a confirmation page, POST-only, exactly one close however
often the owner clicks, through the service that audits it."""

from __future__ import annotations

import pytest
from django.db import connection

from positions.choices import CloseCommandStatus, CloseReason, PositionStatus
from positions.closes import close_command_request
from positions.models import CloseCommand, OpenPosition
from signals_app.events import Actor
from signals_app.models import AuditEvent
from tests.console.helpers import messages_of
from tests.factories import UserFactory, make_signal, open_book

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/positions/openposition/"


def _close_url(position) -> str:
    return f"{CHANGELIST}{position.pk}/close/"


def _signal_close_url(signal) -> str:
    return f"{CHANGELIST}signal/{signal.pk}/close/"


@pytest.fixture
def book():
    signal = make_signal(sl="2645.00", tp="2670.00")
    return signal, open_book(signal, 3)


def test_the_confirmation_page_lists_the_position_and_closes_nothing(owner_browser, book):
    _, positions = book

    response = owner_browser.get(_close_url(positions[0]))

    assert response.status_code == 200
    page = response.content.decode()
    assert f"#{positions[0].pk}" in page
    assert positions[0].broker_ticket in page
    assert 'name="reason"' in page
    assert 'name="note"' in page
    assert not CloseCommand.objects.exists()


def test_confirming_queues_one_manual_close_with_the_reason_and_an_audit_record(owner_browser, owner, book):
    _, positions = book

    response = owner_browser.post(
        _close_url(positions[0]), {"reason": "news", "note": "NFP in 5 minutes"}, follow=True
    )

    command = CloseCommand.objects.get()
    assert command.position_id == positions[0].pk
    assert command.reason == CloseReason.MANUAL
    assert command.status == CloseCommandStatus.PENDING
    assert command.note == "news: NFP in 5 minutes"
    assert command.requested_by == owner.username
    assert OpenPosition.objects.get(pk=positions[0].pk).status == PositionStatus.CLOSING
    event = AuditEvent.objects.get(action="position.close_requested", subject_id=positions[0].pk)
    assert event.actor == owner.username
    assert event.data["command_id"] == command.pk
    assert response.redirect_chain[-1][0] == f"{CHANGELIST}{positions[0].pk}/change/"
    assert messages_of(response) == ["1 close command(s) queued."]


def test_a_second_submit_closes_nothing_more_and_says_so(owner_browser, book):
    _, positions = book
    form = {"reason": "risk", "note": ""}

    first = owner_browser.post(_close_url(positions[0]), form, follow=True)
    again = owner_browser.post(_close_url(positions[0]), form, follow=True)

    assert CloseCommand.objects.count() == 1
    assert messages_of(first) == ["1 close command(s) queued."]
    assert messages_of(again) == [
        "0 close command(s) queued; 1 position(s) skipped (not open: already closing or closed)."
    ]
    assert AuditEvent.objects.filter(action="position.close_requested").count() == 1


def test_the_action_shows_the_confirmation_then_the_post_closes_the_open_ones(owner_browser, book):
    _, positions = book
    close_command_request(position=positions[2], reason=CloseReason.STOP_LOSS, by=Actor.system("tests"))
    selected = [position.pk for position in positions]

    # when: the changelist action
    confirmation = owner_browser.post(
        CHANGELIST, {"action": "close_selected", "_selected_action": selected, "index": 0}
    )

    # then: a confirmation, nothing new closed
    assert confirmation.status_code == 200
    page = confirmation.content.decode()
    assert "Close 3 selected position(s)?" in page
    assert "1 already closing or closed will be skipped" in page
    for pk in selected:
        assert f'<input type="hidden" name="position" value="{pk}">' in page
    assert CloseCommand.objects.count() == 1

    # when: the owner confirms
    done = owner_browser.post(
        f"{CHANGELIST}close/", {"position": selected, "reason": "signal_invalidated", "note": ""}, follow=True
    )

    assert messages_of(done) == [
        "2 close command(s) queued; 1 position(s) skipped (not open: already closing or closed)."
    ]
    manual = CloseCommand.objects.filter(reason=CloseReason.MANUAL)
    assert sorted(manual.values_list("position_id", flat=True)) == selected[:2]
    assert done.redirect_chain[-1][0] == CHANGELIST


def test_close_all_of_a_signal_closes_its_open_positions_only(owner_browser, book):
    signal, positions = book
    other = open_book(make_signal(sl="2645.00", tp="2670.00"), 1)[0]
    close_command_request(position=positions[0], reason=CloseReason.TAKE_PROFIT, by=Actor.system("tests"))

    page = owner_browser.get(_signal_close_url(signal))
    assert page.status_code == 200
    assert "<strong>2</strong> of 3 position(s) will get a close command" in page.content.decode()

    done = owner_browser.post(_signal_close_url(signal), {"reason": "risk", "note": "desk call"}, follow=True)

    assert messages_of(done) == [
        "2 close command(s) queued; 1 position(s) skipped (not open: already closing or closed)."
    ]
    manual = set(CloseCommand.objects.filter(reason=CloseReason.MANUAL).values_list("position_id", flat=True))
    assert manual == {positions[1].pk, positions[2].pk}
    assert OpenPosition.objects.get(pk=other.pk).status == PositionStatus.OPEN
    assert done.redirect_chain[-1][0] == f"{CHANGELIST}?signal={signal.pk}"


def test_the_signal_page_and_the_position_page_offer_the_buttons(owner_browser, book):
    signal, positions = book

    signal_page = owner_browser.get(f"/admin/signals_app/signal/{signal.pk}/change/").content.decode()
    position_page = owner_browser.get(f"{CHANGELIST}{positions[0].pk}/change/").content.decode()

    assert _signal_close_url(signal) in signal_page
    assert f"{CHANGELIST}signal/{signal.pk}/test-breach/" in signal_page
    assert _close_url(positions[0]) in position_page
    assert f"{CHANGELIST}{positions[0].pk}/test-breach/" in position_page


def test_a_reason_is_required_and_other_needs_a_note(owner_browser, book):
    _, positions = book

    missing = owner_browser.post(_close_url(positions[0]), {"reason": "", "note": "x"})
    other = owner_browser.post(_close_url(positions[0]), {"reason": "other", "note": "  "})

    assert missing.status_code == 200
    assert "This field is required." in missing.content.decode()
    assert other.status_code == 200
    assert "Say why when the reason is Other." in other.content.decode()
    assert not CloseCommand.objects.exists()


def test_only_get_and_post(owner_browser, book):
    _, positions = book

    assert owner_browser.put(_close_url(positions[0])).status_code == 405
    assert owner_browser.delete(_signal_close_url(book[0])).status_code == 405
    assert not CloseCommand.objects.exists()


def test_bad_or_missing_ids_close_nothing(owner_browser, book):
    response = owner_browser.post(
        f"{CHANGELIST}close/", {"position": ["1; DROP TABLE"], "reason": "risk"}, follow=True
    )
    empty = owner_browser.post(f"{CHANGELIST}close/", {"reason": "risk"}, follow=True)

    assert messages_of(response) == ["Choose between 1 and 1000 positions to close."]
    assert messages_of(empty) == ["Choose between 1 and 1000 positions to close."]
    assert owner_browser.get(f"{CHANGELIST}999999/close/").status_code == 404
    assert not CloseCommand.objects.exists()


def test_non_staff_are_sent_to_the_login_and_nothing_closes(client, book):
    signal, positions = book
    client.force_login(UserFactory(is_staff=False))

    for url in (_close_url(positions[0]), _signal_close_url(signal), f"{CHANGELIST}close/"):
        response = client.post(url, {"position": [positions[0].pk], "reason": "risk"})
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/")
    assert not CloseCommand.objects.exists()


def test_staff_need_the_position_view_permission(client, staff_with, book):
    signal, positions = book
    client.force_login(staff_with("signals_app.view_signal"))

    assert client.get(_close_url(positions[0])).status_code == 403
    assert client.post(_close_url(positions[0]), {"reason": "risk"}).status_code == 403
    assert client.post(_signal_close_url(signal), {"reason": "risk"}).status_code == 403
    assert not CloseCommand.objects.exists()


def test_staff_with_view_permission_can_close_from_the_read_only_admin(client, staff_with, book):
    signal, positions = book
    client.force_login(staff_with("positions.view_openposition", "signals_app.view_signal"))

    page = client.get(f"{CHANGELIST}{positions[0].pk}/change/")
    assert page.status_code == 200
    assert _close_url(positions[0]) in page.content.decode()
    assert 'name="_save"' not in page.content.decode()  # still read-only
    listing = client.get(CHANGELIST)
    assert 'value="close_selected"' in listing.content.decode()

    client.post(_signal_close_url(signal), {"reason": "risk", "note": ""})

    assert CloseCommand.objects.filter(reason=CloseReason.MANUAL).count() == 3


def test_a_position_already_closing_offers_no_close(owner_browser, book):
    _, positions = book
    close_command_request(position=positions[0], reason=CloseReason.STOP_LOSS, by=Actor.system("tests"))

    confirmation = owner_browser.get(_close_url(positions[0])).content.decode()
    change_page = owner_browser.get(f"{CHANGELIST}{positions[0].pk}/change/").content.decode()

    assert "None of these 1 position(s) can be closed now: there is nothing to close." in confirmation
    assert 'id="close-form"' not in confirmation
    assert _close_url(positions[0]) not in change_page
    assert f"{CHANGELIST}{positions[0].pk}/test-breach/" in change_page


def test_a_selection_over_the_limit_is_refused_before_any_confirmation(owner_browser, book, monkeypatch):
    _, positions = book
    monkeypatch.setattr("positions.admin.owner_tools.MANUAL_CLOSE_LIMIT", 2)

    response = owner_browser.post(
        CHANGELIST,
        {"action": "close_selected", "_selected_action": [p.pk for p in positions], "index": 0},
        follow=True,
    )

    assert "Select at most 2 positions at a time" in messages_of(response)[0]
    assert 'id="close-form"' not in response.content.decode()
    assert not CloseCommand.objects.exists()


def test_a_position_whose_close_failed_can_be_closed_again(owner_browser, book):
    _, positions = book
    OpenPosition.objects.filter(pk=positions[0].pk).update(status=PositionStatus.CLOSE_FAILED)

    page = owner_browser.get(f"{CHANGELIST}{positions[0].pk}/change/").content.decode()
    confirmation = owner_browser.get(_close_url(positions[0])).content.decode()
    done = owner_browser.post(_close_url(positions[0]), {"reason": "risk"}, follow=True)

    assert _close_url(positions[0]) in page
    assert "<strong>1</strong> of 1 position(s) will get a close command" in confirmation
    assert messages_of(done) == ["1 close command(s) queued."]
    assert CloseCommand.objects.get().note == "risk"


def test_ids_that_name_no_position_are_reported(owner_browser, book):
    _, positions = book

    done = owner_browser.post(
        f"{CHANGELIST}close/", {"position": [positions[0].pk, 987654], "reason": "risk"}, follow=True
    )

    assert messages_of(done) == ["1 close command(s) queued; 1 id(s) name no position."]


def test_a_signal_whose_levels_do_not_decrypt_can_still_be_closed(owner_browser, book):
    signal, positions = book
    with connection.cursor() as cursor:  # as if its Fernet key was dropped before `reencrypt`
        cursor.execute(
            "UPDATE signals_app_signal SET owner_only = 'not-a-fernet-token' WHERE id = %s", [signal.pk]
        )

    assert owner_browser.get(_signal_close_url(signal)).status_code == 200
    done = owner_browser.post(_signal_close_url(signal), {"reason": "risk"})

    assert done.status_code == 302
    assert CloseCommand.objects.filter(reason=CloseReason.MANUAL).count() == 3
