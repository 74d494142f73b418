"""Found by the soak (bench/soak.py, "Redis restart"): a quote arriving while the Celery
broker is unreachable was answered 500 (fixed: the sweep's queueing is best effort,
positions.quotes.sweep_instrument_soon; the periodic sweep judges the quote).

The quote is stored (the quote path is written first), then the on-commit hook that
queues the instrument's sweep fails in ``send_task`` with
``kombu.exceptions.OperationalError``, which the API's exception handler does not
count among the "unavailable" errors (core/errors.py: Django's OperationalError,
InterfaceError, RedisError), so it escapes as a 500.
"""

from __future__ import annotations

import time
from decimal import Decimal

import pytest
from django.test import Client as DjangoClient

from config.celery import app
from ea_gateway.choices import DeviceRole
from positions.quotes import quote_latest
from tests.ea_helpers import EA, make_device
from tests.factories import make_signal, open_book

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_quote_arriving_while_the_celery_broker_is_unreachable_is_not_answered_500(
    redis_client, monkeypatch
) -> None:
    # given: an open EURUSD position (so a quote queues a sweep) and a Celery broker nobody answers on
    open_book(make_signal(symbol="EURUSD", side="buy", entry="1.10000", sl="1.09800", tp="1.10200"), 1)
    monkeypatch.setattr(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setattr(app, "_pool", None)
    monkeypatch.setattr(app.amqp, "_producer_pool", None)
    feed = EA(make_device(role=DeviceRole.FEED, name="feed"), DjangoClient(raise_request_exception=False))

    # when
    response = feed.quotes(
        {"quotes": [{"instrument": "EURUSD", "bid": "1.10010", "ask": "1.10020", "ts": time.time()}]}
    )

    # then: the quote is kept (the periodic sweep judges it) and the answer is a success or a 503
    assert quote_latest("EURUSD").bid == Decimal("1.10010")
    assert response.status_code in (200, 503), response.content
