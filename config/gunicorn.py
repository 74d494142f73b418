"""gunicorn settings for `make run` (and production, adjusted by environment)."""

from __future__ import annotations

import os

from prometheus_client import multiprocess

bind = f"127.0.0.1:{os.environ.get('WEB_PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
accesslog = "-"
graceful_timeout = 10


def child_exit(server, worker) -> None:
    # A dead worker's live gauges must leave /metrics with it.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
