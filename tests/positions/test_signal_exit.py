"""The strategy's exit (``POST /api/v1/signals/{id}/exit``, positions.signal_exit): the
owner's trade is over whatever the levels say. Every open position of the signal gets a
close (clients see only "closed by the provider"), approvals not yet filled are withdrawn,
a fill that lands afterwards is still watched and closed by the next sweep. Against real
PostgreSQL and Redis, with EAs speaking the signed protocol."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from positions.choices import CloseCommandStatus, CloseReason, PositionStatus
from positions.models import CloseCommand, OpenPosition, SignalPlan
from positions.scanner import sweep
from signals_app.choices import ApprovalStatus
from signals_app.models import Approval, AuditEvent
from tests.ea_helpers import EA, ea_for, make_device
from tests.factories import ClientFactory, OwnerFactory, UserFactory, make_signal
from tests.positions.test_owner_api import PINNED, api_for, assert_error
from tests.positions.test_scanner import put_quote

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("redis_client")]


def exit_url(signal_id) -> str:
    return f"/api/v1/signals/{signal_id}/exit"


@pytest.fixture(autouse=True)
def _pinned():
    with override_settings(**PINNED):
        yield


@pytest.fixture
def owner_api() -> APIClient:
    return api_for(OwnerFactory())


@dataclass
class Book:
    signal: object
    filled: list[EA]  # EAs whose client filled the signal (auto-close on)
    canary: EA  # filled, but its client has auto-close off
    late: EA  # approved, not filled when the strategy exits
    waiting: EA  # its client has not decided yet (pending)

    def approval(self, ea: EA) -> Approval:
        return Approval.objects.get(signal=self.signal, client_id=ea.device.client_id)

    def position(self, ea: EA) -> OpenPosition | None:
        return OpenPosition.objects.filter(signal=self.signal, client_id=ea.device.client_id).first()


def _fill(ea: EA, approval: Approval, ticket: str):
    body = {
        "approval_id": approval.pk,
        "status": "placed",
        "broker_ticket": ticket,
        "entry_price": "2650.60",
        "volume": "0.10",
    }
    return ea.ack(body)


@pytest.fixture
def book() -> Book:
    """A published gold buy: two clients filled it, a canary client filled it, one client
    has it approved but not filled, one has not decided."""

    def ea(**client) -> EA:
        return ea_for(make_device(client=ClientFactory(default_volume=Decimal("0.10"), **client)))

    filled = [ea(auto_approve=True), ea(auto_approve=True)]
    canary = ea(auto_approve=True, auto_close_enabled=False)
    late = ea(auto_approve=True)
    waiting = ea(auto_approve=False)
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    book = Book(signal, filled, canary, late, waiting)
    for index, trader in enumerate([*filled, canary]):
        assert _fill(trader, book.approval(trader), f"7000{index}").status_code == 200
    assert book.approval(late).status == ApprovalStatus.APPROVED
    assert book.approval(waiting).status == ApprovalStatus.PENDING
    return book


def _reasons_seen(ea: EA) -> list[str]:
    response = ea.close_commands()
    assert response.status_code == 200, response.content
    return [command["reason"] for command in response.json()["commands"]]


def test_the_exit_closes_every_open_position_and_clients_see_only_the_provider(owner_api, book):
    # when
    response = owner_api.post(exit_url(book.signal.pk))

    # then: every position of a client with auto-close gets one close of its whole volume
    assert response.status_code == 200, response.content
    assert response.json() == {
        "signal_id": book.signal.pk,
        "exit_kind": "signal_exit",
        "already_ended": False,
        "approvals_withdrawn": 2,
        "closes_queued": 2,
    }
    for trader in book.filled:
        position = book.position(trader)
        assert position.status == PositionStatus.CLOSING
        (command,) = CloseCommand.objects.filter(position=position)
        assert (command.reason, command.volume, command.status) == (
            CloseReason.SIGNAL_EXIT,
            Decimal("0.10"),
            CloseCommandStatus.PENDING,
        )
        # what the EA is told names no level and no strategy
        assert _reasons_seen(trader) == ["closed by the provider"]
    plan = SignalPlan.objects.get(signal_id=book.signal.pk)
    assert (plan.exit_kind, plan.exit_quote) == ("signal_exit", None)


def test_canary_clients_are_not_closed(owner_api, book):
    owner_api.post(exit_url(book.signal.pk))
    sweep()

    position = book.position(book.canary)
    assert position.status == PositionStatus.OPEN
    assert not CloseCommand.objects.filter(position=position).exists()
    assert _reasons_seen(book.canary) == []


def test_approvals_not_yet_filled_are_withdrawn_and_leave_the_poll(owner_api, book):
    assert [item["approval_id"] for item in book.late.poll().json()["approvals"]] == [
        book.approval(book.late).pk
    ]

    owner_api.post(exit_url(book.signal.pk))

    assert book.approval(book.late).status == ApprovalStatus.WITHDRAWN
    assert book.approval(book.waiting).status == ApprovalStatus.WITHDRAWN
    assert book.late.poll().json() == {"approvals": []}
    assert book.waiting.poll().json() == {"approvals": []}
    # filled approvals are not touched
    assert {book.approval(trader).status for trader in book.filled} == {ApprovalStatus.EXECUTED}


def test_the_exit_is_audited(owner_api, book):
    owner = OwnerFactory()
    before = AuditEvent.objects.count()

    api_for(owner).post(exit_url(book.signal.pk))

    requested = AuditEvent.objects.get(action="signal.exit_requested")
    assert (requested.subject_type, requested.subject_id) == ("signal", book.signal.pk)
    assert (requested.actor, requested.actor_kind) == (owner.username, "bot")  # a token: the strategy bot
    assert requested.data == {"approvals_withdrawn": 2, "closes_queued": 2}
    withdrawn = AuditEvent.objects.filter(action="approval.withdrawn")
    assert sorted(withdrawn.values_list("subject_id", flat=True)) == sorted(
        [book.approval(book.late).pk, book.approval(book.waiting).pk]
    )
    assert {event.data["was"] for event in withdrawn} == {"approved", "pending"}
    close_requested = AuditEvent.objects.filter(action="position.close_requested")
    assert sorted(close_requested.values_list("subject_id", flat=True)) == sorted(
        book.position(trader).pk for trader in book.filled
    )
    # one exit request, two withdrawals, two close requests: nothing else
    assert AuditEvent.objects.count() == before + 5


def test_a_second_exit_changes_nothing(owner_api, book):
    first = owner_api.post(exit_url(book.signal.pk))
    commands = list(CloseCommand.objects.order_by("pk").values())
    audit_count = AuditEvent.objects.count()

    second = owner_api.post(exit_url(book.signal.pk))

    assert first.json()["already_ended"] is False
    assert second.status_code == 200
    assert second.json() == {
        "signal_id": book.signal.pk,
        "exit_kind": "signal_exit",
        "already_ended": True,
        "approvals_withdrawn": 0,
        "closes_queued": 0,
    }
    assert list(CloseCommand.objects.order_by("pk").values()) == commands
    assert AuditEvent.objects.count() == audit_count


def test_an_exit_after_a_level_ended_the_plan_reports_that_level(owner_api, book):
    put_quote("XAUUSD", "2670.10", "2670.40")
    sweep()
    assert CloseCommand.objects.filter(reason=CloseReason.TAKE_PROFIT).count() == 2

    response = owner_api.post(exit_url(book.signal.pk))

    assert (response.json()["exit_kind"], response.json()["already_ended"]) == ("tp", True)
    assert not CloseCommand.objects.filter(reason=CloseReason.SIGNAL_EXIT).exists()


@pytest.mark.parametrize("swept", ["everything", "the instrument"])
def test_a_fill_after_the_exit_is_watched_and_closed_by_the_next_sweep(
    owner_api, book, swept, django_capture_on_commit_callbacks
):
    # given: the strategy exited while the late client's EA was placing its trade
    owner_api.post(exit_url(book.signal.pk))
    assert book.approval(book.late).status == ApprovalStatus.WITHDRAWN

    # when: its fill arrives (and commits); the trade exists at the broker, so the server takes it
    with django_capture_on_commit_callbacks(execute=True):
        response = _fill(book.late, book.approval(book.late), "70009")

    # then: the position is watched, and the next sweep closes it as the exit says
    assert response.status_code == 200, response.content
    position = book.position(book.late)
    assert position is not None
    assert position.status == PositionStatus.OPEN
    assert book.approval(book.late).status == ApprovalStatus.EXECUTED
    report = sweep() if swept == "everything" else sweep(symbols={"XAUUSD"})
    assert report.commands_created == 1
    (command,) = CloseCommand.objects.filter(position=position)
    assert command.reason == CloseReason.SIGNAL_EXIT
    assert _reasons_seen(book.late) == ["closed by the provider"]
    assert sweep().commands_created == 0
    # the canary's position still stays open
    assert book.position(book.canary).status == PositionStatus.OPEN


def test_an_unknown_signal_is_404(owner_api, book):
    assert_error(owner_api.post(exit_url(book.signal.pk + 1000)), 404, "not_found")
    assert owner_api.post(exit_url("abc")).status_code == 404
    assert not CloseCommand.objects.exists()


def test_a_draft_signal_is_409(owner_api, book):
    draft = make_signal(publish=False)

    assert_error(owner_api.post(exit_url(draft.pk)), 409, "conflict")
    assert not SignalPlan.objects.filter(signal_id=draft.pk).exists()


@pytest.mark.parametrize("body", [{"reason": "done"}, {"signal_id": 1}, ["x"]])
def test_a_body_is_400(owner_api, book, body):
    response = owner_api.post(exit_url(book.signal.pk), body, format="json")

    assert_error(response, 400, "invalid")
    assert not CloseCommand.objects.exists()
    assert not SignalPlan.objects.filter(signal_id=book.signal.pk).exists()


def test_without_a_staff_token_it_is_refused(book):
    anonymous = APIClient().post(exit_url(book.signal.pk))
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    client_user = api_for(UserFactory())

    assert_error(anonymous, 401, "not_authenticated")
    assert_error(wrong.post(exit_url(book.signal.pk)), 401, "not_authenticated")
    assert_error(client_user.post(exit_url(book.signal.pk)), 403, "forbidden")
    assert not CloseCommand.objects.exists()
    assert book.approval(book.late).status == ApprovalStatus.APPROVED


def test_the_schema_documents_the_exit(owner_api):
    schema = owner_api.get("/api/v1/schema?format=json").json()

    operation = schema["paths"]["/api/v1/signals/{signal_id}/exit"]["post"]
    assert operation["operationId"] == "signal_exit"
    assert {"200", "400", "401", "403", "404", "409"} <= set(operation["responses"])
    assert {next(iter(scheme)) for scheme in operation["security"]} == {"tokenAuth", "cookieAuth"}
    assert set(schema["components"]["schemas"]["SignalExitOutput"]["properties"]) == {
        "signal_id",
        "exit_kind",
        "already_ended",
        "approvals_withdrawn",
        "closes_queued",
    }
