"""Two models' activations on the same tokens, as one source (model diffing).

Model A's sites come from `data.activations`, model B's from `data.activations_b` and are named
`b:<site>` in the stream. Both caches must hold the same token windows in the same shards: harvest
them with the same `[data]` (text, seed, max_tokens, context_size) and `harvest.shard_sequences`
and the same tokenizer (a fine-tuned copy keeps its base model's). That is checked here, token by
token, before training starts, so a crosscoder never pairs rows of different tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from monosemantic.utils.errors import DataError

from .sources import CacheSource, Source

MODEL_B = "b:"  # prefix of model B's sites in a paired stream


def check_same_tokens(a: CacheSource, b: CacheSource) -> None:
    """Refuse two caches whose shards or tokens differ (one clear line naming the first difference)."""
    ca, cb = a.cache, b.cache
    fix = (
        "harvest both models with the same [data] (text, seed, max_tokens, context_size), "
        "harvest.shard_sequences and tokenizer"
    )
    sizes_a = [int(s["sequences"]) for s in ca.shards]
    sizes_b = [int(s["sequences"]) for s in cb.shards]
    if ca.context_size != cb.context_size or sizes_a != sizes_b:
        raise DataError(
            f"caches {ca.path} and {cb.path} are not the same token windows (context {ca.context_size} "
            f"vs {cb.context_size}, shard sizes {sizes_a[:4]} vs {sizes_b[:4]}); {fix}"
        )
    for i in range(ca.num_shards):
        ta = ca.load_shard(i, [], verify=False)["tokens"]
        tb = cb.load_shard(i, [], verify=False)["tokens"]
        if not torch.equal(ta, tb):
            seq = int((ta != tb).any(1).nonzero()[0, 0])
            raise DataError(
                f"caches {ca.path} and {cb.path} hold different tokens (shard {i}, sequence {seq}); {fix}"
            )


class PairedSource(Source):
    """Chunks of two cache sources read in lockstep; model B's sites get the `b:` prefix."""

    def __init__(
        self, path_a: Path, path_b: Path, sites: Sequence[str], chunk_tokens: int, exclude_special: bool
    ) -> None:
        self.sites = list(dict.fromkeys(sites))
        sites_a = [s for s in self.sites if not s.startswith(MODEL_B)]
        sites_b = [s[len(MODEL_B) :] for s in self.sites if s.startswith(MODEL_B)]
        if not sites_a or not sites_b:
            raise DataError(
                f"a paired stream needs sites of both models (got {', '.join(self.sites)}); name the "
                "dictionary's site like {a,b}:blocks.2.hook_resid_post"
            )
        self.a = CacheSource(path_a, sites_a, chunk_tokens, exclude_special)
        self.b = CacheSource(path_b, sites_b, chunk_tokens, exclude_special)
        check_same_tokens(self.a, self.b)
        self.widths = {**self.a.widths, **{MODEL_B + s: w for s, w in self.b.widths.items()}}

    @property
    def cache(self) -> Any:  # the stream's warnings about an unfinished harvest name model A's cache
        return self.a.cache

    @property
    def epoch(self) -> int:  # type: ignore[override]
        return self.a.epoch

    @property
    def tokens_per_epoch(self) -> int:
        return self.a.tokens_per_epoch

    def next_chunk(self) -> dict[str, torch.Tensor]:
        chunk_a, chunk_b = self.a.next_chunk(), self.b.next_chunk()
        return {**chunk_a, **{MODEL_B + s: x for s, x in chunk_b.items()}}

    def state_dict(self) -> dict[str, Any]:
        return {"kind": "paired", "a": self.a.state_dict(), "b": self.b.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.a.load_state_dict(state["a"])
        self.b.load_state_dict(state["b"])
