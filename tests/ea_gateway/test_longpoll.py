"""Long-polling (``?wait=N``) through the real signed API: woken by the commit that makes
something deliverable, never by another device's, empty at the deadline; and the
"nothing pending" markers that keep idle EAs off the close-command table."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from core import wake as core_wake
from ea_gateway import wake
from positions.choices import CloseCommandStatus, CloseReason
from positions.close_delivery import close_commands_deliver, close_commands_next_due
from positions.closes import positions_close_manual
from positions.models import CloseCommand, OpenPosition
from positions.quotes import Quote, quote_store
from positions.scanner import sweep
from positions.timeouts import close_commands_timeout
from signals_app.choices import DecidedBy
from signals_app.events import Actor
from signals_app.services import approval_decide
from tests.ea_helpers import EA, ea_for, make_device
from tests.factories import ClientFactory, make_signal, open_book

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

CLOSES = "/api/v1/client/close-commands"
POLL = "/api/v1/client/poll"
OWNER = Actor.system("tests")
HANDSHAKE = {"HELLO", "SELECT", "CLIENT", "AUTH"}


class Waiting:
    """A signed long-poll in its own thread (its own database connection), timed."""

    def __init__(self, ea: EA, path: str, wait: int) -> None:
        self.response = None
        self.started = time.monotonic()
        self.finished: float | None = None
        self._thread = threading.Thread(target=self._run, args=(ea, path, wait))
        self._thread.start()

    def _run(self, ea: EA, path: str, wait: int) -> None:
        try:
            self.response = ea.request("GET", path, query={"wait": wait})
            self.finished = time.monotonic()
        finally:
            connection.close()

    def result(self, timeout: float = 40) -> tuple[dict, float]:
        self._thread.join(timeout)
        assert self.response is not None, "the long-poll did not answer"
        assert self.response.status_code == 200, self.response.content
        return self.response.json(), self.finished - self.started


def _ea_for_book_device(position: OpenPosition) -> EA:
    from ea_gateway.services import IssuedCredentials

    return ea_for(IssuedCredentials(device=position.device, secret="s"))  # open_book's secret


def _settle() -> None:
    # Long enough for a waiting request to have fetched once and gone to sleep.
    time.sleep(0.5)


@pytest.fixture
def book(redis_client):
    """Two devices with an open gold position each; the market between the levels."""
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    open_book(signal, 2)
    quote_store(
        Quote("XAUUSD", Decimal("2650.00"), Decimal("2650.30"), time.time() - 1), received_at=time.time()
    )
    first, second = OpenPosition.objects.order_by("pk")
    return signal, first, second


def test_a_manual_close_wakes_its_devices_waiting_request(book):
    _, position, _ = book
    waiting = Waiting(_ea_for_book_device(position), CLOSES, wait=20)
    _settle()

    closed_at = time.monotonic()
    positions_close_manual(position_ids=[position.pk], reason="desk", note="", by=OWNER)
    body, _ = waiting.result()

    answered_after_close = waiting.finished - closed_at
    assert waiting.finished > closed_at  # it was waiting, not answering at once
    assert answered_after_close < 1.0
    [command] = body["commands"]
    assert command["position_id"] == position.pk
    assert CloseCommand.objects.get(pk=command["command_id"]).status == CloseCommandStatus.DELIVERED


def test_a_breach_found_by_a_sweep_wakes_the_waiting_request(book):
    _, position, other = book
    waiting = Waiting(_ea_for_book_device(position), CLOSES, wait=20)
    _settle()

    swept_at = time.monotonic()
    quote_store(Quote("XAUUSD", Decimal("2644.00"), Decimal("2644.30"), time.time()), received_at=time.time())
    assert sweep().commands_created == 2
    body, _ = waiting.result()

    assert waiting.finished - swept_at < 1.0
    assert [command["position_id"] for command in body["commands"]] == [position.pk]
    # the other device's command stays queued for it
    assert CloseCommand.objects.get(position=other).status == CloseCommandStatus.PENDING


def test_nothing_to_deliver_answers_empty_when_the_wait_is_over(book):
    _, position, _ = book

    body, took = Waiting(_ea_for_book_device(position), CLOSES, wait=2).result()

    assert body == {"commands": []}
    assert 2 * (1 - wake.DEADLINE_SPREAD) <= took < 3.5  # an empty answer may come a little early


def test_another_devices_command_does_not_wake_or_reach_the_waiting_request(book):
    _, position, other = book
    waiting = Waiting(_ea_for_book_device(position), CLOSES, wait=3)
    _settle()

    positions_close_manual(position_ids=[other.pk], reason="desk", note="", by=OWNER)
    body, took = waiting.result()

    assert body == {"commands": []}
    assert took >= 3 * (1 - wake.DEADLINE_SPREAD)
    assert CloseCommand.objects.get(position=other).status == CloseCommandStatus.PENDING


def test_an_approval_wakes_the_clients_waiting_poll(redis_client):
    client = ClientFactory(auto_approve=False, default_volume=Decimal("0.10"))
    ea = ea_for(make_device(client=client))
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    approval = signal.approvals.get(client=client)
    waiting = Waiting(ea, POLL, wait=20)
    _settle()

    approved_at = time.monotonic()
    approval_decide(approval=approval, approve=True, decided_by=DecidedBy.OWNER, by=OWNER)
    body, _ = waiting.result()

    assert waiting.finished - approved_at < 1.0
    assert [item["approval_id"] for item in body["approvals"]] == [approval.pk]


def test_a_publication_wakes_an_auto_approving_clients_waiting_poll(redis_client):
    client = ClientFactory(auto_approve=True, default_volume=Decimal("0.10"))
    ea = ea_for(make_device(client=client))
    waiting = Waiting(ea, POLL, wait=20)
    _settle()

    published_at = time.monotonic()
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    body, _ = waiting.result()

    assert waiting.finished - published_at < 1.0
    assert [item["signal_id"] for item in body["approvals"]] == [signal.pk]


def test_a_requeued_lease_reaches_the_waiting_request_once_its_backoff_is_over(book):
    _, position, _ = book
    ea = _ea_for_book_device(position)
    positions_close_manual(position_ids=[position.pk], reason="desk", note="", by=OWNER)
    [first] = ea.close_commands().json()["commands"]  # delivered; its EA then goes silent
    CloseCommand.objects.filter(pk=first["command_id"]).update(lease_expires_at=timezone.now())
    waiting = Waiting(ea, CLOSES, wait=20)
    _settle()

    requeued_at = time.monotonic()
    assert close_commands_timeout().redelivered == 1  # back to pending, due in 1 s (backoff)
    body, _ = waiting.result()

    assert [command["command_id"] for command in body["commands"]] == [first["command_id"]]
    assert 0.9 <= waiting.finished - requeued_at < 2.5
    assert CloseCommand.objects.get(pk=first["command_id"]).attempts == 2


def test_an_idle_request_does_not_touch_the_close_command_table(book):
    _, position, _ = book
    ea = _ea_for_book_device(position)
    assert ea.close_commands().json() == {"commands": []}  # looks, finds nothing, marks it

    with CaptureQueriesContext(connection) as queries:
        response = ea.close_commands()

    assert response.json() == {"commands": []}
    assert not [query for query in queries.captured_queries if "positions_closecommand" in query["sql"]]


@pytest.mark.parametrize("path", [CLOSES, POLL])
def test_an_idle_request_without_a_wait_is_one_redis_round_trip(book, redis_client, path):
    # given: the device read and cached, its "nothing pending" marker written
    _, position, _ = book
    ea = _ea_for_book_device(position)
    assert ea.request("GET", path).status_code == 200
    db = redis_client.connection_pool.connection_kwargs.get("db", 0)

    # when
    with redis_client.monitor() as monitor:
        response = ea.request("GET", path)
        redis_client.echo("veilstop-test-done")
        sent = []
        for command in monitor.listen():
            if "veilstop-test-done" in command["command"]:
                break
            name = command["command"].split()[0].upper()
            # (a connection opened meanwhile says hello first: not a round trip of the request's)
            if command["db"] == db and command["client_type"] != "lua" and name not in HANDSHAKE:
                sent.append(name)

    # then: authentication and "anything pending?" in the one script, nothing else
    assert response.status_code == 200
    assert response.json() in ({"commands": []}, {"approvals": []})
    assert sent == ["EVALSHA"]


def test_without_the_marker_the_database_is_asked_again(book, redis_client):
    _, position, _ = book
    ea = _ea_for_book_device(position)
    assert ea.close_commands().json() == {"commands": []}
    # A command whose wake was lost (its claimer died between the commit and the publish):
    CloseCommand.objects.create(
        position=position,
        device=position.device,
        volume=position.remaining_volume,
        reason=CloseReason.MANUAL,
        next_attempt_at=timezone.now(),
        requested_by="lost wake",
    )
    assert ea.close_commands().json() == {"commands": []}  # hidden while the marker holds

    redis_client.flushdb()  # a Redis restart (or the marker's TTL running out)

    # A restart loses the nonces too: the EA is accepted again once its clock has passed
    # the replay fence (HMAC_REPLAY_FENCE_SECONDS past its last request).
    with time_machine.travel(time.time() + settings.HMAC_REPLAY_FENCE_SECONDS + 1):
        assert len(ea.close_commands().json()["commands"]) == 1


def test_a_claim_committed_between_a_deliverys_read_and_its_marker_is_delivered_next_time(book):
    _, position, _ = book
    ea = _ea_for_book_device(position)
    device_id = position.device_id

    def deliver_then_claim_commits() -> tuple[list, float | None]:
        # given: the delivery reads the table and finds nothing...
        now = timezone.now()
        commands = close_commands_deliver(device_id=device_id, limit=20, now=now)
        next_due = close_commands_next_due(device_id=device_id, after=now)
        # ...and before it writes its marker, a claim commits on another connection
        claimer = threading.Thread(target=_close_in_own_connection, args=(position.pk,))
        claimer.start()
        claimer.join()
        return commands, next_due

    # when
    found, _ = wake.fetch_unless_empty(kind=core_wake.DEVICE, key=device_id, fetch=deliver_then_claim_commits)

    # then: the marker was written (with the generation read before the delivery)...
    assert found == []
    scope = core_wake.database_scope()
    marker = redis_get(core_wake.marker_key(scope, core_wake.DEVICE, device_id))
    generation = redis_get(core_wake.generation_key(scope, core_wake.DEVICE, device_id))
    assert marker is not None
    assert marker != generation
    # ...and cannot hide the command from the next request
    [command] = ea.close_commands().json()["commands"]
    assert command["position_id"] == position.pk


def _close_in_own_connection(position_id: int) -> None:
    try:
        assert positions_close_manual(position_ids=[position_id], reason="desk", note="", by=OWNER).queued
    finally:
        connection.close()


def redis_get(key: str) -> bytes | None:
    from core.redis import get_redis

    return get_redis().get(key)


@pytest.mark.parametrize(
    "query",
    [
        "wait=31",
        "wait=-1",
        "wait=abc",
        "wait=",
        "wait",
        "wait=2.5",
        "wait=1e1",
        "wait=%2B5",
        "wait=%205",
        "wait=%EF%BC%95",  # a full-width digit five
        "wait=99999999999",
        "wait=1&wait=2",
    ],
)
def test_a_wait_outside_0_to_30_whole_seconds_is_a_400(book, query):
    _, position, _ = book
    positions_close_manual(position_ids=[position.pk], reason="desk", note="", by=OWNER)
    ea = _ea_for_book_device(position)

    for path in (CLOSES, POLL):
        response = _get_with_raw_query(ea, path, query)
        assert response.status_code == 400, (path, query)
        error = response.json()["error"]
        assert error["code"] == "invalid"
        assert "wait" in error["fields"]

    # nothing was leased by the refused requests
    assert CloseCommand.objects.get(position=position).status == CloseCommandStatus.PENDING


@pytest.mark.parametrize("wait", ["0", "30", "07"])
def test_a_wait_from_0_to_30_is_accepted(book, wait):
    _, position, _ = book
    positions_close_manual(position_ids=[position.pk], reason="desk", note="", by=OWNER)
    ea = _ea_for_book_device(position)

    response = _get_with_raw_query(ea, CLOSES, f"wait={wait}")

    assert response.status_code == 200
    assert len(response.json()["commands"]) == 1  # something was there: the answer is immediate


def _get_with_raw_query(ea: EA, path: str, query_string: str):
    from tests.ea_helpers import signed_headers

    headers = signed_headers(
        key=ea.device.key_id, secret=ea.credentials.secret, method="GET", path=path, query_string=query_string
    )
    return ea.http.generic("GET", f"{path}?{query_string}", b"", headers=headers)


def test_next_due_says_when_a_command_in_backoff_may_go(book):
    _, position, _ = book
    positions_close_manual(position_ids=[position.pk], reason="desk", note="", by=OWNER)
    now = timezone.now()
    CloseCommand.objects.filter(position=position).update(next_attempt_at=now + timedelta(seconds=4))

    assert close_commands_deliver(device_id=position.device_id, limit=20, now=now) == []
    assert close_commands_next_due(device_id=position.device_id, after=now) == pytest.approx(4.0)
    assert close_commands_next_due(device_id=position.device_id, after=now + timedelta(seconds=5)) is None
