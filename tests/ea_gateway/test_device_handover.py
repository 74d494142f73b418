"""A client's EA revoked or replaced (issue 15, finding 8): the closes of its live
positions follow the client to its active device, audited; with no device to take
them, the owner is alerted; nothing reveals a hidden level."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from ea_gateway.services import device_heartbeat, device_revoke
from positions.choices import AlertKind, CloseCommandStatus, CloseReason, PositionStatus
from positions.close_delivery import close_commands_deliver
from positions.closes import close_command_request
from positions.models import Alert, CloseCommand, OpenPosition
from signals_app.choices import AuditAction
from signals_app.events import Actor
from signals_app.models import AuditEvent
from tests.ea_helpers import ea_for, make_device
from tests.factories import ClientFactory, OwnerFactory, make_signal, open_book
from tests.secrecy import find_levels

pytestmark = pytest.mark.django_db

SL, TP = Decimal("2645.00"), Decimal("2670.00")
OWNER = Actor.system("owner-test")


@pytest.fixture
def book(redis_client):
    """A client with one EA and one open gold position filled by it."""
    signal = make_signal(sl=str(SL), tp=str(TP))  # published before the client exists: no approval
    client = ClientFactory()
    old = make_device(client=client, name="old EA")
    position = open_book(signal, 1, clients=[client])[0]
    return client, old, position


def _close(position) -> CloseCommand:
    return close_command_request(position=position, reason=CloseReason.MANUAL, by=OWNER)


def _events(action: str, subject) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, subject_id=subject.pk).order_by("pk"))


@pytest.mark.django_db(transaction=True)  # committed, as in production: the "nothing pending" markers apply
def test_a_replaced_ea_hands_its_pending_close_to_the_new_one(book):
    # given: a close waiting for the old EA, and the client's new EA already asking (and
    # told "nothing", which Redis remembers for it: only a wake-up makes it look again)
    client, old, position = book
    command = _close(position)
    new = ea_for(make_device(client=client, name="new EA"))
    assert new.close_commands().json()["commands"] == []
    _reports(new, position.broker_ticket)  # the new EA runs on the same account

    # when: the owner revokes the old EA
    device_revoke(device=old.device, by=OWNER)

    # then: the new EA gets the same command at once; the old one is refused
    delivered = new.close_commands().json()["commands"]
    assert [item["command_id"] for item in delivered] == [command.pk]
    assert ea_for(old).close_commands().status_code == 401
    position.refresh_from_db()
    assert position.device_id == new.device.pk
    assert CloseCommand.objects.get(pk=command.pk).device_id == new.device.pk
    # audited, with who did it
    (moved,) = _events(AuditAction.POSITION_DEVICE_CHANGED, position)
    assert (moved.actor, moved.data) == (
        OWNER.name,
        {"from_device_id": old.device.pk, "to_device_id": new.device.pk},
    )
    (readdressed,) = _events(AuditAction.CLOSE_COMMAND_READDRESSED, command)
    assert readdressed.data["to_device_id"] == new.device.pk
    assert readdressed.data["was"] == CloseCommandStatus.PENDING
    # and the new EA's acknowledgement closes the position, once
    ack = {"command_id": command.pk, "status": "executed", "close_price": "2651.00", "closed_volume": "0.10"}
    assert new.close_ack(ack).status_code == 200
    assert OpenPosition.objects.get(pk=position.pk).status == PositionStatus.CLOSED_MANUAL
    assert ea_for(old).close_ack(ack).status_code == 401


def test_a_close_leased_to_the_revoked_ea_goes_to_the_new_one_once(book):
    # given: a full close delivered to the old EA, never acknowledged
    client, old, position = book
    command = _close(position)
    assert [c.pk for c in close_commands_deliver(device_id=old.device.pk, limit=10)] == [command.pk]
    new = ea_for(make_device(client=client, name="new EA"))
    _reports(new, position.broker_ticket)

    device_revoke(device=old.device, by=OWNER)

    # then: pending again for the new EA (a ticket cannot be closed twice at the broker),
    # its attempts kept; one active command for the position, as ever
    command.refresh_from_db()
    assert (command.status, command.device_id, command.attempts) == (
        CloseCommandStatus.PENDING,
        new.device.pk,
        1,
    )
    assert [item["command_id"] for item in new.close_commands().json()["commands"]] == [command.pk]
    assert CloseCommand.objects.filter(position=position).count() == 1


def test_a_partial_close_leased_to_the_revoked_ea_is_not_sent_again(book):
    # given: half the position's volume delivered to the old EA, never acknowledged:
    # whether it executed is unknown, and sending it again could close a second half
    client, old, position = book
    OpenPosition.objects.filter(pk=position.pk).update(status=PositionStatus.CLOSING)
    command = CloseCommand.objects.create(
        position=position,
        device=old.device,
        volume=Decimal("0.05"),
        reason=CloseReason.PARTIAL_TP,
        partial_index=0,
        status=CloseCommandStatus.DELIVERED,
        attempts=1,
        next_attempt_at=position.opened_at,
        requested_by="scanner",
    )
    new = ea_for(make_device(client=client, name="new EA"))
    _reports(new, position.broker_ticket)

    device_revoke(device=old.device, by=OWNER)

    # then: it expires, the position needs the desk (now on the new EA), the owner is told
    command.refresh_from_db()
    assert command.status == CloseCommandStatus.EXPIRED
    position.refresh_from_db()
    assert (position.status, position.device_id) == (PositionStatus.CLOSE_FAILED, new.device.pk)
    assert new.close_commands().json()["commands"] == []
    alert = Alert.objects.get(kind=AlertKind.CLOSE_FAILED, position=position)
    assert "revoked" in alert.message


def test_revoking_the_last_ea_alerts_the_owner_and_a_new_ea_takes_over(
    book, django_capture_on_commit_callbacks
):
    client, old, position = book
    command = _close(position)

    # when: the client's only EA is revoked
    device_revoke(device=old.device, by=OWNER)

    # then: nothing can close the position: the owner is alerted, the command stays
    alert = Alert.objects.get(kind=AlertKind.NO_ACTIVE_DEVICE, acknowledged_at__isnull=True)
    assert alert.position_id == position.pk
    assert f"Client #{client.pk}" in alert.message
    assert CloseCommand.objects.get(pk=command.pk).device_id == old.device.pk

    # when: the owner creates the client's new EA: it has not said what its account holds
    with django_capture_on_commit_callbacks(execute=True):
        new = ea_for(make_device(client=client, name="new EA"))

    # then: nothing moves yet (a new EA may run on another account, where the same
    # ticket number is someone else's trade)
    assert new.close_commands().json()["commands"] == []
    assert OpenPosition.objects.get(pk=position.pk).device_id == old.device.pk

    # when: its first heartbeat reports the position's ticket
    with django_capture_on_commit_callbacks(execute=True):
        _reports(new, position.broker_ticket, "77")

    # then: it gets the waiting close, the position is its own from now on, and the
    # alert is closed by the system, audited
    assert [item["command_id"] for item in new.close_commands().json()["commands"]] == [command.pk]
    assert OpenPosition.objects.get(pk=position.pk).device_id == new.device.pk
    alert.refresh_from_db()
    assert alert.acknowledged_at is not None
    (acknowledged,) = _events(AuditAction.ALERT_ACKNOWLEDGED, alert)
    assert acknowledged.data["kind"] == AlertKind.NO_ACTIVE_DEVICE
    (moved,) = _events(AuditAction.POSITION_DEVICE_CHANGED, OpenPosition.objects.get(pk=position.pk))
    assert moved.actor == new.device.key_id
    # a close queued later goes to the new EA too
    assert ack_failed(new, command) == 200
    later = _close(OpenPosition.objects.get(pk=position.pk))
    assert later.device_id == new.device.pk


def _reports(ea, *tickets: str) -> None:
    """The EA's signed heartbeat: its account holds ``tickets``."""
    body = {"balance": "1000.00", "equity": "1000.00", "open_tickets": list(tickets)}
    assert ea.heartbeat(body).status_code == 200


def test_a_lone_ea_that_never_reported_the_ticket_does_not_take_it(book):
    # given: the client's other EA, on another account: its heartbeat lists other tickets
    client, old, position = book
    command = _close(position)
    other = ea_for(make_device(client=client, name="second account"))
    _reports(other, "123456789")

    # when: the position's EA is revoked
    device_revoke(device=old.device, by=OWNER)

    # then: the other EA is not handed a ticket it does not hold (closing by ticket
    # there could close an unrelated trade): the close stays, the owner is alerted
    assert other.close_commands().json()["commands"] == []
    assert CloseCommand.objects.get(pk=command.pk).device_id == old.device.pk
    assert OpenPosition.objects.get(pk=position.pk).device_id == old.device.pk
    assert Alert.objects.filter(kind=AlertKind.NO_ACTIVE_DEVICE, acknowledged_at__isnull=True).exists()

    # and a heartbeat that still does not report it changes nothing
    _reports(other, "123456789", "5")
    assert OpenPosition.objects.get(pk=position.pk).device_id == old.device.pk


def test_a_heartbeat_never_takes_a_ticket_of_an_active_device_or_another_client(book):
    client, old, position = book
    # given: the position's EA still active; an EA of the same client and one of another
    # client both report its ticket number (their accounts hold a trade with that number)
    same = ea_for(make_device(client=client, name="second account"))
    stranger = ea_for(make_device(client=ClientFactory(), name="someone else"))

    _reports(same, position.broker_ticket)
    _reports(stranger, position.broker_ticket)

    # then: a position moves only off a revoked device
    assert OpenPosition.objects.get(pk=position.pk).device_id == old.device.pk
    device_revoke(device=old.device, by=OWNER)
    assert OpenPosition.objects.get(pk=position.pk).device_id == same.device.pk


def ack_failed(ea, command) -> int:
    return ea.close_ack({"command_id": command.pk, "status": "failed", "error": "requote"}).status_code


def test_with_several_eas_the_one_that_reported_the_ticket_takes_it(book):
    client, old, position = book
    # given: two active EAs on two accounts; only the second reported the position's ticket
    first = make_device(client=client, name="account A")
    second = make_device(client=client, name="account B")
    device_heartbeat(device=first.device, balance=Decimal(1), equity=Decimal(1), open_tickets=["other"])
    device_heartbeat(
        device=second.device, balance=Decimal(1), equity=Decimal(1), open_tickets=[position.broker_ticket]
    )

    device_revoke(device=old.device, by=OWNER)

    assert OpenPosition.objects.get(pk=position.pk).device_id == second.device.pk
    assert not Alert.objects.filter(kind=AlertKind.NO_ACTIVE_DEVICE).exists()


def test_with_several_eas_and_no_way_to_tell_nothing_is_guessed(book):
    client, old, position = book
    command = _close(position)
    make_device(client=client, name="account A")
    make_device(client=client, name="account B")

    device_revoke(device=old.device, by=OWNER)

    # the same ticket number may exist on both accounts: the close stays, the owner decides
    assert CloseCommand.objects.get(pk=command.pk).device_id == old.device.pk
    assert OpenPosition.objects.get(pk=position.pk).device_id == old.device.pk
    assert Alert.objects.filter(kind=AlertKind.NO_ACTIVE_DEVICE, position=position).exists()


def test_another_clients_device_never_takes_a_position(book):
    client, old, position = book
    _close(position)
    stranger = ea_for(make_device(client=ClientFactory(), name="someone else"))

    device_revoke(device=old.device, by=OWNER)

    assert stranger.close_commands().json()["commands"] == []
    assert OpenPosition.objects.get(pk=position.pk).device_id == old.device.pk


def test_the_handover_reveals_no_hidden_level(book):
    # given: a close leased to the old EA, one pending, and a client left without an EA
    client, old, position = book
    command = _close(position)
    close_commands_deliver(device_id=old.device.pk, limit=10)
    _reports(ea_for(make_device(client=client, name="new EA")), position.broker_ticket)
    device_revoke(device=old.device, by=OWNER)
    signal = make_signal(sl=str(SL), tp=str(TP))
    other_client = ClientFactory()
    lone = make_device(client=other_client, name="lone EA")
    open_book(signal, 1, clients=[other_client])
    device_revoke(device=lone.device, by=OWNER)

    # then: neither the alerts nor the audit of the handover hold a level
    texts = [alert.message for alert in Alert.objects.all()]
    texts += [
        json.dumps(event.data)
        for event in AuditEvent.objects.filter(
            action__in=[AuditAction.POSITION_DEVICE_CHANGED, AuditAction.CLOSE_COMMAND_READDRESSED]
        )
    ]
    assert len(texts) >= 3
    assert find_levels("\n".join(texts), [SL, TP]) == []
    assert CloseCommand.objects.get(pk=command.pk).status == CloseCommandStatus.PENDING


def test_the_admin_revoke_says_what_became_of_the_positions(book, client):
    # given: the owner in the admin, a client with one EA and a live position
    _, old, position = book
    owner = OwnerFactory()
    client.force_login(owner)
    url = f"/admin/ea_gateway/device/{old.device.pk}/revoke/"

    # when: the owner revokes the client's only EA
    response = client.post(url, follow=True)

    # then: told the position is stranded; the alert and the audit name the owner
    shown = [str(message) for message in response.context["messages"]]
    assert any("1 live position(s) stay on it" in text for text in shown), shown
    assert Alert.objects.filter(kind=AlertKind.NO_ACTIVE_DEVICE, position=position).exists()
    assert (
        AuditEvent.objects.get(action=AuditAction.DEVICE_REVOKED, subject_id=old.device.pk).actor
        == owner.username
    )
