"""Which features the viewer, search and exports call dead: one definition, in one place.

A feature is dead when it never fired on the analysed tokens (density 0, or no density recorded).
Lists and search hide dead features unless asked for them; `live_clause` is the same rule in SQL.
"""

from __future__ import annotations

__all__ = ["is_dead", "live_clause"]


def is_dead(density: float | None) -> bool:
    """True for a feature that never fired on the analysed tokens."""
    return density is None or not density > 0


def live_clause(column: str = "density") -> str:
    """An SQL condition true for live features (`column` names the density column)."""
    return f"{column} > 0"
