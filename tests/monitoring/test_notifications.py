"""Client notifications end to end against real local servers: a Bot API stand-in and
an SMTP server. Written with their event, delivered after it, in client words."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import transaction

from positions.choices import CloseReason, PositionStatus
from positions.close_delivery import CloseResult, close_command_ack
from positions.closes import close_command_request
from positions.models import OpenPosition
from positions.notices import client_close_words
from signals_app.choices import OutboxChannel, OutboxStatus, OutboxTemplate
from signals_app.events import Actor
from signals_app.models import OutboxMessage
from tests.factories import ClientFactory, make_signal, open_book
from tests.monitoring.notify_helpers import deliver_all, execute_closes, feed_quote, fill
from tests.notify_servers import body_of
from tests.secrecy import find_levels

pytestmark = pytest.mark.django_db
LEVELS = [Decimal("2645.00"), Decimal("2670.00"), Decimal("2600.00"), Decimal("2700.00")]


def _no_level(text: str) -> bool:
    return find_levels(text, LEVELS) == []


def test_a_hidden_stop_close_tells_that_client_risk_limit_hit_and_no_one_else(
    telegram, mailbox, redis_client
):
    # given: two clients on Telegram and e-mail, each with a position; only A's signal hits its stop
    alice = ClientFactory(auto_approve=True, telegram_chat_id="1001", contact_email="alice@example.com")
    bob = ClientFactory(auto_approve=True, telegram_chat_id="1002", contact_email="bob@example.com")
    stopped = make_signal(sl="2645.00", tp="2670.00")
    alice_ea = fill(client=alice, signal=stopped, ticket="A-1")
    other = make_signal(sl="2600.00", tp="2700.00")
    bob_ea = fill(client=bob, signal=other, ticket="B-1")

    # when: the owner's feed crosses A's hidden stop, A's EA closes at its broker, and the outbox is sent
    feed_quote("XAUUSD", bid="2644.90", ask="2645.20")
    assert execute_closes(alice_ea, price="2644.70")
    assert execute_closes(bob_ea, price="2644.70") == []
    deliver_all()

    # then: one close message in A's chat, in client words, with the close price and the P&L
    closes = [text for text in telegram.sent("1001") if "closed" in text.lower()]
    assert len(closes) == 1
    # (2644.70 - 2650.50) x 0.10 lot x 100 oz = -58.00
    assert closes[0] == (
        "Position closed: risk limit hit\nBuy XAUUSD (ticket A-1) closed at 2644.70.\nP&L: -58.00 USD."
    )
    assert [text for text in telegram.sent("1002") if "closed" in text.lower()] == []
    assert any("Position opened" in text for text in telegram.sent("1002"))  # B hears of its own fill
    # and the same by e-mail, to A only
    closed_mails = [m for m in mailbox.to("alice@example.com") if m["Subject"].startswith("Position closed")]
    assert len(closed_mails) == 1
    assert closed_mails[0]["Subject"] == "Position closed: XAUUSD (risk limit hit)"
    assert "2644.70" in body_of(closed_mails[0])
    assert not [m for m in mailbox.to("bob@example.com") if "closed" in m["Subject"]]
    # and nothing sent names a level or an internal reason
    everything = telegram.sent() + [m["Subject"] + body_of(m) for m in mailbox.messages]
    assert all(_no_level(text) for text in everything)
    assert not any("stop" in text.lower() for text in everything)
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == len(everything)


@pytest.mark.parametrize(
    ("reason", "words"),
    [
        (CloseReason.STOP_LOSS, "risk limit hit"),
        (CloseReason.TRAILING, "risk limit hit"),
        (CloseReason.BREAKEVEN, "risk limit hit"),
        (CloseReason.TAKE_PROFIT, "profit target reached"),
        (CloseReason.PARTIAL_TP, "profit target reached"),
        (CloseReason.TIME, "time limit reached"),
        (CloseReason.MANUAL, "closed by the provider"),
        (CloseReason.SIGNAL_EXIT, "closed by the provider"),
    ],
)
def test_every_close_reason_has_client_words(reason, words):
    assert client_close_words(reason) == words


def _closing_position(**client_fields) -> tuple[OpenPosition, int]:
    signal = make_signal()
    client = ClientFactory(**client_fields)
    (position,) = open_book(signal, 1, clients=None)
    OpenPosition.objects.filter(pk=position.pk).update(client=client)
    position.refresh_from_db()
    command = close_command_request(position=position, reason=CloseReason.STOP_LOSS, by=Actor.system("tests"))
    return position, command.pk


def _ack(position: OpenPosition, command_id: int, volume: str = "0.10"):
    return close_command_ack(
        command_id=command_id,
        device_id=position.device_id,
        result=CloseResult(executed=True, close_price=Decimal("2644.70"), closed_volume=Decimal(volume)),
        by=Actor.system("tests"),
    )


def test_the_outbox_row_commits_with_the_close_or_not_at_all(settings, monkeypatch):
    settings.TELEGRAM_BOT_TOKEN = "1:t"
    position, command_id = _closing_position(telegram_chat_id="42")

    # when: the close's transaction rolls back after the ack
    written_inside = []

    def ack_then_fail() -> None:
        with transaction.atomic():
            _ack(position, command_id)
            written_inside.append(OutboxMessage.objects.filter(recipient="42").count())
            raise RuntimeError("the caller fails after the ack")

    with pytest.raises(RuntimeError, match="after the ack"):
        ack_then_fail()
    assert written_inside == [1]
    # then: neither the close nor its message
    position.refresh_from_db()
    assert position.status == PositionStatus.CLOSING
    assert not OutboxMessage.objects.filter(recipient="42").exists()

    # when: writing the message fails, the close fails with it
    def broken(*args, **kwargs):
        raise RuntimeError("template missing")

    monkeypatch.setattr("signals_app.notify.outbox.render_to_string", broken)
    with pytest.raises(RuntimeError):
        _ack(position, command_id)
    position.refresh_from_db()
    assert position.status == PositionStatus.CLOSING
    monkeypatch.undo()

    # when: it commits, both are there, once, however often the EA repeats its ack
    _ack(position, command_id)
    _ack(position, command_id)
    position.refresh_from_db()
    assert position.status == PositionStatus.CLOSED_SL
    (message,) = OutboxMessage.objects.filter(recipient="42")
    assert (message.template, message.status, message.channel) == (
        OutboxTemplate.POSITION_CLOSED,
        OutboxStatus.QUEUED,
        OutboxChannel.TELEGRAM,
    )
    assert "risk limit hit" in message.body


def test_a_partial_close_tells_the_part_and_what_is_still_open(settings):
    settings.TELEGRAM_BOT_TOKEN = "1:t"
    position, command_id = _closing_position(telegram_chat_id="43")

    _ack(position, command_id, volume="0.04")

    (message,) = OutboxMessage.objects.filter(recipient="43")
    assert message.template == OutboxTemplate.POSITION_PARTIALLY_CLOSED
    assert "0.04 lots closed at 2644.70" in message.body
    assert "Still open: 0.06 lots" in message.body
    assert "P&L on this part: -23.20 USD." in message.body  # (2644.70 - 2650.50) x 0.04 x 100


def test_opt_outs_and_the_close_notification_switches(settings):
    settings.TELEGRAM_BOT_TOKEN = "1:t"
    settings.EMAIL_CONFIGURED = True
    settings.CLOSE_NOTIFICATION_EMAIL = False
    position, command_id = _closing_position(
        telegram_chat_id="44", contact_email="c@example.com", notify_by_telegram=False
    )
    _ack(position, command_id)
    # Telegram: the client opted out; e-mail: close notifications are off by setting
    assert not OutboxMessage.objects.filter(client=position.client_id).exists()

    settings.CLOSE_NOTIFICATION_EMAIL = True
    other, other_command = _closing_position(telegram_chat_id="45", contact_email="d@example.com")
    _ack(other, other_command)
    assert sorted(OutboxMessage.objects.filter(client=other.client_id).values_list("channel", flat=True)) == [
        "email",
        "telegram",
    ]


def test_without_a_token_or_an_email_url_messages_are_kept_as_not_sent(settings, telegram):
    settings.TELEGRAM_BOT_TOKEN = ""
    settings.EMAIL_CONFIGURED = False
    position, command_id = _closing_position(telegram_chat_id="46", contact_email="e@example.com")

    _ack(position, command_id)
    deliver_all()

    rows = {row.channel: row for row in OutboxMessage.objects.filter(client=position.client_id)}
    assert rows["telegram"].status == rows["email"].status == OutboxStatus.NOT_SENT
    assert rows["telegram"].last_error == "not sent: TELEGRAM_BOT_TOKEN is not set"
    assert rows["email"].last_error == "not sent: EMAIL_URL is not set"
    assert "risk limit hit" in rows["telegram"].body  # what the client would have received
    assert telegram.calls == []


def test_a_signal_awaiting_approval_is_told_to_clients_who_must_decide(settings):
    settings.TELEGRAM_BOT_TOKEN = "1:t"
    deciding = ClientFactory(telegram_chat_id="50")
    ClientFactory(telegram_chat_id="51", auto_approve=True)
    ClientFactory()  # no channel

    signal = make_signal(sl="2645.00", tp="2670.00", ttl_minutes=30)

    (message,) = OutboxMessage.objects.all()
    approval = signal.approvals.get(client=deciding)
    assert (message.recipient, message.template) == ("50", OutboxTemplate.APPROVAL_PENDING)
    assert "Buy XAUUSD at 2650.50, volume 0.10 lots." in message.body
    assert f"approval #{approval.pk}" in message.body
    assert _no_level(message.body)


def test_the_owner_reads_the_outbox_in_the_console_filtered(client, settings):
    from tests.factories import OwnerFactory

    settings.TELEGRAM_BOT_TOKEN = "1:t"
    settings.OWNER_TELEGRAM_CHAT_ID = "999"
    position, command_id = _closing_position(telegram_chat_id="47")
    _ack(position, command_id)
    from positions.alerts import alert_raise
    from positions.choices import AlertKind

    alert_raise(kind=AlertKind.SPIKE, dedupe_key="spike:X", message="X: a jump")
    client.force_login(OwnerFactory())

    clients_only = client.get("/admin/signals_app/outboxmessage/?audience=clients&status__exact=queued")
    owner_only = client.get("/admin/signals_app/outboxmessage/?audience=owner")
    detail = client.get(
        f"/admin/signals_app/outboxmessage/{OutboxMessage.objects.get(recipient='47').pk}/change/"
    )

    assert [m.recipient for m in clients_only.context["cl"].result_list] == ["47"]
    assert [m.recipient for m in owner_only.context["cl"].result_list] == ["999"]
    assert "risk limit hit" in detail.content.decode()
    assert client.get("/admin/signals_app/outboxmessage/add/").status_code == 403
