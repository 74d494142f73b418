"""A mass breach's claim split over connections (positions.claim_apart): each chunk on a
connection and in a transaction of its own, committed before the caller's; exactly one
close per position whatever fails; the scanner uses it above the chunk minimum."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import psycopg2
import pytest
from django.db import connection, transaction
from django.test import override_settings

from core import wake as core_wake
from positions import closes
from positions.choices import CloseReason, PositionStatus
from positions.claim_apart import chunks_by_key, pool_close
from positions.closes import Claim, CloseRequest, closes_claim
from positions.models import CloseCommand, OpenPosition
from positions.scanner import sweep
from signals_app.choices import AuditAction
from signals_app.events import Actor
from signals_app.models import AuditEvent
from tests.factories import make_signal, open_book
from tests.helpers import current_database_url
from tests.positions.test_scanner import put_quote

OWNER = Actor.system("test")
SIGNALS = Claim.SIGNAL_POSITIONS


class Row:
    def __init__(self, key: int) -> None:
        self.key = key


def _keys(chunks) -> list[list[int]]:
    return [[row.key for row in chunk] for chunk in chunks]


def test_chunks_are_runs_of_consecutive_keys_with_each_key_in_one():
    rows = [Row(key) for key in (1, 2, 2, 3, 4, 5, 5, 5, 6, 7)]
    assert _keys(chunks_by_key(rows, parts=2, minimum=2)) == [[1, 2, 2, 3, 4], [5, 5, 5, 6, 7]]
    assert _keys(chunks_by_key(rows, parts=3, minimum=2)) == [[1, 2, 2, 3], [4, 5, 5, 5], [6, 7]]
    # a key's rows never split, even where the size says so
    assert _keys(chunks_by_key([Row(1), Row(1), Row(1), Row(2)], parts=2, minimum=1)) == [[1, 1, 1], [2]]
    # below twice the minimum, or one part asked for: one chunk
    assert _keys(chunks_by_key(rows, parts=2, minimum=6)) == [[1, 2, 2, 3, 4, 5, 5, 5, 6, 7]]
    assert len(chunks_by_key(rows, parts=1, minimum=1)) == 1
    assert chunks_by_key([], parts=4, minimum=1) == [[]]


def _signals(count: int, per_signal: int = 2):
    signals = [
        make_signal(symbol="EURUSD", entry="1.10000", sl="1.09800", tp="1.10200") for _ in range(count)
    ]
    for signal in signals:
        open_book(signal, per_signal)
    return signals


def _requests(signals) -> list[CloseRequest]:
    return [CloseRequest(key=signal.pk, reason=CloseReason.MANUAL) for signal in signals]


def _committed_commands() -> int:
    """What another session sees: only committed rows."""
    with psycopg2.connect(current_database_url()) as other, other.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM positions_closecommand")
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_the_chunks_commit_on_their_own_before_the_caller_does(monkeypatch, redis_client):
    # given
    monkeypatch.setattr(closes, "CLAIM_CHUNK_MIN_REQUESTS", 2)
    signals = _signals(6)

    # when: claimed apart inside a transaction the caller has not committed yet
    with transaction.atomic():
        queued = closes_claim(
            claim=Claim.SIGNAL_POSITIONS, requests=_requests(signals), by=OWNER, connections=3
        )
        seen_while_open = _committed_commands()
        transaction.set_rollback(True)

    # then: every position got its close, committed by the chunks, and the caller's
    # rollback undid none of them
    assert seen_while_open == 12
    assert len(queued) == 12
    assert CloseCommand.objects.count() == 12
    assert set(OpenPosition.objects.values_list("status", flat=True)) == {PositionStatus.CLOSING}
    assert AuditEvent.objects.filter(action=AuditAction.POSITION_CLOSE_REQUESTED).count() == 12


@pytest.mark.django_db(transaction=True)
def test_below_the_minimum_the_claim_is_the_callers(monkeypatch, redis_client):
    monkeypatch.setattr(closes, "CLAIM_CHUNK_MIN_REQUESTS", 4)
    signals = _signals(6)  # 6 requests: fewer than two chunks of 4

    with transaction.atomic():
        closes_claim(claim=Claim.SIGNAL_POSITIONS, requests=_requests(signals), by=OWNER, connections=3)
        seen_while_open = _committed_commands()
        transaction.set_rollback(True)

    assert seen_while_open == 0
    assert not CloseCommand.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_chunk_that_times_out_on_a_lock_is_claimed_by_the_caller_once_the_lock_goes(
    monkeypatch, redis_client, caplog
):
    # given: a position of the last chunk's signals held by another transaction for a
    # while longer than a chunk waits for a lock
    monkeypatch.setattr(closes, "CLAIM_CHUNK_MIN_REQUESTS", 2)
    monkeypatch.setattr("positions.claim_apart.CLAIM_LOCK_TIMEOUT_MS", 200)
    signals = _signals(6)
    held = OpenPosition.objects.filter(signal=signals[-1]).order_by("pk").first()
    locked = threading.Event()

    def hold() -> None:
        with psycopg2.connect(current_database_url()) as other, other.cursor() as cursor:
            cursor.execute("SELECT 1 FROM positions_openposition WHERE id = %s FOR UPDATE", [held.pk])
            locked.set()
            time.sleep(1.5)  # past the chunk's lock timeout; then the lock goes

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)

    # when
    with transaction.atomic():
        queued = closes_claim(claim=SIGNALS, requests=_requests(signals), by=OWNER, connections=2)
        # then: the first chunk committed on its own; the rest is the caller's, not yet committed
        committed_by_chunks = _committed_commands()
    holder.join(10)

    assert committed_by_chunks == 6
    assert "a chunk failed" in caplog.text
    assert "lock timeout" in caplog.text
    # and every position has its close, exactly one
    assert len(queued) == 12
    assert CloseCommand.objects.count() == 12
    assert CloseCommand.objects.values("position_id").distinct().count() == 12
    assert closes_claim(claim=SIGNALS, requests=_requests(signals), by=OWNER, connections=2) == {}


@pytest.mark.django_db(transaction=True)
def test_a_mass_breach_sweep_claims_apart_and_closes_each_position_once(monkeypatch, redis_client):
    # given: eight signals crossed at once, the chunk minimum low enough to split them
    monkeypatch.setattr(closes, "CLAIM_CHUNK_MIN_REQUESTS", 2)
    _signals(8, per_signal=3)
    put_quote("EURUSD", "1.10000", "1.10010")
    sweep()

    # when
    put_quote("EURUSD", "1.09700", "1.09710")
    with override_settings(SWEEP_CLAIM_CONNECTIONS=4):
        report = sweep()

    # then
    assert report.commands_created == 24
    assert CloseCommand.objects.count() == 24
    assert set(CloseCommand.objects.values_list("reason", flat=True)) == {CloseReason.STOP_LOSS}
    assert CloseCommand.objects.values("position_id").distinct().count() == 24
    assert sweep().commands_created == 0  # nothing claimed twice
    assert Decimal(CloseCommand.objects.first().trigger_quote["bid"]) == Decimal("1.09700")
    assert connection.in_atomic_block is False


@pytest.mark.django_db(transaction=True)
def test_meanwhile_runs_in_the_callers_transaction_while_the_chunks_commit_their_own(
    monkeypatch, redis_client
):
    # given: what the scanner does meanwhile (saves its plans) stands in as one audit row
    monkeypatch.setattr(closes, "CLAIM_CHUNK_MIN_REQUESTS", 2)
    signals = _signals(6)
    calls = []

    def meanwhile() -> None:
        calls.append(connection.in_atomic_block)
        AuditEvent.objects.create(action=AuditAction.SIGNAL_PLAN_EXITED, subject_type="signal", subject_id=1)

    # when: the caller's transaction rolls back
    with transaction.atomic():
        queued = closes_claim(
            claim=SIGNALS, requests=_requests(signals), by=OWNER, connections=3, meanwhile=meanwhile
        )
        transaction.set_rollback(True)

    # then: it ran once, in the caller's transaction (gone with it); the chunks' closes stand
    assert calls == [True]
    assert len(queued) == 12
    assert not AuditEvent.objects.filter(action=AuditAction.SIGNAL_PLAN_EXITED).exists()
    assert CloseCommand.objects.count() == 12


@pytest.mark.django_db(transaction=True)
def test_an_error_meanwhile_goes_up_once_every_chunk_has_ended(monkeypatch, redis_client):
    monkeypatch.setattr(closes, "CLAIM_CHUNK_MIN_REQUESTS", 2)
    signals = _signals(6)
    devices = set(OpenPosition.objects.values_list("device_id", flat=True))

    def meanwhile() -> None:
        raise RuntimeError("the plans could not be saved")

    # when: inside the sweep's transaction, which the error then rolls back
    with pytest.raises(RuntimeError, match="could not be saved"), transaction.atomic():
        closes_claim(claim=SIGNALS, requests=_requests(signals), by=OWNER, connections=3, meanwhile=meanwhile)

    # then: every chunk ended (committed) before the error went up: nothing is left running
    assert _committed_commands() == 12
    assert CloseCommand.objects.values("position_id").distinct().count() == 12
    # and their EAs were woken at once, not after a commit that never came
    scope = core_wake.database_scope()
    for device_id in devices:
        assert redis_client.get(core_wake.generation_key(scope, core_wake.DEVICE, device_id)) == b"1"


@pytest.mark.django_db(transaction=True)
def test_too_small_to_split_meanwhile_runs_first_and_an_error_there_claims_nothing(monkeypatch, redis_client):
    # below the minimum the claim is the caller's, after meanwhile (plan rows are locked
    # before positions): an error there leaves every position open
    monkeypatch.setattr(closes, "CLAIM_CHUNK_MIN_REQUESTS", 100)
    signals = _signals(3)

    def meanwhile() -> None:
        raise RuntimeError("the plans could not be saved")

    with pytest.raises(RuntimeError):
        closes_claim(claim=SIGNALS, requests=_requests(signals), by=OWNER, connections=3, meanwhile=meanwhile)
    assert not CloseCommand.objects.exists()
    assert set(OpenPosition.objects.values_list("status", flat=True)) == {PositionStatus.OPEN}


@pytest.mark.django_db(transaction=True)
def test_a_kept_connection_that_broke_since_the_last_claim_is_replaced(monkeypatch, redis_client, caplog):
    # given: a claim apart, whose threads keep their connections
    monkeypatch.setattr(closes, "CLAIM_CHUNK_MIN_REQUESTS", 2)
    first, second = _signals(4), _signals(4)
    assert len(closes_claim(claim=SIGNALS, requests=_requests(first), by=OWNER, connections=2)) == 8

    # when: the server ends them (a restart, a failover), then the next mass claim
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    queued = closes_claim(claim=SIGNALS, requests=_requests(second), by=OWNER, connections=2)

    # then: the chunks ran on new connections, none failed over to the caller
    assert len(queued) == 8
    assert "a chunk failed" not in caplog.text
    assert CloseCommand.objects.count() == 16


def _other_backends() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


def _settled_backends() -> int:
    """The other backends once their count has held for 0.3 s (at most 5 s)."""
    deadline, last, since = time.monotonic() + 5, _other_backends(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - since < 0.3:
        time.sleep(0.05)
        if (count := _other_backends()) != last:
            last, since = count, time.monotonic()
    return last


@pytest.mark.django_db(transaction=True)
def test_the_threads_keep_their_connections_until_the_pool_is_closed(monkeypatch, redis_client):
    monkeypatch.setattr(closes, "CLAIM_CHUNK_MIN_REQUESTS", 2)
    pool_close()
    before = _settled_backends()  # a previous test's connections may still be leaving

    closes_claim(claim=SIGNALS, requests=_requests(_signals(4)), by=OWNER, connections=2)
    closes_claim(claim=SIGNALS, requests=_requests(_signals(4)), by=OWNER, connections=2)
    kept = _other_backends()
    pool_close()

    assert kept == before + 2  # one per chunk's thread, reused by the second claim
    # a backend leaves pg_stat_activity a moment after its client has closed the connection
    deadline = time.monotonic() + 5
    while _other_backends() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _other_backends() == before
    assert CloseCommand.objects.count() == 16
