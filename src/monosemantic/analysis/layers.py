"""Where a multi-site dictionary's latents live: a CLT latent's home layer and its decoder norm per
output layer, a crosscoder latent's decoder norm per layer (per model, for model diffing, with its
share of decoder norm on model A, in the scale training saw).

`layer_weights` gives the weight-based views flat matrices: decoders concatenated over output
layers ([d_sae, L*d_out], for decoder-cosine neighbours), summed over them ([d_sae, d_out]: what the
latent adds to the residual stream, for the logit lens), and encoders as [d_in, d_sae].
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from monosemantic.config.site import Site
from monosemantic.dictionaries.base import Dictionary


@torch.no_grad()
def layer_weights(dic: Dictionary) -> dict[str, Tensor | None]:
    """`encoders` is None where every latent reads every site (a crosscoder)."""
    decoders = dic.site_decoders().detach().float().cpu()  # [d_sae, L, d]
    encoders = dic.site_encoders()
    encoders = None if encoders is None else encoders.detach().float().cpu()
    return {"decoders": decoders.flatten(1), "residual_write": decoders.sum(1), "encoders": encoders}


@torch.no_grad()
def layer_summary(dic: Dictionary) -> dict[str, Any]:
    """Dictionary-level fields for the feature store: per latent, its home layer (CLT) and decoder
    norm per output layer, rounded; empty for single-site dictionaries."""
    if not dic.multi_site:
        return {}
    norms = dic.decoder_norms().detach().float().cpu()  # [d_sae, L]
    layers = dic.layers
    out: dict[str, Any] = {
        "site_layers": layers,
        "site_labels": site_labels([str(s) for s in dic.sites_out], layers),
        "decoder_norms": [[round(v, 4) for v in row] for row in norms.tolist()],
    }
    pair = [s.model for s in dic.sites_out]
    if "b" in pair:  # model diffing: the bench's share on model A
        share = dic.decoder_norm_share([i for i, m in enumerate(pair) if m == "a"], training_scale=True)
        out["share_a"] = [round(float(v), 4) for v in share]
    home = dic.home_sites()
    if home is not None:
        out["home_layer"] = [layers[i] for i in home.tolist()]
    return out


def site_labels(hook_names: list[str], layers: list[int]) -> list[str]:
    """A short label per site for the plot: "L2", or "A L2" / "B L2" for a model-diffing
    crosscoder, whose sites are the same layer of two models (model B's named `b:...`)."""
    models = [Site.parse(name).model for name in hook_names]
    paired = "b" in models
    return [
        f"{m.upper() + ' ' if paired else ''}L{int(layer)}" for m, layer in zip(models, layers, strict=True)
    ]


def feature_layers(cfg: dict[str, Any], idx: int) -> dict[str, Any] | None:
    """One latent's view of `layer_summary` (for the feature page), or None."""
    norms = cfg.get("decoder_norms")
    if not norms or idx >= len(norms):
        return None
    home = cfg.get("home_layer")
    return {
        "layers": cfg["site_layers"],
        "labels": cfg.get("site_labels") or [f"L{v}" for v in cfg["site_layers"]],
        "decoder_norms": norms[idx],
        "home_layer": home[idx] if home else None,
        "share_a": cfg["share_a"][idx] if cfg.get("share_a") else None,
    }
