"""``python -m ea_client`` against the local signed server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ea_client.__main__ import SECRET_ENV, build_parser, main
from tests.ea_client.signed_server import KEY, SECRET, FakeVeilstop, Serve

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_once_runs_a_full_cycle_on_the_simulated_broker(serve: Serve) -> None:
    api = FakeVeilstop()
    api.add_approval(1)
    server = serve(handler=api)

    status = main(["--server", server.url, "--key", KEY, "--secret", SECRET, "--simulated", "--once"])

    assert status == 0
    assert api.acks[1][0]["status"] == "placed"
    assert api.acks[1][0]["entry_price"] == "2650.5"
    assert api.heartbeats[0]["open_tickets"] == [api.acks[1][0]["broker_ticket"]]


def test_once_exits_1_when_a_step_fails(serve: Serve) -> None:
    api = FakeVeilstop()
    api.inject("/api/v1/client/heartbeat", "unavailable")
    server = serve(handler=api)

    status = main(["--server", server.url, "--key", KEY, "--secret", SECRET, "--once", "--max-retries", "0"])

    assert status == 1
    assert api.heartbeats == []


def test_the_secret_can_come_from_the_environment(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeVeilstop()
    server = serve(handler=api)
    monkeypatch.setenv(SECRET_ENV, SECRET)

    status = main(["--server", server.url, "--key", KEY, "--once"])

    assert status == 0
    assert len(api.heartbeats) == 1


def test_a_missing_secret_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)

    with pytest.raises(SystemExit) as exited:
        main(["--server", "http://127.0.0.1:1", "--key", KEY, "--once"])

    assert exited.value.code == 2
    assert SECRET_ENV in capsys.readouterr().err


def test_simulated_and_mt5_are_exclusive(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--server", "http://x", "--key", "k", "--simulated", "--mt5"])

    assert exited.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_mt5_without_the_package_says_so(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    # None in sys.modules makes the import fail, as on Linux where no wheel exists.
    monkeypatch.setitem(sys.modules, "MetaTrader5", None)

    with pytest.raises(SystemExit) as exited:
        main(["--server", "http://127.0.0.1:1", "--key", KEY, "--secret", SECRET, "--mt5", "--once"])

    assert exited.value.code == 2
    assert "MetaTrader5 package is not installed" in capsys.readouterr().err


def test_a_bad_server_url_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--server", "veilstop.example", "--key", KEY, "--secret", SECRET, "--once"])

    assert exited.value.code == 2
    assert "http(s) URL" in capsys.readouterr().err


def test_help_runs_as_a_module() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ea_client", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0
    for option in ("--server", "--key", "--secret", "--simulated", "--mt5", "--interval", "--once"):
        assert option in result.stdout
