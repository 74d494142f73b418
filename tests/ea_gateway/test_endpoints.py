"""The EA protocol end to end through Django: shapes, idempotency, scoping, lifecycle."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from ea_gateway.choices import DeviceRole
from positions.choices import CloseCommandStatus, CloseReason, PositionStatus
from positions.closes import close_command_request
from positions.models import CloseCommand, OpenPosition
from positions.quotes import quote_latest
from signals_app.choices import ApprovalStatus
from signals_app.events import Actor
from signals_app.models import Approval, AuditEvent
from tests.ea_helpers import ea_for, make_device
from tests.factories import ClientFactory, make_signal

pytestmark = pytest.mark.django_db


@pytest.fixture
def trader(redis_client):
    """A client who auto-approves, its EA, and a published gold signal."""
    client = ClientFactory(auto_approve=True, default_volume=Decimal("0.10"))
    ea = ea_for(make_device(client=client))
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    return ea, signal, signal.approvals.get(client=client)


def _fill(approval, **changes):
    return {
        "approval_id": approval.pk,
        "status": "placed",
        "broker_ticket": "50001",
        "entry_price": "2650.60",
        "volume": "0.10",
        **changes,
    }


def _open_position(trader):
    ea, signal, approval = trader
    response = ea.ack(_fill(approval))
    assert response.status_code == 200, response.content
    return OpenPosition.objects.get(pk=response.json()["position_id"])


def test_poll_returns_exactly_the_execution_params(trader):
    ea, signal, approval = trader

    response = ea.poll()

    assert response.status_code == 200
    (item,) = response.json()["approvals"]
    assert set(response.json()) == {"approvals"}
    assert set(item) == {"approval_id", "signal_id", "execution_params"}
    assert item["approval_id"] == approval.pk
    assert item["signal_id"] == signal.pk
    params = item["execution_params"]
    assert set(params) == {"instrument", "direction", "entry_price", "volume", "ttl_minutes"}
    assert params["instrument"] == "XAUUSD"
    assert params["direction"] == "buy"
    assert Decimal(params["entry_price"]) == Decimal("2650.50")
    assert params["volume"] == "0.10"
    assert 239 <= params["ttl_minutes"] <= 240


def test_poll_leaves_out_pending_expired_and_filled_approvals(trader):
    ea, signal, approval = trader
    other_signal = make_signal(entry="2651.00", sl="2640.00", tp="2660.00")
    Approval.objects.filter(signal=other_signal).update(expires_at=timezone.now() - timedelta(seconds=1))
    ea.ack(_fill(approval))

    assert ea.poll().json() == {"approvals": []}


def test_a_fill_ack_creates_one_position_and_repeats_identically(trader):
    ea, signal, approval = trader

    first = ea.ack(_fill(approval))
    second = ea.ack(_fill(approval, entry_price="2650.6"))  # same price, other spelling

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert set(first.json()) == {"approval_id", "status", "position_id"}
    position = OpenPosition.objects.get()
    assert first.json()["position_id"] == position.pk
    assert (position.broker_ticket, position.entry_price, position.volume) == (
        "50001",
        Decimal("2650.60"),
        Decimal("0.10"),
    )
    assert (position.requested_entry_price, position.side, position.status) == (
        Decimal("2650.50"),
        "buy",
        "open",
    )
    assert Approval.objects.get(pk=approval.pk).status == ApprovalStatus.EXECUTED
    assert AuditEvent.objects.filter(action="position.opened").count() == 1


@pytest.mark.parametrize(
    "conflict",
    [{"broker_ticket": "50002"}, {"entry_price": "2650.70"}, {"volume": "0.05"}, {"status": "failed"}],
)
def test_a_conflicting_ack_is_409_and_changes_nothing(trader, conflict):
    ea, signal, approval = trader
    ea.ack(_fill(approval))
    before = list(OpenPosition.objects.values())

    body = _fill(approval, **conflict)
    if conflict.get("status") == "failed":
        body = {"approval_id": approval.pk, "status": "failed", "error": "no money"}
    response = ea.ack(body)

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert list(OpenPosition.objects.values()) == before


def test_a_failed_ack_marks_the_approval_failed_once(trader):
    ea, signal, approval = trader
    body = {"approval_id": approval.pk, "status": "failed", "error": "market closed"}

    assert ea.ack(body).json() == {"approval_id": approval.pk, "status": "failed"}
    assert ea.ack(body).json() == {"approval_id": approval.pk, "status": "failed"}
    assert ea.ack(_fill(approval)).status_code == 409
    assert Approval.objects.get(pk=approval.pk).status == ApprovalStatus.FAILED
    assert not OpenPosition.objects.exists()


@pytest.mark.parametrize(
    "extra",
    [{"stop_loss": "2645"}, {"device_id": 999}, {"sl": "1"}, {"position_id": 5}, {"client_id": 1}],
)
def test_fields_beyond_the_allow_list_are_rejected_and_never_applied(trader, extra):
    ea, signal, approval = trader
    response = ea.ack(_fill(approval, **extra))
    assert response.status_code == 400
    assert list(extra) == list(response.json()["error"]["fields"])
    assert not OpenPosition.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"approval_id": 1, "status": "placed"},
        {"approval_id": "x", "status": "placed"},
        {"approval_id": 2**70, "status": "failed"},
        {"approval_id": 1, "status": "closed"},
        {"approval_id": 1, "status": "placed", "broker_ticket": "", "entry_price": "1", "volume": "0.1"},
        {"approval_id": 1, "status": "placed", "broker_ticket": "1", "entry_price": "-1", "volume": "0.1"},
        {"approval_id": 1, "status": "placed", "broker_ticket": "1", "entry_price": "1", "volume": "0.001"},
        [],
        "text",
    ],
)
def test_bad_acks_get_400(trader, body):
    ea, *_ = trader
    assert ea.ack(body).status_code == 400
    assert not OpenPosition.objects.exists()


def test_a_fill_larger_than_approved_is_refused(trader):
    ea, signal, approval = trader
    assert ea.ack(_fill(approval, volume="0.20")).status_code == 400
    assert not OpenPosition.objects.exists()


def test_a_device_sees_nothing_of_another_client(trader):
    ea, signal, approval = trader
    position = _open_position(trader)
    command = close_command_request(position=position, reason=CloseReason.MANUAL, by=Actor.system("t"))
    # a client who subscribed after the signal went out: nothing of it is theirs
    stranger = ea_for(make_device(client=ClientFactory(auto_approve=True)))

    assert stranger.poll().json() == {"approvals": []}
    assert stranger.ack(_fill(approval, broker_ticket="1")).status_code == 404
    assert stranger.ack({"approval_id": approval.pk, "status": "failed"}).status_code == 404
    assert stranger.close_commands().json() == {"commands": []}
    response = stranger.close_ack(
        {"command_id": command.pk, "status": "executed", "close_price": "1", "closed_volume": "0.10"}
    )
    assert response.status_code == 404
    assert CloseCommand.objects.get(pk=command.pk).status == CloseCommandStatus.PENDING


def test_close_command_lifecycle_with_lease_and_pnl(trader):
    ea, signal, approval = trader
    position = _open_position(trader)
    command = close_command_request(
        position=position,
        reason=CloseReason.STOP_LOSS,
        by=Actor.system("scanner"),
        trigger_quote={"bid": "2644.90", "ask": "2645.20", "ts": 1},
    )

    delivered = ea.close_commands().json()
    again = ea.close_commands().json()  # leased: not handed out twice

    assert delivered == {
        "commands": [
            {
                "command_id": command.pk,
                "position_id": position.pk,
                "broker_ticket": "50001",
                "volume": "0.10",
                "reason": "risk limit",
            }
        ]
    }
    assert again == {"commands": []}
    command.refresh_from_db()
    assert (command.status, command.attempts) == (CloseCommandStatus.DELIVERED, 1)

    ack = {"command_id": command.pk, "status": "executed", "close_price": "2644.80", "closed_volume": "0.10"}
    first, second = ea.close_ack(ack), ea.close_ack(ack)
    assert first.json() == second.json() == {"command_id": command.pk, "status": "executed"}
    conflicting = ea.close_ack({**ack, "close_price": "2644.00"})
    assert conflicting.status_code == 409

    position.refresh_from_db()
    assert position.status == PositionStatus.CLOSED_SL
    assert position.close_price == Decimal("2644.80")
    assert position.remaining_volume == 0
    # (2644.80 - 2650.60) * 0.10 lots * 100 oz = -58.00
    assert position.realized_pnl == Decimal("-58.00")
    closed = AuditEvent.objects.get(action="position.closed", subject_id=position.pk)
    assert closed.data["trigger_quote"] == {"bid": "2644.90", "ask": "2645.20", "ts": 1}


def test_a_failed_close_reopens_the_position(trader):
    ea, signal, approval = trader
    position = _open_position(trader)
    command = close_command_request(position=position, reason=CloseReason.TAKE_PROFIT, by=Actor.system("t"))
    ea.close_commands()

    response = ea.close_ack({"command_id": command.pk, "status": "failed", "error": "market closed"})

    assert response.json() == {"command_id": command.pk, "status": "failed"}
    position.refresh_from_db()
    assert position.status == PositionStatus.OPEN
    assert close_command_request(position=position, reason=CloseReason.TAKE_PROFIT, by=Actor.system("t"))


def test_one_active_close_command_per_position(trader):
    position = _open_position(trader)
    first = close_command_request(position=position, reason=CloseReason.STOP_LOSS, by=Actor.system("a"))
    second = close_command_request(position=position, reason=CloseReason.MANUAL, by=Actor.system("b"))

    assert first is not None
    assert second is None
    assert CloseCommand.objects.filter(position=position).count() == 1


def test_heartbeat_records_the_account_and_reconciles_vanished_tickets(trader):
    import time_machine

    ea, signal, approval = trader
    position = _open_position(trader)
    OpenPosition.objects.filter(pk=position.pk).update(opened_at=timezone.now() - timedelta(minutes=5))

    kept = ea.heartbeat({"balance": "10000.00", "equity": "9990.50", "open_tickets": ["50001"]})
    assert kept.status_code == 200
    assert set(kept.json()) == {"server_time"}
    assert OpenPosition.objects.get(pk=position.pk).status == PositionStatus.OPEN

    # one heartbeat without the ticket (a terminal reconnecting) closes nothing ...
    ea.heartbeat({"balance": "9950.00", "equity": "9950.00", "open_tickets": []})
    assert OpenPosition.objects.get(pk=position.pk).status == PositionStatus.OPEN
    # ... a second one, RECONCILE_GRACE_SECONDS later, does
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        ea.heartbeat({"balance": "9950.00", "equity": "9950.00", "open_tickets": []})

    position.refresh_from_db()
    assert position.status == PositionStatus.CLOSED_EXTERNAL
    event = AuditEvent.objects.get(action="position.closed_externally", subject_id=position.pk)
    assert event.data["broker_ticket"] == "50001"
    device = ea.device
    device.refresh_from_db()
    assert device.last_account["equity"] == "9950.00"
    assert device.last_seen_at is not None


def test_a_ticket_that_comes_back_is_not_closed(trader):
    import time_machine

    ea, *_ = trader
    position = _open_position(trader)
    OpenPosition.objects.filter(pk=position.pk).update(opened_at=timezone.now() - timedelta(minutes=5))
    ea.heartbeat({"balance": "1", "equity": "1", "open_tickets": []})
    ea.heartbeat({"balance": "1", "equity": "1", "open_tickets": ["50001"]})
    with time_machine.travel(timezone.now() + timedelta(seconds=61)):
        ea.heartbeat({"balance": "1", "equity": "1", "open_tickets": []})
    assert OpenPosition.objects.get(pk=position.pk).status == PositionStatus.OPEN


def test_a_fresh_fill_missing_from_the_snapshot_is_not_closed(trader):
    ea, *_ = trader
    position = _open_position(trader)
    ea.heartbeat({"balance": "1", "equity": "1", "open_tickets": []})
    assert OpenPosition.objects.get(pk=position.pk).status == PositionStatus.OPEN


def test_feed_quotes_keep_the_newest_per_instrument(redis_client):
    feed = ea_for(make_device(role=DeviceRole.FEED, name="feed"))
    now = timezone.now().timestamp()

    response = feed.quotes(
        {
            "quotes": [
                {"instrument": "xauusd", "bid": "2650.10", "ask": "2650.40", "ts": now - 2},
                {"instrument": "XAUUSD", "bid": "2651.10", "ask": "2651.40", "ts": now - 1},
                {"instrument": "EURUSD", "bid": "1.08500", "ask": "1.08510", "ts": now},
            ]
        }
    )
    stale = feed.quotes(
        {"quotes": [{"instrument": "XAUUSD", "bid": "2600", "ask": "2600.5", "ts": now - 10}]}
    )

    assert response.json() == {"accepted": 3, "ignored": 0}
    assert stale.json() == {"accepted": 0, "ignored": 1}
    latest = quote_latest("XAUUSD")
    assert (latest.bid, latest.ask) == (Decimal("2651.10"), Decimal("2651.40"))


@pytest.mark.parametrize(
    "quote",
    [
        {"instrument": "NOPE", "bid": "1", "ask": "1.1"},
        {"instrument": "XAUUSD", "bid": "2", "ask": "1"},
        {"instrument": "XAUUSD", "bid": "-1", "ask": "1"},
        {"instrument": "XAUUSD", "bid": "1", "ask": "1", "ts": 4_000_000_000},
        {"instrument": "XAUUSD", "bid": "1", "ask": "1", "extra": 1},
        {"instrument": "XAUUSD", "bid": "1.00000000001", "ask": "1.1"},
        {"instrument": "XAUUSD", "bid": "NaN", "ask": "1.1"},
        {"instrument": "XAUUSD", "bid": "1", "ask": "Infinity"},
    ],
)
def test_bad_quote_batches_change_nothing(redis_client, quote):
    feed = ea_for(make_device(role=DeviceRole.FEED, name="feed"))
    good = {"instrument": "EURUSD", "bid": "1.1", "ask": "1.2", "ts": timezone.now().timestamp()}
    response = feed.quotes({"quotes": [good, {"ts": timezone.now().timestamp(), **quote}]})
    assert response.status_code == 400
    assert quote_latest("EURUSD") is None


def test_roles_are_kept_apart(trader):
    ea, *_ = trader
    feed = ea_for(make_device(role=DeviceRole.FEED, name="feed"))
    quote = {"instrument": "EURUSD", "bid": "1.1", "ask": "1.2", "ts": timezone.now().timestamp()}

    assert ea.quotes({"quotes": [quote]}).status_code == 403
    assert feed.poll().status_code == 403
    assert feed.close_commands().status_code == 403


def test_a_refused_fill_alerts_the_owner(trader):
    from positions.choices import AlertKind
    from positions.models import Alert

    ea, signal, approval = trader
    ea.ack(_fill(approval))

    assert ea.ack(_fill(approval, broker_ticket="50009")).status_code == 409

    alert = Alert.objects.get(kind=AlertKind.FILL_REFUSED)
    assert "50009" in alert.message
    assert alert.device_id == ea.device.pk


def test_an_approval_whose_fill_was_refused_is_not_delivered_again(trader):
    from positions.choices import AlertKind
    from positions.models import Alert
    from signals_app.choices import ApprovalStatus, AuditAction
    from signals_app.models import AuditEvent

    # given: the EA's first trade, then a second signal placed under a ticket it already
    # reported (a broker never reuses one: the EA's state was lost, or it is another account)
    ea, signal, approval = trader
    assert ea.ack(_fill(approval)).status_code == 200
    second = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    later = second.approvals.get(client=approval.client)
    other_ea = ea_for(make_device(client=approval.client, name="second account"))

    # when: its fill is refused
    assert ea.ack(_fill(later, broker_ticket="50001")).status_code == 409

    # then: a trade exists at the broker that nothing watches: the owner is alerted, and
    # the approval is offered to no EA again (another account would place it a second time)
    later.refresh_from_db()
    assert later.status == ApprovalStatus.UNMONITORED
    assert Alert.objects.filter(kind=AlertKind.FILL_REFUSED).exists()
    assert ea.poll().json()["approvals"] == []
    assert other_ea.poll().json()["approvals"] == []
    (event,) = AuditEvent.objects.filter(action=AuditAction.APPROVAL_UNMONITORED, subject_id=later.pk)
    assert event.data["broker_ticket"] == "50001"
    # and the same refused report again is refused again, changing nothing
    assert ea.ack(_fill(later, broker_ticket="50001")).status_code == 409
    assert AuditEvent.objects.filter(action=AuditAction.APPROVAL_UNMONITORED).count() == 1


def test_heartbeat_takes_float_noise_in_money(trader):
    ea, *_ = trader
    response = ea.heartbeat({"balance": "10000.300000001", "equity": "9999.12345678", "open_tickets": []})
    assert response.status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"entry_price": "12345678901"},
        {"entry_price": "99999999999999999999"},
        {"volume": "100000.01"},
        {"broker_ticket": "line\nbreak"},
        {"broker_ticket": "with space"},
    ],
)
def test_values_beyond_what_the_database_holds_are_400_not_500(trader, change):
    ea, signal, approval = trader
    response = ea.ack(_fill(approval, **change))
    assert response.status_code == 400
    assert not OpenPosition.objects.exists()


def test_a_huge_close_price_is_400_and_the_command_stays_open(trader):
    ea, *_ = trader
    position = _open_position(trader)
    command = close_command_request(position=position, reason=CloseReason.MANUAL, by=Actor.system("t"))
    ea.close_commands()
    response = ea.close_ack(
        {
            "command_id": command.pk,
            "status": "executed",
            "close_price": "1" + "0" * 12,
            "closed_volume": "0.10",
        }
    )
    assert response.status_code == 400
    assert CloseCommand.objects.get(pk=command.pk).status == CloseCommandStatus.DELIVERED


def test_repeated_failed_closes_stop_at_the_limit_with_an_alert(trader, settings):
    from positions.choices import AlertKind
    from positions.models import Alert

    ea, *_ = trader
    settings.CLOSE_MAX_ATTEMPTS = 2
    position = _open_position(trader)
    for _ in range(2):
        command = close_command_request(
            position=position, reason=CloseReason.STOP_LOSS, by=Actor.system("scanner")
        )
        ea.close_commands()
        ea.close_ack({"command_id": command.pk, "status": "failed", "error": "market closed"})

    position.refresh_from_db()
    assert position.status == PositionStatus.CLOSE_FAILED
    assert Alert.objects.filter(kind=AlertKind.CLOSE_FAILED, position=position).exists()
    assert AuditEvent.objects.filter(action="position.close_failed", subject_id=position.pk).exists()
    # the desk can still close it by hand
    manual = close_command_request(position=position, reason=CloseReason.MANUAL, by=Actor.system("owner"))
    assert manual is not None


def test_the_database_refuses_a_second_active_command(trader):
    from django.db import IntegrityError, transaction

    position = _open_position(trader)
    first = close_command_request(position=position, reason=CloseReason.STOP_LOSS, by=Actor.system("t"))
    with pytest.raises(IntegrityError), transaction.atomic():
        CloseCommand.objects.create(
            position=position,
            device=first.device,
            volume=first.volume,
            reason=CloseReason.MANUAL,
            next_attempt_at=timezone.now(),
            requested_by="racer",
        )
