"""The executed-id store: intent, result and confirmation, on disk."""

from __future__ import annotations

import pytest

from ea_client.store import ExecutedStore


def test_what_is_recorded_is_there_after_a_reopen(tmp_path) -> None:
    # given: one close begun only, one recorded, one recorded and confirmed
    path = tmp_path / "ea.sqlite3"
    store = ExecutedStore(path)
    store.begin("close", 1, {"ticket": "10", "fills_before": 0})
    store.begin("close", 2, {"ticket": "11", "fills_before": 1})
    store.record("close", 2, {"command_id": 2, "status": "executed"})
    store.begin("close", 3, {"ticket": "12", "fills_before": 0})
    store.record("close", 3, {"command_id": 3, "status": "failed", "error": "market closed"})
    store.confirm("close", 3)
    store.close()

    # when
    reopened = ExecutedStore(path)

    # then
    begun = reopened.get("close", 1)
    assert begun is not None
    assert (begun.intent, begun.result) == ({"ticket": "10", "fills_before": 0}, None)
    recorded = reopened.get("close", 2)
    assert recorded is not None
    assert (recorded.result, recorded.confirmed) == ({"command_id": 2, "status": "executed"}, False)
    assert reopened.unconfirmed("close") == [2]
    assert reopened.unconfirmed("approval") == []
    assert reopened.get("approval", 2) is None


def test_an_id_is_begun_once_and_its_result_recorded_once(tmp_path) -> None:
    store = ExecutedStore(tmp_path / "ea.sqlite3")
    store.begin("close", 1, {})
    store.record("close", 1, {"status": "executed"})

    with pytest.raises(Exception, match="UNIQUE"):
        store.begin("close", 1, {})
    with pytest.raises(RuntimeError, match="only once"):
        store.record("close", 1, {"status": "failed"})
    with pytest.raises(RuntimeError, match="only once"):
        store.record("close", 99, {"status": "executed"})  # no intent: nothing to attach it to
    outcome = store.get("close", 1)
    assert outcome is not None
    assert outcome.result == {"status": "executed"}
