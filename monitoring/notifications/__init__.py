"""Notifications, the sending half: a Celery task claims due outbox rows
(``signals_app.notify`` writes them) and sends them through Telegram's Bot API
(pyTelegramBotAPI) or Django's e-mail framework, within Telegram's rate limits,
retrying what may succeed later and alerting the owner about what never will."""
