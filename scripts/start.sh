#!/bin/sh
# Started by `make run` with DATABASE_URL and REDIS_URL set (embedded or yours).
set -eu
cd "$(dirname "$0")/.."
# Quiet by default here (the demo EAs alone would log ~20 requests a second); set them
# to 1 / INFO to see every request and task.
WEB_ACCESS_LOG="${WEB_ACCESS_LOG:-0}"
CELERY_LOG_LEVEL="${CELERY_LOG_LEVEL:-WARNING}"
WEB_PORT="${WEB_PORT:-8000}"
FLOWER_PORT="${FLOWER_PORT:-5555}"
TELEGRAM_STANDIN_PORT="${TELEGRAM_STANDIN_PORT:-8081}"
export WEB_ACCESS_LOG CELERY_LOG_LEVEL WEB_PORT FLOWER_PORT TELEGRAM_STANDIN_PORT
python scripts/console.py ports
PROCESSES="web worker beat flower"
# No bot token: Telegram messages go to a local stand-in of the Bot API (its log lines,
# .state/telegram-standin.jsonl, the console's Outbox messages) instead of nowhere.
if [ -z "${TELEGRAM_BOT_TOKEN:-}" ]; then
    TELEGRAM_BOT_TOKEN=standin
    TELEGRAM_API_URL="http://127.0.0.1:$TELEGRAM_STANDIN_PORT"
    export TELEGRAM_BOT_TOKEN TELEGRAM_API_URL
    PROCESSES="$PROCESSES telegram"
fi
python manage.py migrate --noinput
python manage.py setup_periodic_tasks
python manage.py ensure_owner
# Every process (web, worker) writes its metrics here; /metrics reads them all.
PROMETHEUS_MULTIPROC_DIR="${VEILSTOP_STATE_DIR:-.state}/prometheus"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
export PROMETHEUS_MULTIPROC_DIR
echo "Veilstop is starting; it prints where everything is once it answers healthy."
# The banner, once /healthz answers 200 (or a word after VEILSTOP_START_TIMEOUT seconds).
python scripts/console.py banner &
# VEILSTOP_DEMO=0 leaves out the demo (replayed feed, strategy bot, simulated EAs).
[ "${VEILSTOP_DEMO:-1}" = "0" ] || PROCESSES="$PROCESSES demo"
# shellcheck disable=SC2086 - the list is meant to split
exec honcho start -f Procfile $PROCESSES
