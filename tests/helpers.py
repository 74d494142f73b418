"""Helpers for tests that start real processes against the test database."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.db import connection

from config.environment import database_url

REPO_ROOT = Path(__file__).resolve().parent.parent


def redis_server_version() -> str:
    from core.redis import get_redis

    return get_redis().info("server")["redis_version"]


def current_database_url() -> str:
    """A DATABASE_URL for the database this test process is connected to (the test DB)."""
    return database_url(connection.settings_dict)


def process_environment(**overrides: str) -> dict[str, str]:
    """Environment for a child process that must see the same servers and test DB."""
    environment = dict(os.environ)
    environment.update(
        {
            "DATABASE_URL": current_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "DJANGO_ENV": "test",
            "PYTHONUNBUFFERED": "1",
        }
    )
    environment.update(overrides)
    return environment


def start_process(arguments: list[str], log_path: Path, **overrides: str) -> subprocess.Popen:
    with open(log_path, "w") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, *arguments],
            cwd=REPO_ROOT,
            env=process_environment(**overrides),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_process(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)


def wait_for(condition: Callable[[], object], timeout: float, interval: float = 0.2) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


class CeleryProcesses:
    """Real Celery workers and beat processes against the test database, stopped on exit."""

    def __init__(self, log_dir: Path, **environment: str) -> None:
        self.log_dir = log_dir
        self.environment = environment
        self.processes: dict[str, subprocess.Popen] = {}

    def start_worker(self, name: str = "worker", concurrency: int = 1) -> subprocess.Popen:
        process = start_process(
            [
                "-m", "celery", "-A", "config", "worker", "-l", "INFO",
                f"--hostname={name}@%h", "--pool=prefork", f"--concurrency={concurrency}",
                "--without-gossip", "--without-mingle",
            ],
            self.log_dir / f"{name}.log",
            **self.environment,
        )  # fmt: skip
        self.processes[name] = process
        return process

    def start_beat(self, name: str = "beat") -> subprocess.Popen:
        process = start_process(
            [
                "-m",
                "celery",
                "-A",
                "config",
                "beat",
                "-l",
                "INFO",
                "--pidfile=",
                f"-s{self.log_dir / name}.db",
            ],
            self.log_dir / f"{name}.log",
            **self.environment,
        )
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        import signal as signals

        process = self.processes.pop(name)
        os.killpg(process.pid, signals.SIGKILL)
        process.wait(10)

    def logs(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text()[-4000:]}" for path in sorted(self.log_dir.glob("*.log"))
        )

    def __enter__(self) -> CeleryProcesses:
        return self

    def __exit__(self, *exc_info) -> None:
        for process in self.processes.values():
            stop_process(process)
