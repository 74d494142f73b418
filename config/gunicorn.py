"""gunicorn settings for `make run` (and production, adjusted by environment).

Workers are gevent workers: an EA's long-poll (``?wait=N``, ``ea_gateway.wake``)
holds its request open for up to 30 s, and a thousand EAs waiting must not hold
a thousand processes or threads. Each request is a greenlet; one worker holds
thousands of waiting requests while it serves the others. psycopg2 yields to
other greenlets through psycogreen's wait callback (installed after the fork),
Redis through gevent's patched sockets.

Database connections under gevent: Django would keep one per greenlet, so
``core.request_slots`` lets at most ``WEB_REQUEST_SLOTS`` requests of a worker
work at once, each on its slot's pooled connection (kept ``CONN_MAX_AGE``);
a waiting long-poll gives its slot and connection back. A worker holds at
most ``WEB_REQUEST_SLOTS`` PostgreSQL connections, however many EAs wait.
"""

from __future__ import annotations

import gc
import os

from prometheus_client import multiprocess

bind = f"127.0.0.1:{os.environ.get('WEB_PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gevent"
# Simultaneous requests per worker, waiting long-polls included (an EA may hold two:
# close commands and approvals). Beyond it, connections queue unanswered.
worker_connections = int(os.environ.get("WEB_WORKER_CONNECTIONS", "2000"))
graceful_timeout = 10
# One access-log line per request on stdout; WEB_ACCESS_LOG=0 turns it off (`make run`
# does, by default: its demo EAs alone make ~20 lines a second).
_ACCESS_LOG = os.environ.get("WEB_ACCESS_LOG", "1").strip().lower()
if _ACCESS_LOG not in {"0", "1", "true", "false", "on", "off", "yes", "no"}:
    raise SystemExit(f"WEB_ACCESS_LOG must be 1 or 0 (on/off, true/false, yes/no), not {_ACCESS_LOG!r}")
accesslog = "-" if _ACCESS_LOG in {"1", "true", "on", "yes"} else None
# gunicorn's control socket (gunicornc) is not used: without this, every gunicorn on a
# host would share one socket path in the user's home directory.
control_socket_disable = True


def post_fork(server, worker) -> None:
    # psycopg2 waits on its socket through gevent: a query no longer blocks the worker.
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()


def post_worker_init(worker) -> None:
    # The app is loaded (Django, the admin, every app's modules: a few hundred thousand
    # objects that live as long as the worker). Frozen, a full garbage collection no
    # longer walks them: it paused a worker for up to ~200 ms, every waiting EA with it.
    gc.collect()
    gc.freeze()


def child_exit(server, worker) -> None:
    # A dead worker's live gauges must leave /metrics with it.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
