from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import IntegrityError, InternalError, transaction
from django.utils import timezone

from core.errors import DomainError
from signals_app.choices import ApprovalStatus, DecidedBy
from signals_app.events import Actor
from signals_app.models import Approval, AuditEvent, Client, Signal
from signals_app.services import approval_decide, approvals_expire
from tests.factories import ClientFactory, OwnerFactory, make_signal

pytestmark = pytest.mark.django_db


def test_expiry_takes_open_approvals_past_their_ttl():
    pending, approved, declined = ClientFactory(), ClientFactory(auto_approve=True), ClientFactory()
    signal = make_signal(ttl_minutes=10)
    approval_decide(
        approval=signal.approvals.get(client=declined),
        approve=False,
        decided_by=DecidedBy.CLIENT,
        by=Actor.system("t"),
    )

    assert approvals_expire(now=timezone.now() + timedelta(minutes=9)) == 0
    assert approvals_expire(now=timezone.now() + timedelta(minutes=11)) == 2

    statuses = dict(signal.approvals.values_list("client_id", "status"))
    assert statuses == {
        pending.pk: ApprovalStatus.EXPIRED,
        approved.pk: ApprovalStatus.EXPIRED,
        declined.pk: ApprovalStatus.DECLINED,
    }
    assert AuditEvent.objects.filter(action="approval.expired").count() == 2
    assert approvals_expire(now=timezone.now() + timedelta(minutes=11)) == 0


def test_owner_approves_on_behalf_of_a_client_once():
    ClientFactory()
    approval = make_signal().approvals.get()
    owner = Actor.user(OwnerFactory())

    approval_decide(approval=approval, approve=True, decided_by=DecidedBy.OWNER, by=owner)
    approval_decide(approval=approval, approve=True, decided_by=DecidedBy.OWNER, by=owner)  # no-op
    with pytest.raises(DomainError) as raised:
        approval_decide(approval=approval, approve=False, decided_by=DecidedBy.OWNER, by=owner)

    assert raised.value.status_code == 409
    approval.refresh_from_db()
    assert (approval.status, approval.decided_by) == (ApprovalStatus.APPROVED, DecidedBy.OWNER)
    assert AuditEvent.objects.filter(action="approval.approved", subject_id=approval.pk).count() == 1


def test_an_expired_approval_cannot_be_approved():
    ClientFactory()
    approval = make_signal().approvals.get()
    Approval.objects.filter(pk=approval.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(DomainError):
        approval_decide(approval=approval, approve=True, decided_by=DecidedBy.CLIENT, by=Actor.system("t"))


def test_one_approval_per_signal_and_client_in_the_database():
    client = ClientFactory()
    approval = make_signal().approvals.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        Approval.objects.create(
            signal=approval.signal, client=client, volume=1, expires_at=approval.expires_at
        )


def test_the_audit_log_is_append_only_in_the_database():
    make_signal()
    event = AuditEvent.objects.first()
    with pytest.raises(InternalError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(actor="someone else")
    with pytest.raises(InternalError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).actor == event.actor


def test_level_changes_are_audited_with_old_and_new_encrypted():
    signal = make_signal(sl="2645.00", tp="2670.00")
    owner = OwnerFactory()
    from signals_app.services import signal_update_hidden_levels

    signal_update_hidden_levels(
        signal=signal, owner_only={"sl": "2647.50", "tp": "2670.00"}, by=Actor.user(owner)
    )

    event = AuditEvent.objects.get(action="signal.levels_changed")
    assert event.actor == owner.username
    assert event.data == {"changed": ["sl"]}
    assert event.secret_data == {
        "old": {"sl": "2645.00", "tp": "2670.00"},
        "new": {"sl": "2647.50", "tp": "2670.00"},
    }
    assert Signal.objects.get(pk=signal.pk).owner_only["sl"] == "2647.50"


def test_create_client_is_idempotent_on_the_name(capsys):
    call_command("create_client", "alice", "--auto-approve", "--volume", "0.25", "--telegram-chat-id", "42")
    call_command("create_client", "alice")

    client = Client.objects.get(name="alice")
    assert (client.auto_approve, str(client.default_volume), client.telegram_chat_id) == (True, "0.25", "42")
    assert Client.objects.count() == 1
    assert "exists" in capsys.readouterr().out


@pytest.mark.parametrize("volume", ["0", "abc", "0.001", "-1"])
def test_create_client_rejects_bad_volumes(volume):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="--volume"):
        call_command("create_client", "bob", "--volume", volume)
    assert not Client.objects.exists()


def test_backfill_moves_legacy_levels_out_of_payload(capsys):
    # given: signals from the old system, levels in the client-visible payload
    legacy = make_signal(sl=None, tp="2670.00", publish=False)
    Signal.objects.filter(pk=legacy.pk).update(payload={"stop_loss": "2645.00", "timeframe": "H1"})
    conflicting = make_signal(publish=False)
    Signal.objects.filter(pk=conflicting.pk).update(payload={"sl": "2600.00"})
    clean = make_signal(publish=False, payload={"timeframe": "M5"})

    call_command("backfill_hidden_levels", "--dry-run")
    assert Signal.objects.get(pk=legacy.pk).payload == {"stop_loss": "2645.00", "timeframe": "H1"}
    assert "would move stop_loss" in capsys.readouterr().out

    call_command("backfill_hidden_levels")
    call_command("backfill_hidden_levels")  # idempotent

    legacy.refresh_from_db()
    assert legacy.payload == {"timeframe": "H1"}
    assert legacy.owner_only == {"sl": "2645.00", "tp": "2670.00"}
    assert Signal.objects.get(pk=conflicting.pk).payload == {"sl": "2600.00"}  # left for the owner
    assert Signal.objects.get(pk=clean.pk).payload == {"timeframe": "M5"}
    assert AuditEvent.objects.filter(action="signal.levels_backfilled").count() == 1
    assert "skipped" in capsys.readouterr().out
