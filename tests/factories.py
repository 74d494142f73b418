from __future__ import annotations

from decimal import Decimal

import factory
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token

from signals_app.events import Actor
from signals_app.models import Client, Instrument
from signals_app.services import signal_create, signal_publish


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    is_staff = False
    is_superuser = False


class OwnerFactory(UserFactory):
    username = factory.Sequence(lambda n: f"owner{n}")
    is_staff = True
    is_superuser = True


class ClientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Client

    name = factory.Sequence(lambda n: f"client-{n}")
    default_volume = Decimal("0.10")


def instrument(symbol: str = "XAUUSD") -> Instrument:
    return Instrument.objects.get(symbol=symbol)  # seeded by migration 0002


def token_for(user) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def make_signal(
    *,
    symbol: str = "XAUUSD",
    side: str = "buy",
    entry: str = "2650.50",
    sl: str | None = "2645.00",
    tp: str | None = "2670.00",
    publish: bool = True,
    ttl_minutes: int = 240,
    payload: dict | None = None,
    **levels,
):
    owner_only = {key: value for key, value in {"sl": sl, "tp": tp, **levels}.items() if value is not None}
    by = Actor.system("tests")
    signal = signal_create(
        instrument=symbol,
        side=side,
        entry_price=Decimal(entry),
        ttl_minutes=ttl_minutes,
        payload=payload or {},
        owner_only=owner_only,
        by=by,
    )
    if publish:
        signal = signal_publish(signal=signal, by=by).signal
    return signal


def open_book(signal, count: int, *, clients=None, auto_close: bool = True, volume: str = "0.10"):
    """``count`` open positions on ``signal``, one client (with its EA device) each, in bulk.

    Test and benchmark setup only: it writes rows directly, bypassing the fill service.
    """
    import secrets as _secrets
    from datetime import timedelta

    from django.utils import timezone

    from ea_gateway.models import Device
    from positions.models import OpenPosition
    from signals_app.choices import ApprovalStatus
    from signals_app.models import Approval

    if clients is None:
        stamp = _secrets.token_hex(4)
        clients = Client.objects.bulk_create(
            [Client(name=f"book-{stamp}-{index}", auto_close_enabled=auto_close) for index in range(count)]
        )
        devices = Device.objects.bulk_create(
            [
                Device(
                    name=f"EA {client.name}",
                    role="ea",
                    client=client,
                    key_id=f"vsk_{stamp}_{index}",
                    secret="s",
                )
                for index, client in enumerate(clients)
            ]
        )
    else:
        devices = list(Device.objects.filter(client__in=clients).order_by("client_id"))
    expires = timezone.now() + timedelta(hours=1)
    approvals = Approval.objects.bulk_create(
        [
            Approval(
                signal=signal,
                client=client,
                volume=Decimal(volume),
                status=ApprovalStatus.EXECUTED,
                expires_at=expires,
            )
            for client in clients
        ]
    )
    return OpenPosition.objects.bulk_create(
        [
            OpenPosition(
                signal=signal,
                approval=approval,
                client=client,
                device=device,
                instrument_id=signal.instrument_id,
                side=signal.side,
                requested_entry_price=signal.entry_price,
                entry_price=signal.entry_price,
                volume=Decimal(volume),
                remaining_volume=Decimal(volume),
                broker_ticket=f"{signal.pk}-{index}",
            )
            for index, (approval, client, device) in enumerate(zip(approvals, clients, devices, strict=True))
        ]
    )


def report_fill(*, approval_id: int, client_id: int, device_id: int, price: str, ticket: str = "late-1"):
    """An EA's fill report through the fill service (what the ack endpoint calls),
    committed with its on-commit work run (the dirty mark, the sweep it queues)."""
    from django.test import TestCase

    from positions.fills import Fill, FillReport, approval_fill_report

    with TestCase.captureOnCommitCallbacks(execute=True):
        return approval_fill_report(
            report=FillReport(
                approval_id=approval_id,
                client_id=client_id,
                device_id=device_id,
                fill=Fill(broker_ticket=ticket, entry_price=Decimal(price), volume=Decimal("0.10")),
            ),
            by=Actor.system("tests"),
        )
