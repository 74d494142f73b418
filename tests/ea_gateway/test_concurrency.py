"""Exactly-once under concurrency, against a live server and the real database."""

from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest
import requests

from positions.models import OpenPosition
from tests.ea_helpers import encode, make_device, signed_headers
from tests.factories import ClientFactory, make_signal

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _fire(url: str, body: bytes, headers_for, copies: int) -> list[requests.Response]:
    barrier = threading.Barrier(copies)
    responses: list[requests.Response] = []
    lock = threading.Lock()

    def send(headers: dict) -> None:
        barrier.wait()
        for attempt in range(10):
            try:
                response = requests.post(
                    url, data=body, headers={**headers, "Content-Type": "application/json"}, timeout=30
                )
                break
            except requests.ConnectionError:
                # The test server's accept queue is short: a connection reset before the
                # request was read is retried, as an EA would (the same signed request).
                time.sleep(0.05 * (attempt + 1))
        else:
            raise AssertionError("the live server refused ten connections in a row")
        with lock:
            responses.append(response)

    threads = [threading.Thread(target=send, args=(headers_for(index),)) for index in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return responses


def test_fifty_copies_of_one_signed_request_succeed_once(live_server, redis_client):
    credentials = make_device()
    body = encode({"balance": "1.00", "equity": "1.00", "open_tickets": []})
    path = "/api/v1/client/heartbeat"
    headers = signed_headers(
        key=credentials.device.key_id, secret=credentials.secret, method="POST", path=path, body=body
    )

    responses = _fire(live_server.url + path, body, lambda index: headers, copies=50)

    statuses = sorted(response.status_code for response in responses)
    assert statuses == [200] + [401] * 49


def test_twenty_concurrent_identical_acks_make_one_position(live_server, redis_client):
    client = ClientFactory(auto_approve=True, default_volume=Decimal("0.10"))
    credentials = make_device(client=client)
    approval = make_signal().approvals.get(client=client)
    path = "/api/v1/client/ack"
    body = encode(
        {
            "approval_id": approval.pk,
            "status": "placed",
            "broker_ticket": "777",
            "entry_price": "2650.5",
            "volume": "0.10",
        }
    )

    def headers_for(index: int) -> dict:  # each copy a genuine retry: own nonce, same body
        return signed_headers(
            key=credentials.device.key_id, secret=credentials.secret, method="POST", path=path, body=body
        )

    responses = _fire(live_server.url + path, body, headers_for, copies=20)

    assert [response.status_code for response in responses] == [200] * 20
    assert len({response.content for response in responses}) == 1
    assert OpenPosition.objects.count() == 1
