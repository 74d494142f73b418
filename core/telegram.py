"""pyTelegramBotAPI's low-level Bot API functions, pointed at TELEGRAM_API_URL (Telegram's
servers, a local Bot API server, or a test's stand-in)."""

from __future__ import annotations

from types import ModuleType

from django.conf import settings
from telebot import apihelper

SEND_TIMEOUT_SECONDS = 10


def telegram_api() -> ModuleType:
    """``telebot.apihelper`` with its base URL from the settings (a module-wide setting of
    the library: every caller sets the same value)."""
    apihelper.API_URL = settings.TELEGRAM_API_URL + "/bot{0}/{1}"
    return apihelper
