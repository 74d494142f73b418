"""Finding a hidden level in text, whatever its formatting."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from decimal import Decimal


def level_pattern(price: Decimal) -> re.Pattern[str]:
    """Matches ``price`` as a whole number token: 2645.5 also as 2645.50, 2645.500; 2645 as 2645.0."""
    normalized = format(price.normalize(), "f")
    whole, _, fraction = normalized.partition(".")
    tail = rf"\.{fraction}0*" if fraction else r"(?:\.0+)?"
    return re.compile(rf"(?<![\d.]){re.escape(whole)}{tail}(?![\d])")


def find_levels(text: str, prices: Iterable[Decimal]) -> list[str]:
    return [format(price, "f") for price in prices if level_pattern(price).search(text)]


class RecordingHandler(logging.Handler):
    """Keeps every formatted record at INFO or above, from every logger."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name} {record.getMessage()} {record.exc_text or ''} {record.args!r}")
