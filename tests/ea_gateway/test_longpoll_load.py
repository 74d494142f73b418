"""What keeps a crossing quote fast with a thousand EAs waiting (issue 11): the owner's
requests and woken long-polls take request slots ahead of the other EA requests, a
wait that runs out with no wake answers without looking again, and the request an EA
sends right after receiving its commands skips the database."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from core import wake as core_wake
from core.redis import get_redis
from core.request_slots import Priority, RequestSlots
from ea_gateway import wake
from positions.choices import CloseCommandStatus
from positions.closes import positions_close_manual
from positions.models import CloseCommand, OpenPosition
from positions.quotes import Quote, quote_store
from signals_app.events import Actor
from tests.ea_helpers import ea_for
from tests.factories import make_signal, open_book

OWNER = Actor.system("tests")


def _queue_behind(slots: RequestSlots, priority: Priority, taken: list[Priority]) -> threading.Thread:
    def run() -> None:
        slot = slots.take(priority)
        taken.append(priority)
        slots.give_back(slot, to_wait=False)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _queued(slots: RequestSlots) -> int:
    return sum(len(queue) for queue in slots._queues)


@pytest.mark.django_db(transaction=True)
def test_a_slot_coming_back_goes_to_the_owner_first_then_a_woken_long_poll():
    # given: the only slot held, EA requests queued first, then a woken long-poll, then the feed
    slots = RequestSlots(1)
    held = slots.take()
    taken: list[Priority] = []
    threads = []
    for priority in (Priority.EA, Priority.EA, Priority.WOKEN, Priority.OWNER):
        threads.append(_queue_behind(slots, priority, taken))
        deadline = time.monotonic() + 5
        while _queued(slots) < len(threads) and time.monotonic() < deadline:
            time.sleep(0.005)

    # when
    slots.give_back(held, to_wait=False)
    for thread in threads:
        thread.join(5)

    # then: most urgent first, first come first within a priority; every slot back
    assert taken == [Priority.OWNER, Priority.WOKEN, Priority.EA, Priority.EA]
    assert len(slots._idle) == 1
    assert _queued(slots) == 0


@pytest.mark.django_db(transaction=True)
def test_a_free_slot_is_taken_at_once_whatever_the_priority():
    slots = RequestSlots(2)

    first, second = slots.take(Priority.EA), slots.take(Priority.OWNER)

    assert _queued(slots) == 0
    assert slots._idle == []
    slots.give_back(first, to_wait=False)
    slots.give_back(second, to_wait=False)
    assert len(slots._idle) == 2


@pytest.fixture
def waiting_device(redis_client):
    signal = make_signal(symbol="XAUUSD", side="buy", entry="2650.50", sl="2645.00", tp="2670.00")
    open_book(signal, 1)
    quote_store(
        Quote("XAUUSD", Decimal("2650.00"), Decimal("2650.30"), time.time() - 1), received_at=time.time()
    )
    return OpenPosition.objects.select_related("device").get()


@pytest.mark.django_db(transaction=True)
def test_a_wait_that_runs_out_without_a_wake_does_not_look_again(waiting_device):
    # given: a long-poll that looked once, found nothing, and whose marker then expired
    device_id = waiting_device.device_id
    looks: list[float] = []

    def fetch() -> tuple[list, None]:
        looks.append(time.monotonic())
        if len(looks) == 1:
            threading.Timer(0.3, _drop_marker, args=(device_id,)).start()
        return [], None

    # when
    answer = wake.long_poll(kind=core_wake.DEVICE, key=device_id, wait=1, fetch=fetch)

    # then: one look, at the start; the EA's next request is the one that looks again
    assert answer == []
    assert len(looks) == 1


def _drop_marker(device_id: int) -> None:
    get_redis().delete(core_wake.marker_key(core_wake.database_scope(), core_wake.DEVICE, device_id))


@pytest.mark.django_db(transaction=True)
def test_the_request_after_a_delivery_skips_the_database_until_the_next_claim(waiting_device):
    from ea_gateway.services import IssuedCredentials

    position = waiting_device
    ea = ea_for(IssuedCredentials(device=position.device, secret="s"))  # open_book's secret
    assert ea.close_commands().json() == {"commands": []}
    positions_close_manual(position_ids=[position.pk], reason="desk", note="", by=OWNER)
    [delivered] = ea.close_commands().json()["commands"]

    # when: the EA asks again at once, as it does after every answer
    with CaptureQueriesContext(connection) as queries:
        again = ea.close_commands().json()

    # then: nothing more, and the close-command table untouched
    assert again == {"commands": []}
    assert not [query for query in queries.captured_queries if "positions_closecommand" in query["sql"]]
    assert CloseCommand.objects.get(pk=delivered["command_id"]).status == CloseCommandStatus.DELIVERED

    # and a command made deliverable after it (a requeued lease, here) is not hidden
    CloseCommand.objects.filter(pk=delivered["command_id"]).update(status=CloseCommandStatus.PENDING)
    core_wake.publish(core_wake.DEVICE, [position.device_id])
    [redelivered] = ea.close_commands().json()["commands"]
    assert redelivered["command_id"] == delivered["command_id"]
