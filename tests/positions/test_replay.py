"""Replaying real market history (shipped in the backtesting package) as the owner's feed."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from positions.models import CloseCommand
from positions.quotes import SWEEP_QUEUED_KEY, quote_latest
from positions.replay import ReplayError, resolve, ticks
from positions.scanner import sweep
from tests.factories import make_signal, open_book


def test_reads_real_eurusd_history_as_ticks():
    path = resolve("backtesting:EURUSD")
    first = list(zip(range(8), ticks(path, spread=Decimal("0.0001")), strict=False))
    bars = [tick for _, tick in first]
    # 2017-04-19 09:00: O 1.0716 H 1.0722 L 1.07083 C 1.07219 -> open, high (nearer), low, close
    assert [tick.bid for tick in bars[:4]] == [
        Decimal("1.0716"),
        Decimal("1.0722"),
        Decimal("1.07083"),
        Decimal("1.07219"),
    ]
    assert all(tick.ask - tick.bid == Decimal("0.0001") for tick in bars)


def test_bid_ask_files_and_bad_files(tmp_path):
    good = tmp_path / "quotes.csv"
    good.write_text("time,bid,ask\n2024-01-01T00:00:00,1.1,1.2\n2024-01-01T00:00:01,1.15,1.25\n")
    assert [(tick.bid, tick.ask) for tick in ticks(good, spread=Decimal(0))] == [
        (Decimal("1.1"), Decimal("1.2")),
        (Decimal("1.15"), Decimal("1.25")),
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text("time,bid,ask\n2024-01-01T00:00:00,1.2,1.1\n")
    with pytest.raises(ReplayError, match="ask below bid"):
        list(ticks(bad, spread=Decimal(0)))
    with pytest.raises(ReplayError, match="no such file"):
        resolve(str(tmp_path / "missing.csv"))


@pytest.mark.django_db
def test_replay_command_feeds_the_scanner(redis_client, capsys, django_capture_on_commit_callbacks):
    # given: a EURUSD buy whose hidden stop (1.07100) the first bar's low (1.07083) crosses
    signal = make_signal(symbol="EURUSD", side="buy", entry="1.07160", sl="1.07100", tp="1.09000")
    open_book(signal, 3)

    # when: the open, the high and the low are replayed
    with django_capture_on_commit_callbacks(execute=True):
        call_command(
            "replay_quotes",
            "backtesting:EURUSD",
            "--instrument",
            "EURUSD",
            "--limit",
            "3",
            "--max-interval",
            "0",
        )

    # then: the low is the latest quote, a sweep of EURUSD was queued, and a sweep closes the book
    assert quote_latest("EURUSD").bid == Decimal("1.07083")
    assert redis_client.exists(SWEEP_QUEUED_KEY.format(symbol="EURUSD"))
    assert "replayed 3 ticks" in capsys.readouterr().out
    assert sweep().commands_created == 3
    assert CloseCommand.objects.filter(reason="stop_loss").count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["backtesting:EURUSD", "--instrument", "NOPE"], "unknown instrument"),
        (["missing.csv", "--instrument", "EURUSD"], "no such file"),
        (["backtesting:EURUSD", "--instrument", "EURUSD", "--speed", "0"], "--speed"),
    ],
)
def test_replay_command_rejects_bad_input(arguments, message):
    with pytest.raises(CommandError, match=message):
        call_command("replay_quotes", *arguments)
