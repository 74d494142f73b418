"""The guard trips once however many heartbeats breach at the same moment: concurrent
signed heartbeats against a live server and the real database."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from positions.choices import AlertKind, CloseReason, GuardState
from positions.models import Alert, ClientGuard, CloseCommand, OpenPosition
from signals_app.choices import AuditAction
from signals_app.models import AuditEvent
from tests.ea_gateway.test_concurrency import _fire
from tests.ea_helpers import encode, make_device, signed_headers
from tests.factories import ClientFactory, make_signal, report_fill

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SYMBOLS = ["XAUUSD", "EURUSD", "GBPUSD", "USDJPY", "AUDUSD", "NZDUSD", "USDCHF", "USDCAD"]
PATH = "/api/v1/client/heartbeat"


def _beats(live_server, credentials, body: bytes, *, copies: int) -> list:
    """``copies`` heartbeats of one EA at once, each signed afresh (its own nonce)."""
    return _fire(
        live_server.url + PATH,
        body,
        lambda index: signed_headers(
            key=credentials.device.key_id, secret=credentials.secret, method="POST", path=PATH, body=body
        ),
        copies=copies,
    )


def test_twenty_breaching_heartbeats_from_four_eas_trip_once_and_close_each_position_once(
    live_server, redis_client
):
    # given: a client with four EA accounts, eight open positions among them, equity 10,000 each
    client = ClientFactory(auto_approve=True, drawdown_limit_percent=Decimal("10"))
    devices = [make_device(client=client, name=f"EA {index}") for index in range(4)]
    for index, symbol in enumerate(SYMBOLS):
        signal = make_signal(symbol=symbol, entry="1.50000", sl="1.40000", tp="1.60000")
        approval = signal.approvals.get(client=client)
        report_fill(
            approval_id=approval.pk,
            client_id=client.pk,
            device_id=devices[index % 4].device.pk,
            price="1.50000",
            ticket=f"R{index}",
        )
    assert OpenPosition.objects.filter(client=client).count() == 8

    def body_for(credentials, equity: str) -> bytes:
        tickets = list(
            OpenPosition.objects.filter(device=credentials.device).values_list("broker_ticket", flat=True)
        )
        return encode({"balance": "10000.00", "equity": equity, "open_tickets": tickets})

    for credentials in devices:
        _beats(live_server, credentials, body_for(credentials, "10000.00"), copies=1)

    # when: 5 heartbeats from each EA at once, all 15% down (below the 10% limit); the EAs
    # race each other as well as their own copies
    breaching = {credentials.device.pk: body_for(credentials, "8500.00") for credentials in devices}
    results: list = []
    threads = [
        threading.Thread(
            target=lambda credentials=credentials: results.extend(
                _beats(live_server, credentials, breaching[credentials.device.pk], copies=5)
            )
        )
        for credentials in devices
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then: every heartbeat answered, one trip, one close per position
    assert sorted(response.status_code for response in results) == [200] * 20
    assert ClientGuard.objects.get(client=client).state == GuardState.TRIPPED
    assert AuditEvent.objects.filter(action=AuditAction.CLIENT_GUARD_TRIPPED).count() == 1
    assert Alert.objects.get(kind=AlertKind.GUARD_TRIPPED).occurrences == 1
    per_position = {
        position.pk: list(position.close_commands.values_list("reason", flat=True))
        for position in OpenPosition.objects.filter(client=client)
    }
    assert per_position == {pk: [CloseReason.DRAWDOWN] for pk in per_position}
    assert CloseCommand.objects.count() == 8
