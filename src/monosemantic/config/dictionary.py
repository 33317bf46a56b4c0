"""[dictionary] / [[dictionaries]]: what to train. `[dictionary]` also supplies defaults to each sweep entry."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, model_validator

from .base import Section


class DictionaryConfig(Section):
    # Architectures register themselves in the dictionaries stage, which checks the name (and
    # the architecture's own settings: k, widths, options) when the dictionary is built.
    architecture: str = Field(
        "topk",
        description="A registered architecture: relu | topk | batchtopk | jumprelu | gated | matryoshka; fitted "
        "baselines pca | ica | random (d_sae/2 directions) | neurons (an MLP's own units, mlp_in -> mlp_out), "
        "where k is optional: keep each token's k largest",
    )
    d_sae: int | None = Field(None, gt=0, description="Number of latents; or give `expansion`.")
    expansion: int | None = Field(None, gt=0, description="d_sae = expansion x d_in.")
    k: int | None = Field(None, gt=0, description="Active latents per token (topk, batchtopk, matryoshka).")
    l1_coefficient: float | None = Field(
        None, ge=0, description="L1 penalty (relu, gated); default set by the architecture (5.0)."
    )
    l0_coefficient: float | None = Field(
        None, ge=0, description="L0 penalty (jumprelu); default set by the architecture (1.0)."
    )
    jumprelu_bandwidth: float = Field(
        0.3,
        gt=0,
        description="Straight-through estimator kernel width, in pre-activation units (order 1 when "
        "train.normalize_activations scales inputs to norm sqrt(d_in)).",
    )
    jumprelu_init_threshold: float = Field(
        1.0,
        gt=0,
        description="Initial threshold, in the same units (~1 standard deviation of a pre-activation).",
    )
    jumprelu_init_density: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="If set, each latent's initial threshold is its pre-activation quantile on the first "
        "batches at which it fires on this fraction of tokens (replaces jumprelu_init_threshold); at "
        "large expansion a fixed threshold starts with thousands of latents active per token.",
    )
    matryoshka_widths: list[int] | None = Field(
        None, description="Nested prefix widths; the last equals d_sae. Default: d_sae/16, /4, /1."
    )
    aux_k: int | None = Field(
        None,
        gt=0,
        description="Dead latents per token used by the AuxK loss (TopK family; default d_in/2; for a "
        "cross-layer transcoder per layer, like k, default half a layer's width).",
    )
    aux_coefficient: float = Field(1 / 32, ge=0, description="Weight of the AuxK loss (0 turns it off).")
    l1_decoder_norm: bool = Field(
        True,
        description="relu/gated: weight each latent's L1 by its decoder row norm (Anthropic, April 2024); "
        "false holds decoder rows at unit norm instead (Towards Monosemanticity).",
    )
    decoder_init_norm: float | None = Field(
        None,
        gt=0,
        description="Initial decoder row norm. Default 0.1 where rows are free (jumprelu, decoder-norm-weighted "
        "L1), else 1.",
    )
    site: str | None = Field(None, description="Input hook site; default the first of [sites].names.")
    site_out: str | None = Field(None, description="Output hook site: set it to make a transcoder.")
    layers: list[int] | None = Field(
        None,
        description="Layers a `blocks.*` site expands over (default every layer the cache holds); "
        '`site = "blocks.*.mlp.hook_in"` with `site_out = "blocks.*.hook_mlp_out"` is one '
        "cross-layer transcoder (d_sae and k per layer); a glob site without site_out, one acausal "
        "crosscoder (one latent space over the layers).",
    )
    skip: bool = Field(False, description="Skip transcoder: add a linear W_skip path from input to output.")
    target_l0: float | None = Field(None, gt=0, description="Tune the sparsity coefficient to reach this L0.")
    name: str | None = Field(None, description="Sub-folder name in a sweep; default built from what differs.")
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings owned by the architecture ([dictionary.options]); it checks them when built.",
    )

    @model_validator(mode="after")
    def _check(self) -> DictionaryConfig:
        if self.d_sae is not None and self.expansion is not None:
            raise ValueError("give either d_sae or expansion, not both")
        if self.site is not None and "*" in self.site:
            glob = re.compile(r"^blocks\.\*\.(?:\w+\.)?hook_\w+$")
            if not glob.match(self.site) or (self.site_out is not None and not glob.match(self.site_out)):
                raise ValueError(
                    f"site {self.site!r}: a layer glob needs the form blocks.*.hook_NAME, and site_out too "
                    "(blocks.*.mlp.hook_in -> blocks.*.hook_mlp_out makes a cross-layer transcoder; "
                    "no site_out, an acausal crosscoder)"
                )
        elif self.layers is not None:
            raise ValueError("layers only applies to a layer-glob site like blocks.*.mlp.hook_in")
        if self.skip and self.site_out is None:
            raise ValueError("skip = true needs site_out (a skip transcoder maps site -> site_out)")
        return self
