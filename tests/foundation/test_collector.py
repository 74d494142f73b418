"""core.collector: no cyclic garbage collection inside a sweep, the collector as it was after it."""

from __future__ import annotations

import gc

import pytest

from core.collector import collector_paused


@pytest.fixture
def collector_enabled():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_no_collection_runs_inside_and_the_collector_is_back_after(collector_enabled):
    collections: list[int] = []

    def seen(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(seen)
    try:
        with collector_paused():
            assert not gc.isenabled()
            # far past the youngest generation's threshold: a collection would run here
            cycles = []
            for _ in range(gc.get_threshold()[0] * 20):
                node: list = []
                node.append(node)
                cycles.append(node)
            del cycles
            assert collections == []
        assert gc.isenabled()
    finally:
        gc.callbacks.remove(seen)


def test_an_error_inside_leaves_the_collector_as_it_was(collector_enabled):
    with pytest.raises(RuntimeError), collector_paused():
        raise RuntimeError("a sweep failed")
    assert gc.isenabled()

    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()  # it was off before: it stays off


def test_the_scanner_sweeps_with_the_collector_paused(collector_enabled, monkeypatch, settings):
    from positions import scanner

    seen = []
    settings.POSITION_MONITOR_ENABLED = False  # the report comes back before any query
    monkeypatch.setattr(scanner, "SweepReport", lambda **kwargs: seen.append(gc.isenabled()) or object())
    scanner.sweep()
    assert seen == [False]
    assert gc.isenabled()
