"""Axis arithmetic shared by the console's server-drawn SVG charts (the dashboard's in
``monitoring.charts``, a signal's in ``positions.signal_chart_svg``)."""

from __future__ import annotations

import math


def nice_step(rough: float, *, integer: bool) -> float:
    """The smallest 1, 2 or 5 times a power of ten at least ``rough``: gridlines a person reads easily."""
    if rough <= 0:
        return 1.0
    exponent = math.floor(math.log10(rough))
    if integer:
        exponent = max(exponent, 0)
    for multiple in (1, 2, 5, 10):
        step = multiple * 10.0**exponent
        if step >= rough:
            return step
    return 10.0 ** (exponent + 1)
