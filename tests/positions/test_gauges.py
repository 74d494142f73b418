"""The open-positions gauge (``positions.refresh_gauges``): every instrument reported,
and an instrument whose last position closed goes to 0 (a label set cannot be removed
under multi-process metrics, so it must be overwritten, never left at its last count)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from positions.choices import PositionStatus
from positions.models import OpenPosition
from positions.tasks import refresh_gauges
from tests.factories import make_signal, open_book

pytestmark = pytest.mark.django_db


def _open(symbol: str) -> float | None:
    return REGISTRY.get_sample_value("open_positions_gauge", {"instrument": symbol})


def test_the_gauge_follows_positions_down_to_zero(redis_client):
    positions = open_book(make_signal(sl="2645.00", tp="2670.00"), 3)
    refresh_gauges()
    assert _open("XAUUSD") == 3
    assert _open("EURUSD") == 0  # an instrument with nothing open is reported, as 0

    OpenPosition.objects.filter(pk__in=[p.pk for p in positions]).update(status=PositionStatus.CLOSED_MANUAL)
    refresh_gauges()

    assert _open("XAUUSD") == 0
