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

from monosemantic.dictionaries.base import Dictionary


@torch.no_grad()
def layer_weights(dic: Dictionary) -> dict[str, Tensor]:
    if dic.cfg.architecture == "clt":
        L, n, d = dic.n_layers, dic.n_per_layer, dic.d_layer_out
        full = torch.zeros(L, n, L, d)
        for s, W in enumerate(dic.W_dec):
            full[s, :, s:] = W.detach().float().cpu()
        decoders = full.reshape(L * n, L, d)
        encoders = dic.W_enc.detach().float().cpu().permute(1, 0, 2).reshape(dic.d_layer_in, L * n)
    else:  # crosscoder: W_dec [n, L, d]; one latent reads every layer
        decoders = dic.W_dec.detach().float().cpu()
        encoders = dic.W_enc.detach().float().cpu().permute(1, 0, 2).sum(1)
    return {"decoders": decoders.flatten(1), "residual_write": decoders.sum(1), "encoders": encoders}


@torch.no_grad()
def layer_summary(dic: Dictionary) -> dict[str, Any]:
    """Dictionary-level fields for the feature store: per latent, its home layer (CLT) and decoder
    norm per output layer, rounded; empty for single-site dictionaries."""
    if not getattr(dic, "multi_site", False):
        return {}
    norms = dic.decoder_norms().detach().float().cpu()  # [d_sae, L]
    out: dict[str, Any] = {
        "site_layers": [int(v) for v in dic.cfg.layers],
        "site_labels": site_labels(list(dic.cfg.hook_names_out or dic.cfg.hook_names), dic.cfg.layers),
        "decoder_norms": [[round(v, 4) for v in row] for row in norms.tolist()],
    }
    labels = out["site_labels"]
    if any(label.startswith("B ") for label in labels):  # model diffing: the bench's share on model A
        a_sites = [i for i, label in enumerate(labels) if label.startswith("A ")]
        share = dic.decoder_norm_share(a_sites, training_scale=True)
        out["share_a"] = [round(float(v), 4) for v in share]
    if dic.cfg.architecture == "clt":
        out["home_layer"] = [int(dic.cfg.layers[i // dic.n_per_layer]) for i in range(dic.d_sae)]
    return out


def site_labels(hook_names: list[str], layers: list[int]) -> list[str]:
    """A short label per site for the plot: "L2", or "A L2" / "B L2" for a model-diffing
    crosscoder, whose sites are the same layer of two models (model B's named `b:...`)."""
    paired = any(name.startswith("b:") for name in hook_names)
    model = lambda name: ("B " if name.startswith("b:") else "A ") if paired else ""  # noqa: E731
    return [f"{model(name)}L{int(layer)}" for name, layer in zip(hook_names, layers, strict=True)]


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
