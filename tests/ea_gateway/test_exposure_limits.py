"""Exposure limits through the real signed EA API: the poll holds back approvals beyond a
client's max open positions or max volume per instrument (whole, audited once), and
hands them out when room frees up."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.test import override_settings

from positions.choices import AlertKind, CloseReason, PositionStatus
from positions.close_delivery import CloseResult, close_command_ack
from positions.closes import close_command_request
from positions.models import Alert, OpenPosition
from signals_app.choices import AuditAction
from signals_app.events import Actor
from signals_app.models import Approval, AuditEvent, Client
from tests.ea_helpers import ea_for, make_device
from tests.factories import ClientFactory, make_signal

pytestmark = pytest.mark.django_db(transaction=True)

OWNER = Actor.system("tests")


def _signal(symbol: str = "XAUUSD", entry: str = "2650.50"):
    sl, tp = ("2600.00", "2700.00") if symbol == "XAUUSD" else ("1.05000", "1.12000")
    return make_signal(symbol=symbol, side="buy", entry=entry, sl=sl, tp=tp)


def _polled(ea) -> list[int]:
    response = ea.poll()
    assert response.status_code == 200
    return [item["approval_id"] for item in response.json()["approvals"]]


def _fill(ea, approval_id: int, ticket: str, volume: str = "0.10") -> int:
    response = ea.ack(
        {
            "approval_id": approval_id,
            "status": "placed",
            "broker_ticket": ticket,
            "entry_price": "2650.50",
            "volume": volume,
        }
    )
    assert response.status_code == 200, response.content
    return response.json()["position_id"]


def _held_back_audits(approval_id: int) -> int:
    return AuditEvent.objects.filter(
        action=AuditAction.APPROVAL_HELD_BACK, subject_type="approval", subject_id=approval_id
    ).count()


@pytest.fixture
def trader(redis_client):
    client = ClientFactory(auto_approve=True, default_volume=Decimal("0.10"), max_open_positions=2)
    return client, ea_for(make_device(client=client))


def test_the_poll_holds_back_the_approval_beyond_max_open_positions_until_a_position_closes(trader):
    client, ea = trader
    first, second, third = (_signal(entry=entry) for entry in ("2650.50", "2651.50", "2652.50"))
    ids = [signal.approvals.get(client=client).pk for signal in (first, second, third)]

    # given: two approvals fit, the third would make three positions
    assert _polled(ea) == ids[:2]
    # a poll again, and a second device of the same client: still the same two (handed out, unfilled)
    other = ea_for(make_device(client=client, name="EA 2"))
    assert _polled(other) == ids[:2]
    assert _polled(ea) == ids[:2]
    position_id = _fill(ea, ids[0], "t-1")
    _fill(ea, ids[1], "t-2")
    assert _polled(ea) == []
    # held back once: one audit event however many polls
    assert _held_back_audits(ids[2]) == 1
    assert Approval.objects.get(pk=ids[2]).status == "approved"

    # when: a position closes
    command = close_command_request(
        position=OpenPosition.objects.get(pk=position_id), reason=CloseReason.MANUAL, by=OWNER
    )
    close_command_ack(
        command_id=command.pk,
        device_id=ea.device.pk,
        result=CloseResult(
            executed=True, close_price=Decimal("2651"), closed_volume=Decimal("0.10"), error=""
        ),
        by=OWNER,
    )

    # then: the held-back approval goes
    assert _polled(ea) == [ids[2]]
    assert _held_back_audits(ids[2]) == 1


def test_a_close_failed_position_still_counts(trader):
    client, ea = trader
    first, second, third = (_signal(entry=entry) for entry in ("2650.50", "2651.50", "2652.50"))
    ids = [signal.approvals.get(client=client).pk for signal in (first, second, third)]
    _polled(ea)
    _fill(ea, ids[0], "t-1")
    position_id = _fill(ea, ids[1], "t-2")
    OpenPosition.objects.filter(pk=position_id).update(status=PositionStatus.CLOSE_FAILED)

    assert _polled(ea) == []


def test_max_volume_per_instrument_holds_back_a_whole_approval_never_a_part(redis_client):
    client = ClientFactory(
        auto_approve=True, default_volume=Decimal("0.10"), max_volume_per_instrument=Decimal("0.25")
    )
    ea = ea_for(make_device(client=client))
    gold = [_signal(entry=entry) for entry in ("2650.50", "2651.50", "2652.50")]
    euro = _signal(symbol="EURUSD", entry="1.08500")
    gold_ids = [signal.approvals.get(client=client).pk for signal in gold]
    euro_id = euro.approvals.get(client=client).pk

    polled = _polled(ea)

    # 0.10 + 0.10 fit in 0.25 of gold; the third 0.10 would make 0.30: held back whole
    assert sorted(polled) == sorted([*gold_ids[:2], euro_id])
    assert gold_ids[2] not in polled
    assert Approval.objects.get(pk=gold_ids[2]).volume == Decimal("0.10")
    assert _held_back_audits(gold_ids[2]) == 1
    assert AuditEvent.objects.get(action=AuditAction.APPROVAL_HELD_BACK).data["limit"] == (
        "max_volume_per_instrument"
    )


@override_settings(GUARD_MAX_OPEN_POSITIONS=1)
def test_the_global_default_applies_where_the_client_has_no_limit_of_its_own(redis_client):
    client = ClientFactory(auto_approve=True)
    ea = ea_for(make_device(client=client))
    ids = [_signal(entry=e).approvals.get(client=client).pk for e in ("2650.50", "2651.50")]

    assert _polled(ea) == ids[:1]


def test_no_limit_hands_out_everything(redis_client):
    client = ClientFactory(auto_approve=True)
    ea = ea_for(make_device(client=client))
    ids = [_signal(entry=e).approvals.get(client=client).pk for e in ("2650.50", "2651.50", "2652.50")]

    assert _polled(ea) == ids
    assert not AuditEvent.objects.filter(action=AuditAction.APPROVAL_HELD_BACK).exists()


def test_two_devices_polling_at_once_never_hand_out_more_than_the_limit(redis_client):
    client = ClientFactory(auto_approve=True, max_open_positions=3)
    devices = [ea_for(make_device(client=client, name=f"EA {n}")) for n in range(4)]
    ids = [_signal(entry=f"{2650 + n}.50").approvals.get(client=client).pk for n in range(8)]
    barrier = threading.Barrier(len(devices))
    answers: list[list[int]] = []

    def poll(ea) -> None:
        try:
            barrier.wait()
            answers.append(_polled(ea))
        finally:
            connection.close()

    threads = [threading.Thread(target=poll, args=(ea,)) for ea in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    handed = set().union(*map(set, answers))
    assert handed == set(ids[:3])
    assert Approval.objects.filter(pk__in=ids, handed_out_at__isnull=False).count() == 3
    for approval_id in ids[3:]:
        assert _held_back_audits(approval_id) == 1


def test_a_fill_beyond_the_limit_is_watched_and_flagged(trader):
    client, ea = trader
    ids = [_signal(entry=e).approvals.get(client=client).pk for e in ("2650.50", "2651.50", "2652.50")]
    _polled(ea)
    _fill(ea, ids[0], "t-1")
    _fill(ea, ids[1], "t-2")

    # an EA placing the approval it was never handed (its id guessed)
    position_id = _fill(ea, ids[2], "t-3")

    assert OpenPosition.objects.get(pk=position_id).status == PositionStatus.OPEN
    alert = Alert.objects.get(kind=AlertKind.OVER_EXPOSURE)
    assert alert.position_id == position_id
    event = AuditEvent.objects.get(action=AuditAction.POSITION_OVER_EXPOSURE)
    assert (event.subject_id, event.data["limit"], event.data["live_positions"]) == (
        position_id,
        "max_open_positions",
        3,
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_open_positions", 0),
        ("max_volume_per_instrument", Decimal("0")),
        ("max_volume_per_instrument", Decimal("-1")),
        ("max_volume_per_instrument", Decimal("0.001")),
    ],
)
def test_bad_limits_are_refused(redis_client, field, value):
    client = ClientFactory()
    setattr(client, field, value)

    with pytest.raises(ValidationError) as refused:
        client.full_clean()
    assert field in refused.value.message_dict

    if value <= 0:
        with pytest.raises(IntegrityError), transaction.atomic():
            Client.objects.filter(pk=client.pk).update(**{field: value})


def test_the_console_refuses_a_bad_limit_with_a_message(admin_client):
    client = ClientFactory()
    response = admin_client.post(
        f"/admin/signals_app/client/{client.pk}/change/",
        {
            "name": client.name,
            "active": "on",
            "default_volume": "0.10",
            "auto_close_enabled": "on",
            "max_open_positions": "0",
            "max_volume_per_instrument": "-2",
        },
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "max_open_positions" in errors
    assert "max_volume_per_instrument" in errors
    client.refresh_from_db()
    assert client.max_open_positions is None


@pytest.mark.slow
def test_a_close_wakes_the_clients_waiting_poll_with_the_held_back_approval(trader):
    from tests.ea_gateway.test_longpoll import Waiting

    client, ea = trader
    ids = [_signal(entry=e).approvals.get(client=client).pk for e in ("2650.50", "2651.50", "2652.50")]
    _polled(ea)
    position_id = _fill(ea, ids[0], "t-1")
    _fill(ea, ids[1], "t-2")
    # given: the EA waits, with nothing it may be handed
    waiting = Waiting(ea, "/api/v1/client/poll", wait=20)
    time.sleep(0.5)

    # when: a position closes
    command = close_command_request(
        position=OpenPosition.objects.get(pk=position_id), reason=CloseReason.MANUAL, by=OWNER
    )
    closed_at = time.monotonic()
    close_command_ack(
        command_id=command.pk,
        device_id=ea.device.pk,
        result=CloseResult(
            executed=True, close_price=Decimal("2651"), closed_volume=Decimal("0.10"), error=""
        ),
        by=OWNER,
    )
    body, _ = waiting.result()

    # then: the waiting poll answers at once with the approval that now fits
    assert waiting.finished - closed_at < 2.0
    assert [item["approval_id"] for item in body["approvals"]] == [ids[2]]
