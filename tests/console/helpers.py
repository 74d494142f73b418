"""Data for the console tests that the services do not let a test choose (timestamps)."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from positions.choices import CloseCommandStatus
from positions.closes import close_command_request
from positions.models import CloseCommand, OpenPosition
from signals_app.events import Actor


def command_at(
    position: OpenPosition,
    *,
    reason: str,
    created_ago: timedelta,
    status: str = CloseCommandStatus.PENDING,
    completed_ago: timedelta | None = None,
    trigger_received_ago: timedelta | None = None,
) -> CloseCommand:
    """A close command as if made ``created_ago`` (and finished ``completed_ago``) ago:
    made through the service, then moved in time."""
    now = timezone.now()
    trigger = None
    if trigger_received_ago is not None:
        trigger = {"bid": "1", "ask": "1", "received_at": (now - trigger_received_ago).timestamp()}
    command = close_command_request(
        position=position, reason=reason, by=Actor.system("tests"), trigger_quote=trigger
    )
    assert command is not None
    CloseCommand.objects.filter(pk=command.pk).update(
        created_at=now - created_ago,
        status=status,
        completed_at=None if completed_ago is None else now - completed_ago,
    )
    command.refresh_from_db()
    return command


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []
