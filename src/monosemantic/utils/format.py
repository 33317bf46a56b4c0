"""Numbers as people read them: one rule for fractions shown as percentages, shared by every table
and log line (the viewers' `pct` in JavaScript follows the same rule)."""

from __future__ import annotations

import math

__all__ = ["percent"]


def percent(x: float | None, digits: int = 2) -> str:
    """A fraction as a percentage with `digits` significant digits and never an exponent:
    0.0025 -> '0.25%', 0.31 -> '31%', 2.5e-7 -> '0.000025%', 0 -> '0%'."""
    if x is None or not math.isfinite(x):
        return "–"
    p = 100 * x
    if p == 0:
        return "0%"
    if abs(p) >= 10 ** (digits - 1):
        return f"{p:.0f}%"
    places = min(20, max(0, digits - 1 - math.floor(math.log10(abs(p)))))
    return f"{p:.{places}f}%"
