"""The decimal patterns of the OpenAPI schema (core.schema) say exactly what each field takes.

For every decimal field of a request serializer, a decimal in plain notation matches the schema's
pattern if and only if the field validates it: the schema neither refuses a value the server
takes nor lets through one it refuses. Extreme and boundary values included (hypothesis).
"""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from core.schema import decimal_pattern, field_decimal_pattern
from ea_gateway.api import serializers as io
from positions.api import BreachTestInput
from signals_app.api import SignalCreateInput
from signals_app.hidden_levels_schema import DISTANCE_OR_ZERO, FRACTION, PRICE
from signals_app.level_values import price, price_or_zero

FIELDS = {
    "ack.entry_price": (io.AckInput, "entry_price"),
    "ack.volume": (io.AckInput, "volume"),
    "close_ack.closed_volume": (io.CloseAckInput, "closed_volume"),
    "heartbeat.balance": (io.HeartbeatInput, "balance"),
    "quote.bid": (io.QuoteInput, "bid"),
    "signal.entry_price": (SignalCreateInput, "entry_price"),
    "breach.bid": (BreachTestInput, "bid"),
}
BOUNDARIES = ["0", "-0", "0.01", "0.0000000001", "9999999999", "9999999999.0000000001", "100000", "100000.01"]


def _decimals():
    plain = st.integers(0, 12).flatmap(
        lambda places: st.decimals(
            min_value=Decimal("-2e15"), max_value=Decimal("2e15"), places=places, allow_nan=False
        )
    )
    return st.one_of(plain, st.sampled_from([Decimal(text) for text in BOUNDARIES]))


def _takes(field: serializers.DecimalField, text: str) -> bool:
    try:
        field.run_validation(text)
    except serializers.ValidationError:
        return False
    return True


@pytest.mark.parametrize("name", list(FIELDS))
def test_a_decimal_matches_the_pattern_exactly_when_the_field_takes_it(name):
    serializer, field_name = FIELDS[name]
    field = serializer().fields[field_name]
    pattern = re.compile(field_decimal_pattern(field))

    @settings(max_examples=400, deadline=None, database=None)
    @given(value=_decimals())
    def check(value):
        text = format(value, "f")
        assert bool(pattern.fullmatch(text)) == _takes(field, text), text

    check()


@settings(max_examples=400, deadline=None, database=None)
@given(value=_decimals())
def test_hidden_level_patterns_only_let_through_what_the_parser_takes(value):
    text = format(value, "f")
    errors: dict[str, str] = {}
    if re.fullmatch(PRICE["pattern"], text):
        assert price(text, "sl", errors) is not None, errors
    if re.fullmatch(FRACTION["pattern"], text):
        assert Decimal(0) < price(text, "f", errors) < 1, errors  # type: ignore[operator]
    if re.fullmatch(DISTANCE_OR_ZERO["pattern"], text):
        assert price_or_zero(text, "d", errors) is not None, errors


@pytest.mark.parametrize(
    "bounds",
    [
        {"places": 2, "min_value": Decimal("0.5"), "max_value": Decimal(10)},  # a minimum not one step
        {"places": 2, "min_value": Decimal(0), "max_value": Decimal("10.5")},  # a fractional maximum
        {"places": None, "min_value": Decimal(0), "max_value": None},  # no upper bound
        {"places": 2, "min_value": Decimal(-1), "max_value": Decimal(5)},  # asymmetric
    ],
)
def test_bounds_a_pattern_cannot_state_exactly_are_refused_not_loosened(bounds):
    with pytest.raises(ValueError, match="no pattern"):
        decimal_pattern(**bounds)
