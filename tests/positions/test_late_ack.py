"""A late acknowledgement of a close command that was given up (expired) after another
close of the position was queued: what the EA reports is recorded, and the position
stays closing for the close now active (never open, or reopened, under an active
command)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.utils import timezone

from positions.choices import CloseCommandStatus, CloseReason, PositionStatus
from positions.close_delivery import CloseResult, close_command_ack
from positions.closes import close_command_request
from positions.models import CloseCommand, OpenPosition
from positions.timeouts import close_command_expire
from signals_app.events import Actor
from tests.factories import make_signal, open_book

OWNER = Actor.system("test")


def _given_up() -> tuple[OpenPosition, CloseCommand]:
    """A position of 0.10 lots whose stop's close command expired (positions.timeouts)."""
    signal = make_signal(symbol="EURUSD", entry="1.10000", sl="1.09800", tp="1.10200")
    open_book(signal, 1, volume="0.10")
    position = OpenPosition.objects.get(signal=signal)
    first = close_command_request(position=position, reason=CloseReason.STOP_LOSS, by=OWNER)
    close_command_expire(first, now=timezone.now(), by=OWNER, why="lease ran out", alert="EA silent")
    return position, first


def _given_up_then_closed_again() -> tuple[OpenPosition, CloseCommand, CloseCommand]:
    position, first = _given_up()
    second = close_command_request(position=position, reason=CloseReason.MANUAL, by=OWNER)
    assert second is not None
    position.refresh_from_db()
    assert position.status == PositionStatus.CLOSING
    return position, first, second


FAILED = CloseResult(executed=False, error="off quotes")


def _late_ack(command: CloseCommand, result: CloseResult) -> None:
    """The EA acknowledges the expired command now, as its broker reported it."""
    close_command_ack(command_id=command.pk, device_id=command.device_id, result=result, by=OWNER)


@pytest.mark.django_db(transaction=True)
def test_a_late_failure_of_the_given_up_close_leaves_the_position_to_the_active_one(redis_client):
    position, first, second = _given_up_then_closed_again()

    _late_ack(first, FAILED)

    first.refresh_from_db()
    position.refresh_from_db()
    assert first.status == CloseCommandStatus.FAILED
    assert position.status == PositionStatus.CLOSING  # not reopened under the active close
    assert CloseCommand.objects.get(pk=second.pk).status == CloseCommandStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_a_late_partial_fill_of_the_given_up_close_is_booked_and_the_position_stays_closing(redis_client):
    position, first, second = _given_up_then_closed_again()

    _late_ack(
        first, CloseResult(executed=True, close_price=Decimal("1.09790"), closed_volume=Decimal("0.04"))
    )

    position.refresh_from_db()
    assert position.remaining_volume == Decimal("0.06")
    assert position.status == PositionStatus.CLOSING
    assert CloseCommand.objects.get(pk=second.pk).status == CloseCommandStatus.PENDING


@pytest.mark.django_db(transaction=True)
def test_a_late_failure_with_no_other_close_active_reopens_the_position_as_before(redis_client):
    position, first = _given_up()

    _late_ack(first, FAILED)

    position.refresh_from_db()
    assert position.status == PositionStatus.OPEN
