"""The payload guard: ``payload`` is client-visible, so it may hold no key that
names an exit level and no value (or number inside a string) equal to a hidden
price, at any depth. Pure Python (no Django)."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

MAX_PAYLOAD_DEPTH = 5

# Keys (after lower-casing and dropping everything but letters and digits) that
# name an exit level. Payload is client-visible: none of these may be in it.
LEVEL_KEY_PATTERN = re.compile(
    r"^(sl|tp\d*|stop|stops|stoploss|stoplosses|stoplevel|stopprice|takeprofit\d*|takeprofits|"
    r"target\d*|targets|targetprice|profittarget|exit|exitprice|exits|trailing|trailingstop|"
    r"breakeven|partialtp|partialtps|partialtakeprofits|limit|limits)$"
)


NUMBER_PATTERN = re.compile(r"\d+(?:\.\d+)?")


def _normalise_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float, Decimal)):
        return None
    try:
        number = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _holds_hidden_price(value: Any, hidden: set[Decimal]) -> bool:
    numbers = [_as_decimal(value)]
    if isinstance(value, str):  # "watch 2645.00" leaks as much as 2645.00
        numbers.extend(_as_decimal(token) for token in NUMBER_PATTERN.findall(value))
    return any(number is not None and number in hidden for number in numbers)


def _walk_payload(value: Any, path: str, depth: int, hidden: set[Decimal], problems: list[str]) -> None:
    if depth > MAX_PAYLOAD_DEPTH:
        problems.append(f"{path or 'payload'} is nested too deeply")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            key_text = str(key)
            child = f"{path}.{key_text}" if path else key_text
            if LEVEL_KEY_PATTERN.match(_normalise_key(key_text)):
                problems.append(f"payload key {child!r} looks like an exit level; put it in owner_only")
            _walk_payload(item, child, depth + 1, hidden, problems)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _walk_payload(item, f"{path}[{index}]", depth + 1, hidden, problems)
    elif _holds_hidden_price(value, hidden):
        problems.append(f"payload value at {path or 'payload'!r} holds a hidden level")


def payload_problems(payload: Any, *, hidden_prices: list[Decimal]) -> list[str]:
    """Why ``payload`` may not be shown to clients; empty when it may.

    It may hold no key that names an exit level (at any depth) and no value
    equal to a hidden price, whatever the key.
    """
    if not isinstance(payload, dict):
        return ["payload must be an object"]
    problems: list[str] = []
    _walk_payload(payload, "", 0, set(hidden_prices), problems)
    return problems
