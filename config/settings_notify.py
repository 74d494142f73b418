"""Settings of the notifications (README: Notifications, Configuration); read by
config.settings."""

from __future__ import annotations

import os

from config.environment import EnvironmentReader

env = EnvironmentReader(os.environ)

# --- Notifications (signals_app.notify writes the outbox, monitoring.notifications delivers) --
# Without a token (or an e-mail URL) the messages are still written, as "not sent", so the
# console shows what each recipient would have received.
TELEGRAM_BOT_TOKEN = env.str("TELEGRAM_BOT_TOKEN", "")
TELEGRAM_API_URL = env.http_url("TELEGRAM_API_URL", "https://api.telegram.org")
# Set: the webhook (api/v1/telegram/webhook) takes updates carrying it, and approval messages get
# Approve / Skip buttons. Telegram allows 1-256 of A-Z, a-z, 0-9, _ and -.
TELEGRAM_WEBHOOK_SECRET = env.token("TELEGRAM_WEBHOOK_SECRET")
OWNER_TELEGRAM_CHAT_ID = env.str("OWNER_TELEGRAM_CHAT_ID", "")
OWNER_ALERT_EMAILS = env.list("OWNER_ALERT_EMAILS", [])
# Alerts of one kind after the first within this window go out as one message with the count.
OWNER_ALERT_GROUP_SECONDS = env.int("OWNER_ALERT_GROUP_SECONDS", 300, minimum=1, maximum=86400)
CLOSE_NOTIFICATION_TELEGRAM = env.bool("CLOSE_NOTIFICATION_TELEGRAM", True)
CLOSE_NOTIFICATION_EMAIL = env.bool("CLOSE_NOTIFICATION_EMAIL", True)
NOTIFICATION_MAX_ATTEMPTS = env.int("NOTIFICATION_MAX_ATTEMPTS", 8, minimum=1, maximum=50)
_email = env.email("EMAIL_URL")
EMAIL_CONFIGURED = bool(_email)
globals().update(_email)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", "veilstop@localhost")
