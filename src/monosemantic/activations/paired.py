"""Two models' activations on the same tokens, as one source (model diffing).

Model A's sites come from `data.activations`, model B's from `data.activations_b` and are named
`b:<site>` in the stream. Both caches must hold the same token windows in the same shards: harvest
them with the same `[data]` (text, seed, max_tokens, context_size) and `harvest.shard_sequences`
and the same tokenizer (a fine-tuned copy keeps its base model's). That is checked here, token by
token, before training starts, so a crosscoder never pairs rows of different tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from monosemantic.config import Config
from monosemantic.config.site import MODEL_B, Site
from monosemantic.utils.errors import ConfigError, DataError

from . import split
from .cache import ActivationCache
from .sources import CacheSource, Source


def split_models(sites: Sequence[str]) -> tuple[list[str], list[str]]:
    """Model A's sites, and model B's under their own names (`b:blocks.2.hook_X` -> `blocks.2.hook_X`)."""
    parsed = [Site.parse(s) for s in sites]
    return [str(p) for p in parsed if p.models == ("a",)], [
        str(p.in_model("a")) for p in parsed if p.models == ("b",)
    ]


def check_same_tokens(ca: ActivationCache, cb: ActivationCache) -> None:
    """Refuse two caches whose shards or tokens differ (one clear line naming the first difference)."""
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
    ha, hb = split.held_out(ca.manifest), split.held_out(cb.manifest)
    if (ha is None) != (hb is None) or (ha is not None and not torch.equal(ha, hb)):
        raise DataError(
            f"caches {ca.path} and {cb.path} hold out different sequences for evaluation; harvest both "
            "with the same harvest.eval_fraction and harvest.eval_seed"
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
        sites_a, sites_b = split_models(self.sites)
        if not sites_a or not sites_b:
            raise DataError(
                f"a paired stream needs sites of both models (got {', '.join(self.sites)}); name the "
                "dictionary's site like {a,b}:blocks.2.hook_resid_post"
            )
        self.a = CacheSource(path_a, sites_a, chunk_tokens, exclude_special)
        self.b = CacheSource(path_b, sites_b, chunk_tokens, exclude_special)
        check_same_tokens(self.a.cache, self.b.cache)
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


class PairedCache:
    """Model A's cache with model B's sites beside it as `b:<site>`, read in lockstep: what
    `evaluate` and `analyze` read for a model-diffing crosscoder. Everything else (tokens, concept
    labels, manifest, special tokens) is model A's; the tokens are checked equal up front."""

    def __init__(self, a: ActivationCache, b: ActivationCache) -> None:
        check_same_tokens(a, b)
        self.a, self.b = a, b
        self.sites = {**a.sites, **{MODEL_B + s: w for s, w in b.sites.items()}}

    def __getattr__(self, name: str) -> Any:  # only for what this class does not define
        return getattr(self.a, name)

    def iter_sample(
        self,
        indices: torch.Tensor | None,
        sites: Sequence[str] | None = None,
        batch_sequences: int = 32,
        verify: bool = True,
    ) -> Iterator[dict[str, torch.Tensor]]:
        sites = list(self.sites) if sites is None else list(sites)
        sites_a, sites_b = split_models(sites)
        batches_a = self.a.iter_sample(indices, sites_a, batch_sequences, verify)
        batches_b = self.b.iter_sample(indices, sites_b, batch_sequences, verify)
        for ba, bb in zip(batches_a, batches_b, strict=True):
            yield {**ba, **{MODEL_B + s: bb[s] for s in sites_b}}

    def iter_sequences(
        self, sites: Sequence[str] | None = None, batch_sequences: int = 32, verify: bool = True
    ) -> Iterator[dict[str, torch.Tensor]]:
        return self.iter_sample(None, sites, batch_sequences, verify)


def model_a_cache(cfg: Config, explicit: Path | None) -> Path:
    """The cache `evaluate`/`analyze` read: their own setting, else in a model-diffing config (one
    with data.activations_b) model A's data.activations, else [harvest].out."""
    if explicit is not None:
        return Path(explicit)
    if cfg.data.activations_b is not None and cfg.data.activations is not None:
        return Path(cfg.data.activations)
    return Path(cfg.harvest.out)


def with_model_b(cfg: Config, cache: ActivationCache, name: str, site: str) -> PairedCache:
    """Model A's `cache` with model B's (data.activations_b) beside it, for a model-pair dictionary."""
    if cfg.data.activations_b is None:
        raise ConfigError(
            f"{name} is a model-diffing crosscoder over {site}: set data.activations_b to model B's "
            "activation cache (the same token windows as model A's)"
        )
    return PairedCache(cache, ActivationCache(cfg.data.activations_b))
