"""The held-out split of an activation cache: which whole sequences training never reads.

A sequence is held out for evaluation when a seeded hash of its global number falls below
`harvest.eval_fraction`. The choice depends on nothing but (seed, fraction, sequence number):
not on shard sizes, ranks or how often the harvest was resumed, so a single-process, a resumed
and a torchrun harvest of the same config record the same split, and a reader can recompute it.
Whole sequences are held out, never tokens within one (a sequence's tokens share a story).

The manifest records it as `eval_sequences = {"seed", "fraction", "sequences": [sorted numbers]}`
(an additive field: caches harvested before it existed have none, and are evaluated with a
warning). Training sources skip those sequences; evaluation reads only them by default.
"""

from __future__ import annotations

from typing import Any

import torch

KEY = "eval_sequences"
_MASK = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    """One step of splitmix64 (Steele et al. 2014): a well-mixed 64-bit hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def is_held_out(sequence: int, seed: int, fraction: float) -> bool:
    """Whether global sequence number `sequence` is an evaluation sequence under (seed, fraction)."""
    if fraction <= 0:
        return False
    u = _splitmix64((seed & 0xFFFFFFFF) << 32 ^ sequence ^ _splitmix64(seed)) / 2.0**64
    return u < fraction


def held_out_range(first: int, n: int, seed: int, fraction: float) -> list[int]:
    """The evaluation sequences among global numbers first .. first + n - 1."""
    return [i for i in range(first, first + n) if is_held_out(i, seed, fraction)]


def planned(seed: int, fraction: float) -> dict[str, Any]:
    """The manifest record of a split before any shard is written."""
    return {"seed": int(seed), "fraction": float(fraction), "sequences": []}


def record(manifest: dict[str, Any]) -> None:
    """Recompute `manifest["eval_sequences"]["sequences"]` from its shards (no-op without a split)."""
    split = manifest.get(KEY)
    if split is None:
        return
    total = sum(int(s["sequences"]) for s in manifest["shards"])
    split["sequences"] = held_out_range(0, total, int(split["seed"]), float(split["fraction"]))


def held_out(manifest: dict[str, Any]) -> torch.Tensor | None:
    """Sorted int64 numbers of the cache's evaluation sequences; None when it records no split
    (harvested before `harvest.eval_fraction` existed, or with it at 0)."""
    split = manifest.get(KEY)
    if not split or not split.get("fraction"):
        return None
    return torch.tensor(split["sequences"], dtype=torch.int64)


def describe(manifest: dict[str, Any]) -> str:
    """'51 held-out sequences (harvest.eval_fraction 0.05, seed 0)' for notes and tables."""
    split = manifest.get(KEY) or {}
    n = len(split.get("sequences") or [])
    return (
        f"{n:,} held-out sequences (harvest.eval_fraction {split.get('fraction')}, seed {split.get('seed')})"
    )


NO_SPLIT_FIX = (
    "the cache records no held-out sequences (it was harvested before harvest.eval_fraction existed, "
    "or with eval_fraction = 0), so these numbers are on sequences training may have read; harvest a "
    "new cache (harvest.eval_fraction defaults to 0.05) and train on it to evaluate on held-out data"
)

NO_SPLIT_SCORING = (
    "the cache records no held-out sequences, so analyze keeps no held-out examples and explain scores "
    "explanations on the contexts they were written from; harvest a new cache (harvest.eval_fraction "
    "defaults to 0.05), then analyze it, to score on held-out sequences"
)
