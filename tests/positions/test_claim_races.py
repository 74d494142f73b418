"""The close claim against a transaction that holds a position while the claim starts:
what the claim chose from its snapshot is checked again once it holds the row. A
position never moves to closing without its command, and a command never asks for more
than the position has left."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import psycopg2
import pytest

from positions.choices import CloseReason, PositionStatus
from positions.closes import Claim, CloseRequest, closes_claim
from positions.models import CloseCommand, OpenPosition
from signals_app.choices import AuditAction
from signals_app.events import Actor
from signals_app.models import AuditEvent
from tests.factories import make_signal, open_book
from tests.helpers import current_database_url

OWNER = Actor.system("test")


def _claim_while_held(
    position: OpenPosition, held_sql: list[tuple[str, list]], request: CloseRequest
) -> dict:
    """Another transaction locks the position and runs ``held_sql``; the claim starts while
    it holds the row (its snapshot sees the row as it was) and waits; then it commits."""
    locked, result = threading.Event(), {}
    other = psycopg2.connect(current_database_url())
    try:
        cursor = other.cursor()
        cursor.execute("SELECT 1 FROM positions_openposition WHERE id = %s FOR UPDATE", [position.pk])
        for sql, params in held_sql:
            cursor.execute(sql, params)
        locked.set()

        def claim() -> None:
            from django.db import connection

            try:
                result["queued"] = closes_claim(claim=Claim.SIGNAL_POSITIONS, requests=[request], by=OWNER)
            finally:
                connection.close()

        claimer = threading.Thread(target=claim)
        claimer.start()
        time.sleep(0.5)  # the claim has taken its snapshot and waits for the row
        assert claimer.is_alive()
        other.commit()
        claimer.join(10)
        assert not claimer.is_alive()
    finally:
        other.close()
    return result["queued"]


def _position(volume: str = "0.10") -> OpenPosition:
    signal = make_signal(symbol="EURUSD", entry="1.10000", sl="1.09800", tp="1.10200")
    open_book(signal, 1, volume=volume)
    return OpenPosition.objects.get(signal=signal)


_EXECUTED_PARTIAL = """
INSERT INTO positions_closecommand (position_id, device_id, volume, reason, status, attempts,
       next_attempt_at, partial_index, requested_by, note, created_at, completed_at)
VALUES (%s, %s, 0.05, 'partial_tp', 'executed', 1, now(), 0, 'test', '', now(), now())
"""


@pytest.mark.django_db(transaction=True)
def test_a_partial_executed_while_the_claim_waited_leaves_the_position_open_without_a_command(redis_client):
    # given: the first partial take-profit executed (and the position reopened with what is
    # left) by a transaction that held the position when the claim sent that partial again
    position = _position()
    executed = [
        (_EXECUTED_PARTIAL, [position.pk, position.device_id]),
        ("UPDATE positions_openposition SET remaining_volume = 0.05 WHERE id = %s", [position.pk]),
    ]
    again = CloseRequest(
        key=position.signal_id, reason=CloseReason.PARTIAL_TP, fraction=Decimal("0.5"), partial_index=0
    )

    # when
    queued = _claim_while_held(position, executed, again)

    # then: the partial fires once; the position stays open, not closing without a command
    assert queued == {}
    position.refresh_from_db()
    assert position.status == PositionStatus.OPEN
    assert CloseCommand.objects.filter(position=position).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_close_asks_for_what_the_position_has_left_once_the_claim_holds_it(redis_client):
    # given: a partial close executed while the claim for the stop waited on the row
    position = _position(volume="0.10")
    executed = [
        (_EXECUTED_PARTIAL, [position.pk, position.device_id]),
        ("UPDATE positions_openposition SET remaining_volume = 0.05 WHERE id = %s", [position.pk]),
    ]
    stop = CloseRequest(key=position.signal_id, reason=CloseReason.STOP_LOSS)

    # when
    queued = _claim_while_held(position, executed, stop)

    # then: the stop closes the 0.05 lots that are left, not the 0.10 the snapshot saw
    command = CloseCommand.objects.get(pk=queued[position.pk])
    assert command.volume == Decimal("0.05")
    position.refresh_from_db()
    assert position.status == PositionStatus.CLOSING


@pytest.mark.django_db(transaction=True)
def test_a_position_closed_while_the_claim_waited_is_not_claimed(redis_client):
    position = _position()
    closed = [
        (
            "UPDATE positions_openposition SET status = 'closed_manual', remaining_volume = 0 WHERE id = %s",
            [position.pk],
        )
    ]

    queued = _claim_while_held(
        position, closed, CloseRequest(key=position.signal_id, reason=CloseReason.STOP_LOSS)
    )

    assert queued == {}
    assert not CloseCommand.objects.filter(position=position).exists()
    position.refresh_from_db()
    assert position.status == PositionStatus.CLOSED_MANUAL


@pytest.mark.django_db(transaction=True)
def test_a_command_goes_to_the_device_the_position_has_once_the_claim_holds_it(redis_client):
    # given: a handover (positions.handover) moves the position to another device while the
    # claim waits on it; another client's device stands in for the new one
    position, other = _position(), _position()
    handed_over = [
        ("UPDATE positions_openposition SET device_id = %s WHERE id = %s", [other.device_id, position.pk])
    ]

    queued = _claim_while_held(
        position, handed_over, CloseRequest(key=position.signal_id, reason=CloseReason.STOP_LOSS)
    )

    command = CloseCommand.objects.get(pk=queued[position.pk])
    assert command.device_id == other.device_id
    # and the audit says what was asked for
    requested = AuditEvent.objects.get(action=AuditAction.POSITION_CLOSE_REQUESTED, subject_id=position.pk)
    assert requested.data["command_id"] == command.pk
    assert Decimal(str(requested.data["volume"])) == Decimal("0.10")
