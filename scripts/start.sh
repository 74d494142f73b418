#!/bin/sh
# Started by `make run` with DATABASE_URL and REDIS_URL set (embedded or yours).
set -eu
cd "$(dirname "$0")/.."
python manage.py migrate --noinput
python manage.py setup_periodic_tasks
python manage.py ensure_owner
# Every process (web, worker) writes its metrics here; /metrics reads them all.
PROMETHEUS_MULTIPROC_DIR="${VEILSTOP_STATE_DIR:-.state}/prometheus"
rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
export PROMETHEUS_MULTIPROC_DIR
WEB_PORT="${WEB_PORT:-8000}"
FLOWER_PORT="${FLOWER_PORT:-5555}"
export WEB_PORT FLOWER_PORT
cat <<MSG

  Veilstop is starting (Ctrl-C stops everything):
    owner console  http://127.0.0.1:${WEB_PORT}/admin/
    health         http://127.0.0.1:${WEB_PORT}/healthz
    metrics        http://127.0.0.1:${WEB_PORT}/metrics
    Flower         http://127.0.0.1:${FLOWER_PORT}/

MSG
# VEILSTOP_DEMO=0 leaves out the demo (replayed feed, strategy bot, simulated EAs).
PROCESSES="web worker beat flower"
[ "${VEILSTOP_DEMO:-1}" = "0" ] || PROCESSES="$PROCESSES demo"
# shellcheck disable=SC2086 - the list is meant to split
exec honcho start -f Procfile $PROCESSES
