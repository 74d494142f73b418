"""Reading one value of the hidden levels: a price or distance, a text, an object's
keys. Each records what is wrong under the value's name and returns None. Pure Python."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

MAX_TEXT_LENGTH = 500


def price(value: Any, name: str, errors: dict[str, str]) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        errors[name] = "must be a number or a decimal string"
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        errors[name] = f"must be a number or a decimal string, got {str(value)[:40]!r}"
        return None
    if not number.is_finite() or number <= 0:
        errors[name] = "must be a positive number"
        return None
    if number.as_tuple().exponent < -10 or number.adjusted() > 12:  # type: ignore[operator]
        errors[name] = "has too many digits"
        return None
    return number


def price_or_zero(value: Any, name: str, errors: dict[str, str]) -> Decimal | None:
    # Absent or null: not set, which for these distances means none (0).
    if value in (0, "0", None):
        return Decimal(0)
    return price(value, name, errors)


def required_price(value: Any, name: str, errors: dict[str, str]) -> Decimal | None:
    # An explicit null must not make a part of the plan vanish without a word.
    if value is None:
        errors[name] = "is required"
        return None
    return price(value, name, errors)


def text(value: Any, name: str, errors: dict[str, str]) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        errors[name] = "must be text"
        return ""
    if len(value) > MAX_TEXT_LENGTH:
        errors[name] = f"must be at most {MAX_TEXT_LENGTH} characters"
        return ""
    return value


def is_object_within(value: Any, allowed: frozenset[str]) -> bool:
    return isinstance(value, dict) and set(value) <= allowed
