"""The embedded default: PostgreSQL and Redis from pip packages, started once and reused."""

from __future__ import annotations

import subprocess
import sys

import psycopg2
import pytest
import redis

from config import embedded, embedded_settings
from tests.helpers import REPO_ROOT

pytestmark = pytest.mark.slow


def _query(database_url: str, sql: str):
    socket_dir = database_url.split("host=", 1)[1]
    connection = psycopg2.connect(host=socket_dir, user="postgres", dbname=embedded.DATABASE_NAME)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchone() if cursor.description else None
    finally:
        connection.close()


@pytest.fixture
def state_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("state")
    yield directory
    embedded.stop_postgres(directory)
    embedded.stop_redis(directory)


def test_starts_postgres_and_redis_and_reuses_them(state_dir):
    # when
    database_url = embedded.ensure_postgres(state_dir)
    redis_url = embedded.ensure_redis(state_dir)
    first_postgres = embedded.postgres_status(state_dir)
    first_redis = embedded.redis_status(state_dir)

    # then: real servers answer
    assert int(_query(database_url, "SHOW server_version")[0].split(".")[0]) >= 15
    assert redis.Redis.from_url(redis_url).ping() is True

    # when asked again: the same processes, nothing new started
    assert embedded.ensure_postgres(state_dir) == database_url
    assert embedded.ensure_redis(state_dir) == redis_url
    assert embedded.postgres_status(state_dir).pid == first_postgres.pid
    assert embedded.redis_status(state_dir).pid == first_redis.pid

    # and they stop cleanly
    assert embedded.stop_postgres(state_dir) is True
    assert embedded.stop_redis(state_dir) is True
    assert not embedded.postgres_status(state_dir).running
    assert not embedded.redis_status(state_dir).running
    assert embedded.stop_redis(state_dir) is False


def test_data_survives_a_restart(state_dir):
    _query(embedded.ensure_postgres(state_dir), "CREATE TABLE kept (value int); INSERT INTO kept VALUES (42)")
    embedded.stop_postgres(state_dir)

    assert _query(embedded.ensure_postgres(state_dir), "SELECT value FROM kept") == (42,)


def test_server_runs_with_veilstops_settings_from_its_first_start(state_dir):
    # The first start runs initdb, whose postgresql.conf knows nothing of them: the server
    # is restarted once with them; a later start reads them at once.
    database_url = embedded.ensure_postgres(state_dir)
    for name, value in embedded_settings.SERVER_SETTINGS.items():
        assert _query(database_url, f"SHOW {name}") == (value,)
    first = embedded.postgres_status(state_dir).pid
    assert embedded.ensure_postgres(state_dir) == database_url
    assert embedded.postgres_status(state_dir).pid == first
    embedded.stop_postgres(state_dir)
    _query(embedded.ensure_postgres(state_dir), "SELECT 1")
    log = (state_dir / "postgres" / "log").read_text()
    assert log.count("starting PostgreSQL") == 3  # initdb's start, the restart, the start after the stop


def test_settings_overridden_by_alter_system_cost_one_restart_and_a_warning_never_a_loop(state_dir, capsys):
    database_url = embedded.ensure_postgres(state_dir)
    _query(database_url, "SELECT 1")
    connection = psycopg2.connect(
        host=database_url.split("host=", 1)[1], user="postgres", dbname=embedded.DATABASE_NAME
    )
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("ALTER SYSTEM SET wal_buffers = '8MB'")
    connection.close()
    embedded.stop_postgres(state_dir)
    capsys.readouterr()

    # when: started again (by this process: one restart), then asked for while it runs
    embedded.ensure_postgres(state_dir)
    pid = embedded.postgres_status(state_dir).pid
    embedded.ensure_postgres(state_dir)

    # then: ALTER SYSTEM wins; the server is restarted once, not again, and the owner told
    assert _query(database_url, "SHOW wal_buffers") == ("8MB",)
    assert embedded.postgres_status(state_dir).pid == pid
    log = (state_dir / "postgres" / "log").read_text()
    assert log.count("starting PostgreSQL") == 4  # initdb's start, its restart, the start and its restart
    assert capsys.readouterr().err.count("runs without wal_buffers") == 2


def _run_cli(state_dir, environment_overrides: dict[str, str], command: str) -> subprocess.CompletedProcess:
    import os

    environment = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    environment.update(environment_overrides)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "config.embedded",
            "--state-dir",
            str(state_dir),
            "run",
            "--",
            "sh",
            "-c",
            command,
        ],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_run_exports_urls_and_stops_what_it_started(state_dir):
    result = _run_cli(state_dir, {}, 'echo "DB=$DATABASE_URL"; echo "REDIS=$REDIS_URL"; exit 3')

    assert result.returncode == 3  # the command's own exit code
    assert f"DB=postgres://postgres@/veilstop?host={state_dir}" in result.stdout
    assert "REDIS=redis://127.0.0.1:" in result.stdout
    assert "embedded PostgreSQL stopped" in result.stdout
    assert not embedded.postgres_status(state_dir).running
    assert not embedded.redis_status(state_dir).running


def test_run_leaves_servers_it_did_not_start(state_dir):
    embedded.ensure_redis(state_dir)
    pid = embedded.redis_status(state_dir).pid

    result = _run_cli(state_dir, {"DATABASE_URL": "postgres://u@db.example/x"}, "true")

    assert result.returncode == 0, result.stderr
    assert embedded.redis_status(state_dir).pid == pid  # reused and left running


def test_nothing_embedded_starts_when_urls_are_set(state_dir):
    result = _run_cli(
        state_dir,
        {"DATABASE_URL": "postgres://u@db.example/x", "REDIS_URL": "redis://cache.example:6379/0"},
        'echo "DB=$DATABASE_URL REDIS=$REDIS_URL"',
    )

    assert result.returncode == 0, result.stderr
    assert "DB=postgres://u@db.example/x REDIS=redis://cache.example:6379/0" in result.stdout
    assert "embedded" not in result.stdout
    assert not (state_dir / "postgres").exists()
    assert not (state_dir / "redis").exists()
