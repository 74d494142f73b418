"""What an EA's everyday requests cost the database, and the shortcuts that keep them cheap
answering exactly as before (issue 11)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ea_gateway.selectors import device_copy, device_entry_load
from tests.ea_gateway.test_endpoints import _open_position, trader  # noqa: F401 - fixture

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _fence_far_ahead(settings):
    # A device's replay fence is raised once per half to all of this: never within a test here.
    settings.HMAC_REPLAY_FENCE_SECONDS = 600


HEARTBEAT = {"balance": "10000.00", "equity": "10000.00", "open_tickets": ["50001"]}


def test_a_heartbeat_writes_the_snapshot_and_reconciles_in_one_statement_each(trader):  # noqa: F811
    ea, *_ = trader
    _open_position(trader)
    ea.heartbeat(HEARTBEAT)  # the first request of the device: replay fence, last-seen mark

    with CaptureQueriesContext(connection) as queries:
        response = ea.heartbeat(HEARTBEAT)

    assert response.status_code == 200
    statements = [q["sql"] for q in queries.captured_queries]
    on_positions = [sql for sql in statements if "ticket_missing_since" in sql]
    assert len(on_positions) == 1, statements  # cleared, marked and the vanished found at once
    assert len([sql for sql in statements if "last_account" in sql]) == 1, statements


@pytest.mark.parametrize(
    ("path", "key"), [("/api/v1/client/poll", "approvals"), ("/api/v1/client/close-commands", "commands")]
)
def test_an_idle_answer_is_the_json_drf_would_render(trader, path, key):  # noqa: F811
    ea, signal, approval = trader
    ea.request("GET", path)  # the first look: nothing now, the marker says so from here on
    if key == "approvals":
        _open_position(trader)  # the approval is filled: nothing left to hand out

    first = ea.request("GET", path)
    with CaptureQueriesContext(connection) as queries:
        response = ea.request("GET", path)

    assert first.status_code == response.status_code == 200
    assert response.content == b'{"%s":[]}' % key.encode()
    assert response["Content-Type"] == "application/json"
    assert response.json() == {key: []}
    assert queries.captured_queries == []


@pytest.mark.parametrize("accept", ["application/json", "*/*", "application/json; q=0.9", "application/*"])
def test_json_is_served_to_every_accept_that_takes_it(trader, accept):  # noqa: F811
    ea, *_ = trader

    response = ea.request("GET", "/api/v1/client/poll", Accept=accept)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize("accept", ["text/html", "application/xml"])
def test_an_accept_that_json_cannot_meet_is_still_406(trader, accept):  # noqa: F811
    ea, *_ = trader

    response = ea.request("GET", "/api/v1/client/poll", Accept=accept)

    assert response.status_code == 406


def test_a_requests_copy_of_the_device_is_its_own(trader):  # noqa: F811
    ea, *_ = trader
    cached = device_entry_load(key_id=ea.device.key_id, generation="g").device

    copy = device_copy(cached)
    copy.name = "changed by a view"
    copy._state.fields_cache["client"] = None

    assert (copy.pk, copy.key_id, copy.secret) == (cached.pk, cached.key_id, cached.secret)
    assert cached.name != "changed by a view"
    assert "client" not in cached._state.fields_cache
    assert copy._state is not cached._state
