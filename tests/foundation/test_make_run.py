"""`make run` as a newcomer meets it (issue 14): the whole system starts from
scripts/start.sh, says where everything is once healthy, keeps the log readable (no
access log, no start-up probes logged as errors), stops on Ctrl-C, and a taken port
stops it at once naming the variable that moves it."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from demo.management.commands.demo import demo_clients
from monitoring.notifications.standin import STANDIN_TOKEN
from signals_app.choices import OutboxStatus
from signals_app.events import Actor
from signals_app.models import Client
from signals_app.models_outbox import OutboxMessage
from tests.helpers import REPO_ROOT, process_environment, wait_for

VENV_BIN = str(Path(sys.executable).parent)


def _start_sh(log: Path, **environment: str) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            ["sh", "scripts/start.sh"],
            cwd=REPO_ROOT,
            env=process_environment(PATH=f"{VENV_BIN}:{os.environ['PATH']}", **environment),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


@pytest.mark.parametrize("variable", ["FLOWER_PORT", "TELEGRAM_STANDIN_PORT"])
@pytest.mark.django_db
def test_a_taken_port_stops_it_before_anything_starts_naming_the_variable(
    tmp_path, unused_tcp_port, variable
):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", unused_tcp_port))
        taken.listen()
        # (no bot token: the Bot API stand-in's port is one `make run` listens on)
        process = _start_sh(tmp_path / "run.log", TELEGRAM_BOT_TOKEN="", **{variable: str(unused_tcp_port)})
        assert process.wait(60) == 1
    said = (tmp_path / "run.log").read_text()
    assert f"port {unused_tcp_port} on 127.0.0.1 is taken" in said
    assert f"{variable}=" in said
    assert "Operations to perform" not in said  # nothing was migrated or started
    assert "Traceback" not in said


def test_with_a_bot_token_the_stand_in_port_is_not_checked(unused_tcp_port):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", unused_tcp_port))
        taken.listen()
        checked = subprocess.run(
            [sys.executable, "scripts/console.py", "ports"],
            cwd=REPO_ROOT,
            env={
                **os.environ,
                "TELEGRAM_BOT_TOKEN": "123:real",
                "TELEGRAM_STANDIN_PORT": str(unused_tcp_port),
                "WEB_PORT": str(_free_port()),
                "FLOWER_PORT": str(_free_port()),
            },
            capture_output=True,
            text=True,
        )
    assert (checked.returncode, checked.stderr) == (0, "")


@pytest.mark.parametrize(
    ("value", "accesslog"), [("0", "None"), ("off", "None"), ("1", "-"), ("yes", "-"), (None, "-")]
)
def test_the_access_log_setting_has_its_effect(value, accesslog):
    environment = {key: val for key, val in os.environ.items() if key != "WEB_ACCESS_LOG"}
    if value is not None:
        environment["WEB_ACCESS_LOG"] = value
    shown = subprocess.run(
        [sys.executable, "-c", "import config.gunicorn as g; print(g.accesslog, g.control_socket_disable)"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    # and no gunicorn shares a control socket with another on the host
    assert shown == [accesslog, "True"]


def test_a_mistyped_access_log_setting_is_refused():
    refused = subprocess.run(
        [sys.executable, "-c", "import config.gunicorn"],
        cwd=REPO_ROOT,
        env={**os.environ, "WEB_ACCESS_LOG": "maybe"},
        capture_output=True,
        text=True,
    )
    assert refused.returncode != 0
    assert "WEB_ACCESS_LOG must be 1 or 0" in refused.stderr


@pytest.mark.django_db
def test_an_unhealthy_answer_is_a_warning_naming_what_fails_not_an_error(client, caplog, redis_client):
    # given: no beat has run (its heartbeat is missing): the probe is told 503
    with caplog.at_level(logging.INFO):
        answer = client.get("/healthz")
    assert answer.status_code == 503
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    assert any(r.levelno == logging.WARNING and "beat" in r.getMessage() for r in caplog.records)


@pytest.mark.django_db
def test_the_site_root_and_view_site_lead_to_the_monitor(admin_client):
    assert admin_client.get("/")["Location"] == "/admin/monitor/"
    assert 'href="/admin/monitor/"' in admin_client.get("/admin/").content.decode()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_make_run_starts_everything_says_where_it_is_stops_on_ctrl_c_and_starts_again(tmp_path, redis_client):
    web, flower, standin = _free_port(), _free_port(), _free_port()
    environment = {
        "WEB_PORT": str(web),
        "FLOWER_PORT": str(flower),
        "TELEGRAM_STANDIN_PORT": str(standin),
        "TELEGRAM_BOT_TOKEN": "",  # no token: Telegram messages go to the local stand-in
        "VEILSTOP_STATE_DIR": str(tmp_path / "state"),
        "DEMO_SIGNAL_EVERY": "3",
    }
    recorded = tmp_path / "state" / "telegram-standin.jsonl"

    with _running(tmp_path / "first.log", environment) as said:
        # then: the banner, once healthy, says where everything is
        assert f"http://127.0.0.1:{web}/admin/" in said()
        assert str(tmp_path / "state" / "owner-credentials.txt") in said()
        assert f"http://127.0.0.1:{flower}/" in said()
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/", timeout=10) as home:
            assert home.url.startswith(f"http://127.0.0.1:{web}/admin/login/?next=/admin/monitor/")
        # and the demo's EAs at work leave no access-log lines, the start-up no errors
        wait_for(lambda: " placed: " in said(), timeout=60)
        # and the demo clients' messages reach the Bot API stand-in: logged, recorded, sent
        assert f"local stand-in of the Bot API (http://127.0.0.1:{standin}/)" in said()
        assert str(recorded) in said()
        wait_for(lambda: recorded.exists() and "Position opened" in recorded.read_text(), timeout=30)
        message = next(
            json.loads(line) for line in recorded.read_text().splitlines() if "Position opened" in line
        )
        assert message["chat"]["id"] in (100001, 100002, 100003)
        assert f"to chat {message['chat']['id']}: Position opened / " in said()
        delivered = OutboxMessage.objects.filter(
            status=OutboxStatus.SENT, recipient=str(message["chat"]["id"])
        )
        wait_for(delivered.exists, timeout=10)
    # then (Ctrl-C): everything stopped, nothing listens on its ports any more
    for port in (web, flower, standin):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))

    # when: started again on the same data: the demo's EAs go on with their accounts
    with _running(tmp_path / "second.log", environment) as said:
        wait_for(lambda: " placed: " in said(), timeout=60)
        time.sleep(3)  # the fills' acknowledgements
        # no answer of 409 (a log line's milliseconds, ",409", are not one), no refusal
        assert not re.search(r"(?<![,\d])409\b", said()), said()[-3000:]
        assert "refused, not re-sending" not in said(), said()[-3000:]


@contextmanager
def _running(log: Path, environment: dict[str, str]) -> Iterator[Callable[[], str]]:
    """scripts/start.sh running until healthy; on exit, Ctrl-C, and its log checked."""
    process = _start_sh(log, **environment)

    def said() -> str:
        return log.read_text()

    try:
        wait_for(lambda: "Veilstop is up" in said() or process.poll() is not None, timeout=150)
        assert "Veilstop is up" in said(), said()[-3000:]
        yield said
        assert '"GET /api/v1/client/' not in said()
        assert " ERROR " not in said(), said()[-3000:]
        assert "Traceback" not in said(), said()[-3000:]
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.django_db
def test_the_demo_clients_have_made_up_chats_only_while_telegram_goes_to_the_stand_in(settings):
    by = Actor.system("demo")
    settings.TELEGRAM_BOT_TOKEN = STANDIN_TOKEN
    assert [client.telegram_chat_id for client in demo_clients(by=by)] == ["100001", "100002", "100003"]
    # when: a real bot, and bob linked his own chat meanwhile
    Client.objects.filter(name="demo-bob").update(telegram_chat_id="555")
    settings.TELEGRAM_BOT_TOKEN = "123:real"
    assert [client.telegram_chat_id for client in demo_clients(by=by)] == ["", "555", ""]
    # and without any token: none made up
    settings.TELEGRAM_BOT_TOKEN = ""
    assert [client.telegram_chat_id for client in demo_clients(by=by)] == ["", "555", ""]
