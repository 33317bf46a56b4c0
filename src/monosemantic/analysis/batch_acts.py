"""One batch of cached sequences as the activations at the sites the dictionaries read: cached
sites straight from the cache, missing ones computed live with the subject model from the cached
tokens, and multi-site groups concatenated (shared by the analysis pass and `attended.py`)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from monosemantic.activations.cache import ActivationCache
from monosemantic.config.site import concrete_sites, site_groups
from monosemantic.utils.errors import DataError


def split_sites(cache: ActivationCache, sites: list[str], model: Any | None) -> tuple[list[str], list[str]]:
    """The concrete sites read from the cache and those computed live (an error without a model)."""
    concrete = concrete_sites(sites)
    cached = [s for s in concrete if s in cache.sites]
    live = [s for s in concrete if s not in cache.sites]
    if live and model is None:
        raise DataError(
            f"site(s) {', '.join(live)} are not in the cache {cache.path} and the subject model could not be "
            "loaded to compute them; harvest them or make the model available"
        )
    return cached, live


def batch_acts(
    batch: dict[str, Tensor], tokens: Tensor, sites: list[str], cached: list[str], live: list[str], model: Any
) -> dict[str, Tensor]:
    """The activations [B, T, d] of `tokens` (the batch's first B sequences) at every site."""
    B = tokens.shape[0]
    acts = {s: batch[s][:B] for s in cached}
    if live:
        with torch.inference_mode():
            out = model.run(tokens.long(), capture=live, stop_at_layer=model.stop_layer(live))
        acts.update({s: out.activations[s] for s in live})
    return acts | {k: torch.cat([acts[c] for c in group], -1) for k, group in site_groups(sites).items()}
