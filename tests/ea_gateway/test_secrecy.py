"""Invariant 1 over the EA protocol: for any signal, nothing an EA or a feed can
receive (body, header, error), no notification (every outbox row, every message
delivered to Telegram or by e-mail) and no log line at INFO or above holds a hidden level."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ea_gateway.choices import DeviceRole
from monitoring.notifications import rate_limits
from positions.models import CloseCommand, OpenPosition
from positions.quotes import Quote, quotes_ingest
from positions.scanner import sweep
from positions.timeouts import close_commands_timeout
from signals_app.events import Actor
from signals_app.models import OutboxMessage
from signals_app.services import signal_create, signal_publish
from tests.ea_helpers import ea_for, make_device
from tests.factories import ClientFactory, make_signal
from tests.monitoring.notify_helpers import deliver_all
from tests.notify_servers import body_of
from tests.secrecy import find_levels, response_text
from tests.signals.test_secrecy import signals

pytestmark = pytest.mark.django_db


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=signals())
def test_no_hidden_level_reaches_an_ea(
    body, recorded_logs, redis_client, telegram, mailbox, settings, monkeypatch
):
    # given: a published signal and a client whose EA copies it (and no quote of an earlier example);
    # clients and the owner hear of everything on Telegram and by e-mail
    redis_client.flushdb()
    monkeypatch.setattr(rate_limits, "CHAT_INTERVAL_MS", 5)  # a chat's messages need not wait a second here
    settings.OWNER_TELEGRAM_CHAT_ID = "owner"
    settings.OWNER_ALERT_EMAILS = ["owner@example.com"]
    settings.TELEGRAM_WEBHOOK_SECRET = "secret"  # approval messages carry their buttons
    client = ClientFactory(auto_approve=True, contact_email="client@example.com")
    client.telegram_chat_id = f"chat-{client.pk}"
    client.save()
    ClientFactory(telegram_chat_id=f"deciding-{client.pk}", contact_email="deciding@example.com")
    ea = ea_for(make_device(client=client))
    feed = ea_for(make_device(role=DeviceRole.FEED, name="feed"))
    stranger = ea_for(make_device())
    by = Actor.system("bot")
    signal = signal_create(
        instrument=body["instrument"],
        side=body["side"],
        entry_price=Decimal(body["entry_price"]),
        ttl_minutes=body["ttl_minutes"],
        payload=body["payload"],
        owner_only=body["owner_only"],
        by=by,
    )
    signal_publish(signal=signal, by=by)
    levels = [Decimal(str(body["owner_only"]["sl"])), Decimal(str(body["owner_only"]["tp"]))]
    approval = signal.approvals.get(client=client)
    entry = body["entry_price"]
    fill = {
        "approval_id": approval.pk,
        "status": "placed",
        "broker_ticket": f"T{approval.pk}",
        "entry_price": entry,
        "volume": "0.10",
    }

    # when: the EA goes through its whole life, including mistakes
    responses = [ea.poll(), ea.ack(fill), ea.ack(fill), ea.ack({**fill, "broker_ticket": "other"})]
    assert OpenPosition.objects.filter(approval=approval).count() == 1
    sl = Decimal(str(body["owner_only"]["sl"]))
    # the owner's feed touches the stop exactly; the real scanner queues the close
    quotes_ingest(quotes=[Quote(body["instrument"], sl, sl, time.time())])
    sweep()
    assert CloseCommand.objects.filter(position__approval=approval).count() == 1
    commands = ea.close_commands()
    command_id = commands.json()["commands"][0]["command_id"]
    close = {"command_id": command_id, "status": "executed", "close_price": entry, "closed_volume": "0.10"}
    responses += [
        commands,
        ea.close_ack(close),
        ea.close_ack({**close, "closed_volume": "0.05"}),
        ea.ack({**fill, "stop_loss": str(sl)}),
        ea.heartbeat({"balance": "1000", "equity": "990", "open_tickets": []}),
        ea.request("GET", "/api/v1/client/poll", **{"X-Signature": "0" * 64}),
        stranger.ack(fill),
        stranger.close_ack(close),
        stranger.poll(),
        feed.poll(),
        feed.quotes(
            {"quotes": [{"instrument": body["instrument"], "bid": entry, "ask": entry, "ts": 1.7e9}]}
        ),
    ]
    close_commands_timeout(now=timezone.now() + timedelta(hours=1))  # alerts and their log lines too
    deliver_all()
    outbox = [
        f"{message.subject} {message.body} {json.dumps(message.reply_markup)}"
        for message in OutboxMessage.objects.all()
    ]
    delivered = [" ".join(call.params.values()) for call in telegram.calls]
    delivered += [f"{mail['Subject']} {body_of(mail)}" for mail in mailbox.messages]
    assert {"position_opened", "position_closed", "approval_pending", "owner_alert"} <= set(
        OutboxMessage.objects.values_list("template", flat=True)
    )

    # then
    for response in responses:
        assert response.status_code != 500
        assert find_levels(response_text(response), levels) == [], (
            response.request["PATH_INFO"],
            response.status_code,
        )
    assert find_levels("\n".join(recorded_logs.lines), levels) == []
    for text in outbox + delivered:
        assert find_levels(text, levels) == [], text


# --- the client's risk guard: its limits and the levels they set never reach the EA ----------

LIMITS = st.decimals(min_value=Decimal("1.01"), max_value=Decimal("49.99"), places=2).filter(
    lambda value: value % 1 != 0
)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawdown=LIMITS, daily=LIMITS, start=st.integers(min_value=1000, max_value=90000))
def test_no_guard_limit_or_trigger_level_reaches_an_ea(drawdown, daily, start, redis_client):
    # given: a client with its own limits, an open position, and the equity it starts from
    redis_client.flushdb()
    client = ClientFactory(auto_approve=True, drawdown_limit_percent=drawdown, daily_loss_limit_percent=daily)
    ea = ea_for(make_device(client=client))
    signal = make_signal(symbol="XAUUSD", entry="2650.50")
    approval = signal.approvals.get(client=client)
    fill = {
        "approval_id": approval.pk,
        "status": "placed",
        "broker_ticket": f"G{approval.pk}",
        "entry_price": "2650.50",
        "volume": "0.10",
    }
    peak = Decimal(start) + Decimal("0.37")
    floor = (peak * (1 - drawdown / 100)).quantize(Decimal("0.01"))
    daily_floor = (peak * (1 - daily / 100)).quantize(Decimal("0.01"))
    below = min(floor, daily_floor) - Decimal("0.01")
    beat = {"balance": str(peak), "open_tickets": [fill["broker_ticket"]]}

    # when: the EA fills, beats above and then below the limit, and fetches its closes
    responses = [ea.ack(fill), ea.heartbeat({**beat, "equity": str(peak)})]
    responses.append(ea.heartbeat({**beat, "equity": str(below)}))
    if not CloseCommand.objects.filter(position__client=client).exists():
        # a move beyond the jump limit is held: the next beat confirms it
        responses.append(ea.heartbeat({**beat, "equity": str(below)}))
    assert CloseCommand.objects.filter(position__approval=approval).count() == 1
    make_signal(symbol="EURUSD", entry="1.10000", sl="1.09000", tp="1.12000")
    responses += [ea.close_commands(), ea.poll(), ea.heartbeat({**beat, "equity": str(below)})]

    # then: the reason is generic, and no limit, trigger level or peak is in any answer
    assert responses[-3].json()["commands"][0]["reason"] == "closed by the provider"
    assert responses[-2].json() == {"approvals": []}
    hidden = [drawdown, daily, floor, daily_floor, 100 - drawdown, 100 - daily]
    for response in responses:
        assert response.status_code == 200, response.content
        assert find_levels(response_text(response), hidden) == [], response.request["PATH_INFO"]
