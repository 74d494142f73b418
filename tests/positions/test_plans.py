"""Exit plans through the real sweep: PostgreSQL, Redis, the one claim."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.test import TestCase
from django.utils import timezone

from positions.choices import AlertKind, CloseCommandStatus, CloseReason, PositionStatus
from positions.close_delivery import CloseResult, close_command_ack, close_commands_deliver
from positions.models import Alert, CloseCommand, OpenPosition, SignalPlan
from positions.scanner import sweep
from signals_app.choices import ApprovalStatus
from signals_app.events import Actor
from signals_app.models import Approval, AuditEvent
from tests.factories import make_signal, open_book, report_fill
from tests.positions.test_scanner import put_quote

pytestmark = pytest.mark.django_db
EA = Actor.system("test-ea")


def _execute(command: CloseCommand, price: str) -> None:
    """As the EA would: lease the command, report it executed (and the report commits)."""
    (delivered,) = [
        c for c in close_commands_deliver(device_id=command.device_id, limit=10) if c.pk == command.pk
    ]
    with TestCase.captureOnCommitCallbacks(execute=True):
        close_command_ack(
            command_id=delivered.pk,
            device_id=delivered.device_id,
            result=CloseResult(executed=True, close_price=Decimal(price), closed_volume=delivered.volume),
            by=EA,
        )


def test_partials_close_their_fraction_once_rounded_down_and_the_target_the_rest(redis_client):
    signal = make_signal(
        symbol="EURUSD",
        side="buy",
        entry="1.10000",
        sl="1.09000",
        tp="1.11000",
        partial_take_profits=[
            {"price": "1.10400", "fraction": "0.5"},
            {"price": "1.10700", "fraction": "0.3"},
        ],
    )
    big, small = open_book(signal, 1, volume="0.15")[0], open_book(signal, 1, volume="0.01")[0]
    put_quote("EURUSD", "1.10000", "1.10010", time.time() - 1)

    # when: TP1 and TP2 are crossed before one sweep looks
    put_quote("EURUSD", "1.10410", "1.10420", time.time() - 0.5)
    put_quote("EURUSD", "1.10710", "1.10720")
    sweep()

    # then: only TP1 for now (one active close per position); 0.15 x 0.5 -> 0.07; 0.01 x 0.5 -> nothing
    (first,) = CloseCommand.objects.filter(position=big)
    assert (first.reason, first.partial_index, first.volume) == (CloseReason.PARTIAL_TP, 0, Decimal("0.07"))
    assert first.trigger_quote["bid"] == "1.10410"
    assert not CloseCommand.objects.filter(position=small).exists()
    plan = SignalPlan.objects.get(signal=signal)
    assert sorted(plan.partials_hit) == ["0", "1"]

    # the first partial executes: TP2 follows for 0.15 x 0.3 -> 0.04, from the original volume
    _execute(first, "1.10410")
    sweep()
    second = CloseCommand.objects.get(position=big, status=CloseCommandStatus.PENDING)
    assert (second.partial_index, second.volume) == (1, Decimal("0.04"))
    _execute(second, "1.10710")
    sweep()
    assert not CloseCommand.objects.filter(status=CloseCommandStatus.PENDING).exists()  # each partial once
    big.refresh_from_db()
    assert (big.status, big.remaining_volume) == (PositionStatus.OPEN, Decimal("0.04"))

    # the target closes what remains, of both positions
    put_quote("EURUSD", "1.11000", "1.11010")
    sweep()
    finals = {c.position_id: c for c in CloseCommand.objects.filter(reason=CloseReason.TAKE_PROFIT)}
    assert (finals[big.pk].volume, finals[small.pk].volume) == (Decimal("0.04"), Decimal("0.01"))


def test_a_trailing_stop_moves_is_stored_encrypted_and_audited_and_closes_on_the_pullback(redis_client):
    signal = make_signal(
        symbol="EURUSD",
        side="buy",
        entry="1.10000",
        sl="1.09000",
        tp=None,
        trailing={"distance_pips": "20", "activation_pips": "30"},
    )
    open_book(signal, 3)
    for bid in ("1.10100", "1.10350", "1.10500"):
        put_quote("EURUSD", bid, bid)
        sweep()
    assert not CloseCommand.objects.exists()

    # the stop is at 1.10300 now: stored, but never in plaintext
    with connection.cursor() as cursor:
        cursor.execute("SELECT state FROM positions_signalplan WHERE signal_id = %s", [signal.pk])
        (stored,) = cursor.fetchone()
    assert "1.103" not in stored
    assert "1.105" not in stored
    assert Decimal(SignalPlan.objects.get(signal=signal).state["moved_stop"]) == Decimal("1.10300")
    moves = AuditEvent.objects.filter(action="signal.stop_moved", subject_id=signal.pk)
    assert [Decimal(event.secret_data["new_stop"]) for event in moves.order_by("id")] == [
        Decimal("1.10150"),
        Decimal("1.10300"),
    ]
    assert all("1.10" not in str(event.data) for event in moves)

    put_quote("EURUSD", "1.10299", "1.10299")
    sweep()
    assert set(CloseCommand.objects.values_list("reason", flat=True)) == {CloseReason.TRAILING}
    assert CloseCommand.objects.count() == 3


def test_a_fill_after_the_plan_ended_gets_its_close_at_once(redis_client):
    # given: a signal whose stop was crossed while one client had not filled yet
    signal = make_signal(symbol="EURUSD", side="buy", entry="1.10000", sl="1.09000", tp="1.11000")
    open_book(signal, 1)
    late_client = open_book(signal, 1)[0]
    OpenPosition.objects.filter(pk=late_client.pk).delete()
    approval = Approval.objects.get(pk=late_client.approval_id)
    Approval.objects.filter(pk=approval.pk).update(status=ApprovalStatus.APPROVED)
    put_quote("EURUSD", "1.08990", "1.09000")
    sweep()
    assert CloseCommand.objects.count() == 1

    # when: its EA reports the fill (and the report commits)
    result = report_fill(
        approval_id=approval.pk,
        client_id=approval.client_id,
        device_id=late_client.device_id,
        price="1.08990",
    )
    sweep()  # the sweep the fill queued (a worker runs it; here we call it)

    # then: the plan's exit is a standing order
    command = CloseCommand.objects.get(position_id=result.position_id)
    assert command.reason == CloseReason.STOP_LOSS
    assert command.trigger_quote["bid"] == "1.08990"


def test_a_position_held_too_long_is_closed_for_time(redis_client):
    signal = make_signal(
        symbol="EURUSD", side="buy", entry="1.10000", sl="1.09000", tp="1.11000", max_holding_minutes=30
    )
    old, fresh = open_book(signal, 2)
    OpenPosition.objects.filter(pk=old.pk).update(opened_at=timezone.now() - timedelta(minutes=31))
    put_quote("EURUSD", "1.10000", "1.10010")

    sweep()

    assert list(CloseCommand.objects.values_list("position_id", "reason")) == [(old.pk, CloseReason.TIME)]
    with time_machine.travel(timezone.now() + timedelta(minutes=31)):
        put_quote("EURUSD", "1.10000", "1.10010")
        sweep()
    assert CloseCommand.objects.filter(position=fresh, reason=CloseReason.TIME).exists()


def test_an_atr_trailing_stop_without_bars_alerts_and_does_not_move(redis_client):
    signal = make_signal(
        symbol="EURUSD",
        side="buy",
        entry="1.10000",
        sl="1.09000",
        tp="1.12000",
        trailing={"distance_atr": "2", "atr_period": 14, "atr_timeframe": "H1"},
    )
    open_book(signal, 1)
    put_quote("EURUSD", "1.11000", "1.11000")

    sweep()

    assert Alert.objects.filter(kind=AlertKind.NO_ATR).exists()
    state = SignalPlan.objects.filter(signal=signal).values_list("state", flat=True).first()
    assert state is None or state["moved_stop"] is None


def _partials_token(signal) -> bytes | None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT partials_hit FROM positions_signalplan WHERE signal_id = %s", [signal.pk])
        (token,) = cursor.fetchone()
        return None if token is None else bytes(token)


def test_a_save_encrypts_the_partials_only_once_a_partial_is_hit(redis_client):
    # given: a trailing plan with a partial, saved once (its stop not moved yet)
    signal = make_signal(
        symbol="EURUSD",
        side="buy",
        entry="1.10000",
        sl="1.09000",
        tp="1.12000",
        trailing={"distance_pips": "20", "activation_pips": "0"},
        partial_take_profits=[{"price": "1.10600", "fraction": "0.5"}],
    )
    open_book(signal, 2)
    put_quote("EURUSD", "1.10000", "1.10010")
    sweep()
    assert SignalPlan.objects.filter(signal=signal).exists()
    assert _partials_token(signal) is None  # no partial hit: nothing stored, nothing encrypted

    # when: a rally trails the stop (the plan is saved again, no partial reached)
    put_quote("EURUSD", "1.10300", "1.10310")
    sweep()

    # then: the plan's state moved, still no partial stored
    assert Decimal(SignalPlan.objects.get(signal=signal).state["moved_stop"]) == Decimal("1.10100")
    assert _partials_token(signal) is None

    # when: the partial is reached: a token, encrypted, naming the quote that hit it
    put_quote("EURUSD", "1.10610", "1.10620")
    sweep()
    first = _partials_token(signal)
    assert first is not None
    assert b"1.1061" not in first
    assert SignalPlan.objects.get(signal=signal).partials_hit["0"]["bid"] == "1.10610"

    # when: the stop trails on (saved again, no new partial): the very token stored before
    put_quote("EURUSD", "1.10900", "1.10910")
    sweep()
    assert Decimal(SignalPlan.objects.get(signal=signal).state["moved_stop"]) > Decimal("1.10100")
    assert _partials_token(signal) == first
    assert CloseCommand.objects.filter(reason=CloseReason.PARTIAL_TP).count() == 2
