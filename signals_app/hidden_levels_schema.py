"""``owner_only`` and ``payload`` as JSON Schema, from the constants their validation uses.

Rules it cannot state are in its description: the side rules (signals_app.level_sides), the sum
of partial fractions, a breakeven ``trigger_fraction`` needing ``tp``, and an ATR trailing stop
needing no more bars than ``CANDLE_RETENTION_DAYS`` keeps. Prices and distances are decimal
strings of at most 10 decimal places below 10^10, as every stored price (numeric(20,10)); the
parser also reads JSON numbers and longer whole parts, which no quote can reach.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from core.schema import NO_NUL, decimal_body
from signals_app.hidden_levels import (
    ATR_TIMEFRAMES,
    MAX_ATR_PERIOD,
    MAX_HOLDING_MINUTES,
    MAX_PARTIAL_TAKE_PROFITS,
)
from signals_app.level_values import MAX_TEXT_LENGTH

_SMALLEST = Decimal("0.0000000001")
_POSITIVE = decimal_body(places=10, min_value=_SMALLEST, max_value=None, max_digits=20)
_BELOW_ONE = decimal_body(places=10, min_value=_SMALLEST, max_value=None, max_digits=10)

PRICE = {"type": "string", "format": "decimal", "pattern": f"^{_POSITIVE}$"}
FRACTION = {"type": "string", "format": "decimal", "pattern": f"^{_BELOW_ONE}$", "description": "0 < f < 1"}
# Absent or "0" means none; anything else is a positive distance.
DISTANCE_OR_ZERO = {"type": "string", "format": "decimal", "pattern": f"^(?:0|{_POSITIVE})$"}
TEXT = {"type": "string", "maxLength": MAX_TEXT_LENGTH, "pattern": NO_NUL}


def _object(required: list[str], properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


HIDDEN_LEVELS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "description": (
        "Hidden levels, at least one of sl and tp. A buy needs sl < entry_price < tp, a sell "
        "tp < entry_price < sl; partial take-profits lie between entry_price and tp and their "
        "fractions add up to less than 1; a breakeven trigger_fraction needs tp; an ATR trailing "
        "stop needs (atr_period + 1) bars of atr_timeframe within CANDLE_RETENTION_DAYS."
    ),
    "properties": {
        "sl": PRICE,
        "tp": PRICE,
        "partial_take_profits": {
            "type": "array",
            "maxItems": MAX_PARTIAL_TAKE_PROFITS,
            "items": _object(["price", "fraction"], {"price": PRICE, "fraction": FRACTION}),
        },
        "trailing": {
            "oneOf": [
                _object(["distance_pips"], {"distance_pips": PRICE, "activation_pips": DISTANCE_OR_ZERO}),
                _object(
                    ["distance_atr"],
                    {
                        "distance_atr": PRICE,
                        "atr_period": {"type": "integer", "minimum": 1, "maximum": MAX_ATR_PERIOD},
                        "atr_timeframe": {"type": "string", "enum": list(ATR_TIMEFRAMES)},
                        "activation_pips": DISTANCE_OR_ZERO,
                    },
                ),
            ]
        },
        "breakeven": {
            "oneOf": [
                _object(["trigger_pips"], {"trigger_pips": PRICE, "offset_pips": DISTANCE_OR_ZERO}),
                _object(
                    ["trigger_fraction"], {"trigger_fraction": FRACTION, "offset_pips": DISTANCE_OR_ZERO}
                ),
            ]
        },
        "max_holding_minutes": {"type": "integer", "minimum": 1, "maximum": MAX_HOLDING_MINUTES},
        "strategy": TEXT,
        "reason": TEXT,
    },
    "anyOf": [{"required": ["sl"]}, {"required": ["tp"]}],
}


PAYLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": (
        "Shown to clients. No key may name an exit level (sl, tp, stop, take_profit, target, exit, "
        "trailing, breakeven, limit, ...: compared lower-cased without separators), no key may hold "
        "U+0000, and no value may equal a hidden level; at most 4096 bytes of JSON. Nested objects "
        "and lists are taken too (up to 5 levels), with the same rules."
    ),
    "maxProperties": 16,
    "additionalProperties": {
        "oneOf": [
            {"type": "string", "maxLength": 200, "pattern": NO_NUL},
            {"type": "number"},
            {"type": "boolean"},
        ]
    },
}
