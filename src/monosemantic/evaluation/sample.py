"""Which sequences `evaluate` reads: the cache's held-out ones (`activations/split.py`), or all of
them where the cache records no split (with a warning), or a seeded sample of either."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from monosemantic.activations import split
from monosemantic.activations.cache import ActivationCache
from monosemantic.utils.errors import DataError
from monosemantic.utils.progress import console


def sample_sequences(
    cache: ActivationCache, max_sequences: int | None, seed: int, held_out: bool = True
) -> tuple[Tensor | None, dict[str, Any]]:
    """Which sequences to evaluate (sorted; None: all) and their description for metrics.json:
    the cache's held-out sequences (or, with `held_out` false or a cache without a split, all of
    them), or a seeded uniform sample of `max_sequences` of those."""
    total = cache.n_sequences
    pool = split.held_out(cache.manifest) if held_out else None
    if held_out and pool is None:
        console.print(f"[yellow]warning:[/] {split.NO_SPLIT_FIX}", highlight=False, soft_wrap=True)
    if pool is not None and len(pool) == 0:
        raise DataError(
            f"the activation cache {cache.path} holds out no sequence (it has {total} sequences at "
            f"harvest.eval_fraction {cache.manifest[split.KEY]['fraction']}); harvest more data or a larger "
            "eval_fraction, or set evaluate.held_out = false to evaluate on training sequences"
        )
    n_pool = total if pool is None else len(pool)
    n = min(max_sequences or n_pool, n_pool)
    if n == n_pool:
        indices, selection = pool, "held_out" if pool is not None else "all"
    else:
        g = torch.Generator().manual_seed(seed)
        chosen = torch.randperm(n_pool, generator=g)[:n]
        indices = (chosen if pool is None else pool[chosen]).sort().values
        selection = "random"
    if pool is not None:
        what = "all" if n == n_pool else f"a random sample (seed {seed}) of {n:,} of the"
        note = (
            f"evaluated on {what} {split.describe(cache.manifest)} of {cache.path}: sequences training "
            "never read"
        )
    else:
        what = "all" if indices is None else f"a random sample (seed {seed}) of {n:,} of the"
        why = "evaluate.held_out = false" if not held_out else "the cache records no held-out sequences"
        note = f"evaluated on {what} {total:,} sequences of {cache.path} (NOT held out: {why})"
    return indices, {
        "selection": selection,
        "seed": None if n == n_pool else seed,
        "n_sequences": n,
        "cache_sequences": total,
        "held_out": pool is not None,
        # which positions count (recorded at harvest): special tokens, and for chat data one role's
        "special_tokens": cache.manifest.get("special_tokens", "exclude"),
        "train_on": cache.train_on,
        "eval_sequences": {k: v for k, v in cache.manifest[split.KEY].items() if k != "sequences"}
        | {"n": n_pool}
        if pool is not None
        else None,
        "note": note,
    }


def check_held_out(entries: list[Any], cache: ActivationCache, sample: dict[str, Any]) -> None:
    """Warn about a dictionary trained on this very cache without skipping its held-out split."""
    if not sample["held_out"]:
        return
    for e in entries:
        meta = e.dic.cfg.metadata or {}
        trained_on = meta.get("dataset_path")
        if trained_on is None or not Path(str(trained_on)).exists():
            continue
        if Path(str(trained_on)).resolve() == cache.path.resolve() and not meta.get("held_out"):
            console.print(
                f"[yellow]warning:[/] {e.name} was trained on {cache.path} by a version that did not skip "
                "its held-out sequences; retrain it for held-out numbers",
                highlight=False,
                soft_wrap=True,
            )
