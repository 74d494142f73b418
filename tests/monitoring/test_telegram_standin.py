"""The local Bot API stand-in `make run` uses without a token
(monitoring.notifications.standin), driven by the product's own delivery code."""

from __future__ import annotations

import json
import logging

import pytest

from core.telegram import telegram_api
from monitoring.notifications.standin import STANDIN_TOKEN, BotApiStandIn
from monitoring.notifications.transports import Result, telegram_send


@pytest.fixture
def standin(settings, tmp_path):
    stand_in = BotApiStandIn(record_to=tmp_path / "telegram-standin.jsonl").start()
    settings.TELEGRAM_BOT_TOKEN = STANDIN_TOKEN
    settings.TELEGRAM_API_URL = stand_in.url
    yield stand_in
    stand_in.stop()


def test_it_answers_send_message_as_the_bot_api_does_and_records_it(standin, caplog):
    with caplog.at_level(logging.INFO, logger="veilstop.telegram_standin"):
        outcome = telegram_send(chat_id="100001", text="Position closed: risk limit hit\nP&L: -3.20 USD")
        answered = telegram_api().send_message(STANDIN_TOKEN, "-100002", "Position opened")

    assert outcome.result is Result.SENT
    # the answer is Telegram's: the message, its chat id an integer
    assert answered["chat"] == {"id": -100002, "type": "private"}
    assert answered["text"] == "Position opened"
    assert answered["message_id"] == 2
    assert answered["from"]["is_bot"] is True
    # kept in memory, in the JSON-lines file in order, and one readable line each in the log
    assert standin.sent("100001") == ["Position closed: risk limit hit\nP&L: -3.20 USD"]
    recorded = [json.loads(line) for line in standin.record_to.read_text().splitlines()]
    assert [(line["chat"]["id"], line["text"], line["message_id"]) for line in recorded] == [
        (100001, "Position closed: risk limit hit\nP&L: -3.20 USD", 1),
        (-100002, "Position opened", 2),
    ]
    assert "to chat 100001: Position closed: risk limit hit / P&L: -3.20 USD" in caplog.messages
    assert "to chat -100002: Position opened" in caplog.messages


def test_buttons_are_kept_with_their_message(standin):
    markup = {"inline_keyboard": [[{"text": "Approve", "callback_data": "a:1"}]]}
    assert telegram_send(chat_id="7", text="New signal", reply_markup=markup).result is Result.SENT
    assert json.loads(standin.record_to.read_text())["reply_markup"] == markup


def test_it_refuses_as_the_bot_api_does_and_records_nothing_refused(standin, settings):
    # an empty text: 400, failed for good
    empty = telegram_send(chat_id="100001", text=" ")
    assert (empty.result, empty.error) == (Result.FAILED, "Telegram 400: Bad Request: message text is empty")
    too_long = telegram_send(chat_id="100001", text="x" * 4097)
    assert too_long.error == "Telegram 400: Bad Request: message is too long"
    # another token: 401, and the token never in the error
    settings.TELEGRAM_BOT_TOKEN = "123:another"
    refused = telegram_send(chat_id="100001", text="hello")
    assert (refused.result, refused.error) == (Result.FAILED, "Telegram 401: Unauthorized")
    assert [(call.method, call.status) for call in standin.calls] == [
        ("sendMessage", 400),
        ("sendMessage", 400),
        ("sendMessage", 401),
    ]
    assert standin.sent() == []
    assert not standin.record_to.exists()


def test_it_answers_set_webhook_and_refuses_an_unknown_method(standin):
    api = telegram_api()
    assert api.set_webhook(STANDIN_TOKEN, url="https://example.org/hook", secret_token="s") is True
    with pytest.raises(api.ApiTelegramException) as refused:
        api._make_request(STANDIN_TOKEN, "sendDice")
    assert refused.value.error_code == 404
