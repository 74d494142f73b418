"""The owner's hidden exits: the schema (side rules: level_sides; payload guard: payload_guard).

Pure Python (no Django): the API, the admin, the backfill and the scanner all
parse ``owner_only`` through :func:`parse_hidden_levels`, so one schema holds
everywhere. Prices are ``Decimal`` and are stored as strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from signals_app.level_values import is_object_within, price, price_or_zero, required_price, text

BUY = "buy"
SELL = "sell"

MAX_PARTIAL_TAKE_PROFITS = 5
MAX_HOLDING_MINUTES = 525_600  # a year


def _plain(value: Decimal) -> str:
    """Plain notation as given (2645.00 stays 2645.00), never 2.645E+3."""
    return format(value, "f")


class HiddenLevelsError(ValueError):
    """Invalid hidden levels; ``errors`` maps a field to what is wrong with it."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{name}: {message}" for name, message in errors.items()))
        self.errors = errors


@dataclass(frozen=True)
class PartialTakeProfit:
    price: Decimal
    fraction: Decimal  # share of the original volume closed there, 0 < f < 1


@dataclass(frozen=True)
class Trailing:
    """The stop follows the best price at ``distance_pips``, or at ``distance_atr`` times
    the ATR(``atr_period``) of the owner's ``atr_timeframe`` bars: exactly one of the two."""

    distance_pips: Decimal | None
    activation_pips: Decimal = Decimal(0)
    distance_atr: Decimal | None = None
    atr_period: int = 14
    atr_timeframe: str = "H1"

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"activation_pips": _plain(self.activation_pips)}
        if self.distance_pips is not None:
            data["distance_pips"] = _plain(self.distance_pips)
        else:
            data.update(
                distance_atr=_plain(self.distance_atr),  # type: ignore[arg-type]
                atr_period=self.atr_period,
                atr_timeframe=self.atr_timeframe,
            )
        return data


@dataclass(frozen=True)
class Breakeven:
    trigger_pips: Decimal | None = None
    trigger_fraction: Decimal | None = None  # of the way from entry to TP
    offset_pips: Decimal = Decimal(0)

    def to_dict(self) -> dict[str, str]:
        data = {"offset_pips": _plain(self.offset_pips)}
        if self.trigger_pips is not None:
            data["trigger_pips"] = _plain(self.trigger_pips)
        if self.trigger_fraction is not None:
            data["trigger_fraction"] = _plain(self.trigger_fraction)
        return data


@dataclass(frozen=True)
class HiddenLevels:
    sl: Decimal | None = None
    tp: Decimal | None = None
    partial_take_profits: tuple[PartialTakeProfit, ...] = ()
    trailing: Trailing | None = None
    breakeven: Breakeven | None = None
    max_holding_minutes: int | None = None
    strategy: str = ""
    reason: str = ""

    def prices(self) -> list[Decimal]:
        """Every price level, for secrecy checks."""
        levels = [price for price in (self.sl, self.tp) if price is not None]
        levels.extend(partial.price for partial in self.partial_take_profits)
        return levels

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.sl is not None:
            data["sl"] = _plain(self.sl)
        if self.tp is not None:
            data["tp"] = _plain(self.tp)
        if self.partial_take_profits:
            data["partial_take_profits"] = [
                {"price": _plain(partial.price), "fraction": _plain(partial.fraction)}
                for partial in self.partial_take_profits
            ]
        if self.trailing is not None:
            data["trailing"] = self.trailing.to_dict()
        if self.breakeven is not None:
            data["breakeven"] = self.breakeven.to_dict()
        if self.max_holding_minutes is not None:
            data["max_holding_minutes"] = self.max_holding_minutes
        if self.strategy:
            data["strategy"] = self.strategy
        if self.reason:
            data["reason"] = self.reason
        return data


_KNOWN_KEYS = {
    "sl",
    "tp",
    "partial_take_profits",
    "trailing",
    "breakeven",
    "max_holding_minutes",
    "strategy",
    "reason",
}
_TRAILING_KEYS = frozenset(
    {"distance_pips", "activation_pips", "distance_atr", "atr_period", "atr_timeframe"}
)
ATR_TIMEFRAME_MINUTES = {"M1": 1, "M5": 5, "M15": 15, "H1": 60, "H4": 240, "D1": 1440}
ATR_TIMEFRAMES = tuple(ATR_TIMEFRAME_MINUTES)
MAX_ATR_PERIOD = 500
_BREAKEVEN_KEYS = frozenset({"trigger_pips", "trigger_fraction", "offset_pips"})


def _check_known_keys(data: dict[Any, Any], errors: dict[str, str]) -> None:
    # A misspelt level ("stop", "take_profit") must fail loudly, not leave the
    # position without the exit the owner meant to set.
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        errors["owner_only"] = f"unknown keys: {', '.join(map(str, unknown))[:200]}"


def _parse_exit_prices(data: dict[Any, Any], errors: dict[str, str]) -> tuple[Decimal | None, Decimal | None]:
    return price(data.get("sl"), "sl", errors), price(data.get("tp"), "tp", errors)


def _parse_partial_take_profit(item: Any, name: str, errors: dict[str, str]) -> PartialTakeProfit | None:
    if not isinstance(item, dict) or set(item) != {"price", "fraction"}:
        errors[name] = "must be an object with price and fraction"
        return None
    level = required_price(item["price"], f"{name}.price", errors)
    fraction = required_price(item["fraction"], f"{name}.fraction", errors)
    if fraction is not None and fraction >= 1:
        errors[f"{name}.fraction"] = "must be between 0 and 1"
    if level is None or fraction is None:
        return None
    # Returned even when the fraction is out of range, so the total below
    # reports the overshoot as well.
    return PartialTakeProfit(level, fraction)


def _parse_partial_take_profits(raw: Any, errors: dict[str, str]) -> tuple[PartialTakeProfit, ...]:
    items = raw or []  # any empty value (null, "", [], 0) means no partials
    if not isinstance(items, list) or len(items) > MAX_PARTIAL_TAKE_PROFITS:
        errors["partial_take_profits"] = f"must be a list of at most {MAX_PARTIAL_TAKE_PROFITS} items"
        return ()
    partials: list[PartialTakeProfit] = []
    for index, item in enumerate(items):
        partial = _parse_partial_take_profit(item, f"partial_take_profits[{index}]", errors)
        if partial is not None:
            partials.append(partial)
    # Something must be left for tp to close.
    if sum((partial.fraction for partial in partials), Decimal(0)) >= 1:
        errors["partial_take_profits"] = "fractions must add up to less than 1 (the rest closes at tp)"
    return tuple(partials)


def _parse_trailing(raw: Any, errors: dict[str, str]) -> Trailing | None:
    if raw is None:
        return None
    if not is_object_within(raw, _TRAILING_KEYS):
        errors["trailing"] = (
            "must be an object with distance_pips (or distance_atr, atr_period, atr_timeframe) "
            "and optional activation_pips"
        )
        return None
    activation = price_or_zero(raw.get("activation_pips", 0), "trailing.activation_pips", errors)
    if "distance_atr" in raw:
        return _parse_atr_trailing(raw, activation, errors)
    distance = price(raw.get("distance_pips"), "trailing.distance_pips", errors)
    # Name the missing distance only when no sharper message (bad number) is there already.
    if distance is None and "trailing.distance_pips" not in errors:
        errors["trailing.distance_pips"] = "is required"
    if distance is None or activation is None:
        return None
    return Trailing(distance, activation)


def _parse_atr_trailing(
    raw: dict[Any, Any], activation: Decimal | None, errors: dict[str, str]
) -> Trailing | None:
    if "distance_pips" in raw:
        errors["trailing"] = "needs exactly one of distance_pips and distance_atr"
        return None
    multiple = required_price(raw.get("distance_atr"), "trailing.distance_atr", errors)
    period = raw.get("atr_period", 14)
    if isinstance(period, bool) or not isinstance(period, int) or not 1 <= period <= MAX_ATR_PERIOD:
        errors["trailing.atr_period"] = f"must be a whole number of bars between 1 and {MAX_ATR_PERIOD}"
        period = None
    timeframe = raw.get("atr_timeframe", "H1")
    if timeframe not in ATR_TIMEFRAMES:
        errors["trailing.atr_timeframe"] = f"must be one of {', '.join(ATR_TIMEFRAMES)}"
        timeframe = None
    if multiple is None or activation is None or period is None or timeframe is None:
        return None
    return Trailing(None, activation, distance_atr=multiple, atr_period=period, atr_timeframe=timeframe)


def _parse_breakeven(raw: Any, errors: dict[str, str], *, has_tp: bool) -> Breakeven | None:
    if raw is None:
        return None
    if not is_object_within(raw, _BREAKEVEN_KEYS):
        errors["breakeven"] = "must be an object with trigger_pips or trigger_fraction, and offset_pips"
        return None
    trigger_pips = price(raw.get("trigger_pips"), "breakeven.trigger_pips", errors)
    fraction = price(raw.get("trigger_fraction"), "breakeven.trigger_fraction", errors)
    offset = price_or_zero(raw.get("offset_pips", 0), "breakeven.offset_pips", errors)
    if (trigger_pips is None) == (fraction is None):
        errors.setdefault("breakeven", "needs exactly one of trigger_pips and trigger_fraction")
        return None
    if fraction is not None and fraction >= 1:
        errors["breakeven.trigger_fraction"] = "must be between 0 and 1"
        return None
    # A fraction is measured from entry to tp; without tp it has no distance.
    if fraction is not None and not has_tp:
        errors["breakeven.trigger_fraction"] = "needs tp"
        return None
    return Breakeven(trigger_pips, fraction, offset or Decimal(0))


def _parse_max_holding_minutes(raw: Any, errors: dict[str, str]) -> int | None:
    if raw is None:
        return None
    # bool is an int in Python, but true is not a number of minutes.
    if isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_HOLDING_MINUTES:
        errors["max_holding_minutes"] = (
            f"must be a whole number of minutes between 1 and {MAX_HOLDING_MINUTES}"
        )
        return None
    return raw


def _require_an_exit(sl: Decimal | None, tp: Decimal | None, errors: dict[str, str]) -> None:
    # A bad sl or tp already says what is wrong, and an unknown key (a misspelt
    # level) is the likelier cause, so either keeps its own message.
    if sl is None and tp is None and "sl" not in errors and "tp" not in errors:
        errors.setdefault("owner_only", "needs at least one of sl and tp")


def parse_hidden_levels(data: Any) -> HiddenLevels:
    """Parse and validate ``owner_only`` (a dict). Raises :class:`HiddenLevelsError`.

    Every part is checked, so the owner sees all problems at once; the parts
    run in this order, which is also the order of ``errors`` (the API and the
    admin list them that way):

    1. unknown keys;
    2. ``sl`` and ``tp``;
    3. ``partial_take_profits``;
    4. ``trailing``;
    5. ``breakeven`` (a ``trigger_fraction`` needs a valid ``tp``);
    6. ``max_holding_minutes``, ``strategy``, ``reason``;
    7. at least one of ``sl`` and ``tp``.
    """
    if not isinstance(data, dict):
        raise HiddenLevelsError({"owner_only": "must be an object"})
    errors: dict[str, str] = {}
    _check_known_keys(data, errors)
    sl, tp = _parse_exit_prices(data, errors)
    partials = _parse_partial_take_profits(data.get("partial_take_profits"), errors)
    trailing = _parse_trailing(data.get("trailing"), errors)
    breakeven = _parse_breakeven(data.get("breakeven"), errors, has_tp=tp is not None)
    max_holding = _parse_max_holding_minutes(data.get("max_holding_minutes"), errors)
    strategy = text(data.get("strategy"), "strategy", errors)
    reason = text(data.get("reason"), "reason", errors)
    _require_an_exit(sl, tp, errors)
    if errors:
        raise HiddenLevelsError(errors)
    return HiddenLevels(
        sl=sl,
        tp=tp,
        partial_take_profits=partials,
        trailing=trailing,
        breakeven=breakeven,
        max_holding_minutes=max_holding,
        strategy=strategy,
        reason=reason,
    )
