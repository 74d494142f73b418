"""Sending one message: Telegram's Bot API through pyTelegramBotAPI, e-mail through
Django's e-mail framework. Each answers an ``Outcome``: sent, retry (maybe after a time
the server named) or failed for good; no exception leaves for a failed send."""

from __future__ import annotations

import json
import smtplib
from dataclasses import dataclass
from enum import Enum

import requests
from django.conf import settings
from django.core.mail import EmailMessage
from telebot import apihelper

from core.telegram import SEND_TIMEOUT_SECONDS, telegram_api

ERROR_MAX_LENGTH = 400


class Result(Enum):
    SENT = "sent"
    RETRY = "retry"  # the server or the network may do better later
    FAILED = "failed"  # the recipient cannot be reached (a blocked bot, an unknown chat or address)


@dataclass(frozen=True)
class Outcome:
    result: Result
    error: str = ""
    retry_after: float | None = None  # seconds the server asked to wait (a Telegram 429)

    @classmethod
    def sent(cls) -> Outcome:
        return cls(Result.SENT)


def _redacted(text: str) -> str:
    """An error for the console: never the bot token (requests' errors name the URL)."""
    token = settings.TELEGRAM_BOT_TOKEN
    if token:
        text = text.replace(token, "<token>")
    return text[:ERROR_MAX_LENGTH]


def _number(value) -> float | None:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return None


def _telegram_status(status: int, description: str, retry_after) -> Outcome:
    error = _redacted(f"Telegram {status}: {description}")
    if status == 429:
        return Outcome(Result.RETRY, error, retry_after=_number(retry_after))
    if status >= 500:
        return Outcome(Result.RETRY, error)
    # 400 chat not found, 403 bot blocked or kicked, 401 a revoked token: asking again changes nothing.
    return Outcome(Result.FAILED, error)


def telegram_send(*, chat_id: str, text: str, reply_markup: dict | None = None) -> Outcome:
    """``sendMessage`` as plain text (no parse mode: nothing in a message is markup), with
    its buttons if it has any."""
    api = telegram_api()
    try:
        api.send_message(
            settings.TELEGRAM_BOT_TOKEN,
            chat_id,
            text,
            reply_markup=json.dumps(reply_markup) if reply_markup else None,
            timeout=SEND_TIMEOUT_SECONDS,
        )
    except apihelper.ApiTelegramException as error:
        parameters = error.result_json.get("parameters") or {}
        return _telegram_status(error.error_code, error.description, parameters.get("retry_after"))
    except apihelper.ApiHTTPException as error:  # an answer that is not the API's JSON (a proxy's page)
        response = error.result
        return _telegram_status(
            response.status_code, response.reason or "", response.headers.get("Retry-After")
        )
    except apihelper.ApiInvalidJSONException:
        return Outcome(Result.RETRY, "Telegram answered 200 without valid JSON")
    except requests.RequestException as error:
        return Outcome(Result.RETRY, _redacted(f"{type(error).__name__}: {error}"))
    return Outcome.sent()


def email_send(*, address: str, subject: str, body: str) -> Outcome:
    """One e-mail over the EMAIL_URL backend; an SMTP 5xx is for good, a 4xx or a lost
    connection is retried."""
    message = EmailMessage(subject=subject, body=body, from_email=settings.DEFAULT_FROM_EMAIL, to=[address])
    try:
        message.send(fail_silently=False)
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        result = Result.FAILED if codes and all(code >= 500 for code in codes) else Result.RETRY
        return Outcome(result, _redacted(f"SMTP refused the recipient: {error.recipients}"))
    except smtplib.SMTPResponseException as error:
        result = Result.FAILED if error.smtp_code >= 500 else Result.RETRY
        return Outcome(result, _redacted(f"SMTP {error.smtp_code}: {error.smtp_error!r}"))
    except (smtplib.SMTPException, OSError) as error:
        return Outcome(Result.RETRY, _redacted(f"{type(error).__name__}: {error}"))
    return Outcome.sent()
