"""A store failing mid-request (issue 15, finding 3): the feed's batch is applied
once, however often the feed sends it again after a 503 or a lost answer."""

from __future__ import annotations

import time

import pytest
from django.db import close_old_connections, connection, connections
from django.db.models import Sum

from ea_gateway.choices import DeviceRole
from positions.models import Candle
from positions.quote_path import paths_read
from tests.ea_helpers import ea_for, make_device


@pytest.fixture
def feed(redis_client):
    return ea_for(make_device(role=DeviceRole.FEED, name="feed"))


def _kill_own_backend_when_bars_are_written(execute, sql, params, many, context):
    """The request's own PostgreSQL connection, terminated by the server just as the
    feed's minute bars are written: after the batch is in Redis."""
    if "positions_candle" in sql:
        pid = context["connection"].connection.get_backend_pid()
        killer = connections.create_connection("default")
        try:
            with killer.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
        finally:
            killer.close()
    return execute(sql, params, many, context)


def _batch(now: float) -> dict:
    return {
        "quotes": [
            {"instrument": "EURUSD", "bid": "1.10000", "ask": "1.10010", "ts": now - 2},
            {"instrument": "EURUSD", "bid": "1.10020", "ask": "1.10030", "ts": now - 1},
            # a jump beyond the spike limit: flagged once, never again by a retry
            {"instrument": "EURUSD", "bid": "1.30000", "ask": "1.30010", "ts": now},
        ]
    }


@pytest.mark.django_db(transaction=True)
def test_a_feed_batch_cut_by_a_killed_connection_is_applied_once_by_the_retry(feed):
    # given: the batch's request loses its database connection after Redis took the quotes
    batch = _batch(time.time())
    with connection.execute_wrapper(_kill_own_backend_when_bars_are_written):
        first = feed.quotes(batch)
    assert first.status_code == 503, first.content
    assert first["Retry-After"] == "2"
    close_old_connections()  # the end-of-request handler the test client leaves out

    # when: the feed sends the same batch again, twice (the second answer lost, say)
    retry = feed.quotes(batch)
    again = feed.quotes(batch)

    # then: answered as the first attempt would have been, every time
    assert retry.status_code == 200, retry.content
    assert retry.json() == {"accepted": 3, "ignored": 0}
    assert again.json() == {"accepted": 3, "ignored": 0}
    # each quote is in the path once, numbered once, the spike flagged once
    path = paths_read(["EURUSD"])["EURUSD"]
    assert [str(entry.quote.bid) for entry in path] == ["1.10000", "1.10020", "1.30000"]
    assert len({entry.quote.seq for entry in path}) == 3
    assert [entry.spike for entry in path] == [False, False, True]
    # and the minute bars the killed request never wrote are written, once
    assert Candle.objects.filter(instrument__symbol="EURUSD").aggregate(n=Sum("quotes"))["n"] == 3


@pytest.mark.django_db
def test_the_same_quotes_sent_later_as_a_new_batch_are_still_ignored(feed):
    # given: a batch applied
    now = time.time()
    batch = _batch(now)
    assert feed.quotes(batch).json() == {"accepted": 3, "ignored": 0}

    # when: a batch holding one of those quotes and a newer one
    overlapping = {"quotes": [batch["quotes"][2], {**batch["quotes"][2], "ts": now + 0.5}]}
    response = feed.quotes(overlapping)

    # then: it is a batch of its own: the old quote is ignored, the new one stored
    assert response.json() == {"accepted": 1, "ignored": 1}
    assert len(paths_read(["EURUSD"])["EURUSD"]) == 4


@pytest.mark.django_db
def test_another_feed_sending_the_same_quotes_is_not_answered_as_the_first(feed):
    batch = _batch(time.time())
    assert feed.quotes(batch).json() == {"accepted": 3, "ignored": 0}

    other = ea_for(make_device(role=DeviceRole.FEED, name="second feed"))
    response = other.quotes(batch)

    assert response.json() == {"accepted": 0, "ignored": 3}
    assert len(paths_read(["EURUSD"])["EURUSD"]) == 3
