"""Dictionaries trained at several seeds (`[train].seeds`) read as one row: mean and 95% interval.

A run with seeds writes one checkpoint per seed (`topk-k16-seed0`, ...), each recording `seed`
and `seed_group` (its name without the seed) in `cfg.json`'s metadata; `evaluate` evaluates each
like any dictionary, then aggregates each group over its seeds (`intervals.aggregate_seeds`) into
`metrics.json`'s `seed_groups`, and tables show the group rows in place of their members.
"""

from __future__ import annotations

from typing import Any

from .intervals import aggregate_seeds


def seed_groups(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """group name -> aggregated row, for every group with at least two seeds."""
    members: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        if r.get("seed_group") is not None:
            members.setdefault(r["seed_group"], []).append(r)
    return {g: aggregate_seeds(rows) for g, rows in members.items() if len(rows) > 1}


def table_rows(results: list[dict[str, Any]], groups: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a comparison table: each seed group once (where its first member stood), every
    dictionary outside a group as it is."""
    rows, shown = [], set()
    for r in results:
        g = r.get("seed_group")
        if g in groups:
            if g not in shown:
                rows.append(groups[g])
                shown.add(g)
        else:
            rows.append(r)
    return rows
