"""Data for the console tests that the services do not let a test choose (timestamps)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from ea_gateway.models import Device
from positions.choices import CloseCommandStatus
from positions.closes import close_command_request
from positions.models import CloseCommand, OpenPosition
from signals_app.events import Actor
from signals_app.models import Signal


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


CLIENT_NAMES = (
    "Northwind Capital Partners",
    "Amélie Durand-Lefèvre",
    "Kowalski Family Office",
    "Brightwater Trading Ltd",
    "J. Okonkwo",
    "Sakura Asset Management",
)


@dataclass
class BusyDesk:
    """A console with a working day behind it (``a_busy_desk``)."""

    signals: list[Signal]
    positions: list[OpenPosition]
    commands: list[CloseCommand]
    devices: list[Device]


def a_busy_desk() -> BusyDesk:
    """Rows as the owner's lists hold them on a working day: clients with long names and both
    channels, an EA per client and a feed, published signals on several instruments (their
    approvals, the clients' notifications, the audit trail), live and closed positions,
    close commands in every state, open alerts with long messages."""
    from ea_gateway.choices import DeviceRole
    from positions.alerts import alert_raise
    from positions.choices import CLOSED_STATUS_FOR, AlertKind, CloseCommandStatus, CloseReason
    from tests.ea_helpers import make_device
    from tests.factories import ClientFactory, make_signal, open_book

    clients = [
        ClientFactory(
            name=name,
            contact_email=f"desk{index}@{name.split()[0].lower().strip('.')}-example.com",
            telegram_chat_id=f"-100{734_221_900 + index}",
        )
        for index, name in enumerate(CLIENT_NAMES)
    ]
    devices = [make_device(client=client, name=f"{client.name} MT5").device for client in clients]
    devices.append(make_device(role=DeviceRole.FEED, name="Owner price feed (LMAX)").device)
    # The traded ones carry their fills' approvals (open_book); the last, published now,
    # awaits every client's decision (pending approvals, their notifications).
    signals = [
        make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00", publish=False),
        make_signal(symbol="EURUSD", side="sell", entry="1.08425", sl="1.08900", tp="1.07500", publish=False),
        make_signal(symbol="USDJPY", side="buy", entry="151.235", sl="150.500", tp="153.000", publish=False),
    ]
    positions = [
        *open_book(signals[0], 6, clients=clients, volume="1.25"),
        *open_book(signals[1], 6, clients=clients, volume="0.50"),
        *open_book(signals[2], 3, clients=clients[:3], volume="10.00"),
    ]
    signals.append(make_signal(symbol="XAUUSD", side="sell", entry="2688.10", sl="2695.00", tp="2660.00"))
    reasons = [CloseReason.STOP_LOSS, CloseReason.TAKE_PROFIT, CloseReason.MANUAL, CloseReason.TRAILING]
    statuses = [
        CloseCommandStatus.EXECUTED,
        CloseCommandStatus.PENDING,
        CloseCommandStatus.DELIVERED,
        CloseCommandStatus.EXPIRED,
        CloseCommandStatus.FAILED,
    ]
    commands = []
    for index, position in enumerate(positions[:10]):
        status = statuses[index % len(statuses)]
        reason = reasons[index % len(reasons)]
        done = status in (CloseCommandStatus.EXECUTED, CloseCommandStatus.EXPIRED, CloseCommandStatus.FAILED)
        commands.append(
            command_at(
                position,
                reason=reason,
                created_ago=timedelta(minutes=7 * index + 3),
                status=status,
                completed_ago=timedelta(minutes=7 * index + 2) if done else None,
            )
        )
        if status == CloseCommandStatus.EXECUTED:
            OpenPosition.objects.filter(pk=position.pk).update(
                status=CLOSED_STATUS_FOR[reason],
                remaining_volume=0,
                close_price=position.entry_price,
                realized_pnl=Decimal("-1234.56") if index % 2 else Decimal("10987.65"),
                closed_at=timezone.now() - timedelta(minutes=7 * index + 2),
            )
    alert_raise(
        kind=AlertKind.SPIKE,
        dedupe_key="spike:XAUUSD",
        message="XAUUSD jumped 3.1 % in one quote (2651.20 → 2733.40); the close it would trigger is held",
    )
    alert_raise(
        kind=AlertKind.DEVICE_OFFLINE,
        dedupe_key=f"offline:{devices[0].pk}",
        message=f"{devices[0].name} has been silent for 14 minutes with 2 close command(s) pending",
    )
    alert_raise(
        kind=AlertKind.NOTIFICATION_FAILED,
        dedupe_key="notify:email",
        message="E-mail to desk3@brightwater-example.com failed 8 times: 550 5.1.1 mailbox unavailable",
    )
    return BusyDesk(signals=signals, positions=positions, commands=commands, devices=devices)
