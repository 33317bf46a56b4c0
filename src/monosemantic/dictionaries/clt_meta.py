"""The layout of a multi-site dictionary (CLT or crosscoder) and how a `[dictionary]` with layer-glob
sites becomes one: d_in/d_out are concatenated widths, the layers and every site are listed."""

from __future__ import annotations

from dataclasses import dataclass, field

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.utils.errors import ConfigError

from .base import DictionaryMeta, default_aux_k
from .layer_sites import expand, glob_layers

ACTIVATIONS = ("relu", "jumprelu", "topk", "batchtopk")


@dataclass
class CLTMeta(DictionaryMeta):
    """A DictionaryMeta whose d_in/d_out/d_sae are the concatenated widths (a CLT's d_sae counts
    every layer's latents), plus the layer layout; shared by CLTs and crosscoders."""

    activation: str = "relu"
    layers: list[int] = field(default_factory=list)
    hook_names: list[str] = field(default_factory=list)
    hook_names_out: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The activation's defaults, also for a CLT read from another layout (circuit-tracer,
        # Gemma Scope) that carries no training settings. TopK-style rules hold unit decoders.
        if self.l1_coefficient is None:
            self.l1_coefficient = 5.0
        if self.l0_coefficient is None:
            self.l0_coefficient = 1.0
        if self.decoder_init_norm is None:
            self.decoder_init_norm = 1.0 if self.activation in ("topk", "batchtopk") else 0.1

    @property
    def is_transcoder(self) -> bool:
        return self.architecture == "clt"  # a crosscoder reconstructs the sites it reads


def meta_from_config(dict_cfg: DictionaryConfig, d_in: int, d_out: int | None) -> CLTMeta:
    """A CLTMeta from a `[dictionary]` whose site is a stream key like `blocks.{0,1}.mlp.hook_in`
    (d_in, d_out: concatenated widths; for a CLT d_sae, expansion and k count per layer). Without a
    distinct site_out it is an acausal crosscoder (`crosscoder.py`): one latent space of d_sae."""
    layers = glob_layers(dict_cfg.site) or []
    sites_in = expand(dict_cfg.site)
    sites_out = expand(dict_cfg.site_out or dict_cfg.site)
    L = len(layers)
    if L == 0 or d_in % L or (d_out or d_in) % L:
        raise ConfigError(f"{dict_cfg.site}: widths {d_in}/{d_out} do not split over layers {layers}")
    d_layer = d_in // L
    if dict_cfg.d_sae is not None:
        n = dict_cfg.d_sae
    elif dict_cfg.expansion is not None:
        n = dict_cfg.expansion * d_layer
    else:
        raise ConfigError("[dictionary] needs d_sae or expansion (per layer for a CLT); set one of them")
    act = dict_cfg.architecture
    if act not in ACTIVATIONS or dict_cfg.skip:
        raise ConfigError(
            f"a cross-layer transcoder or crosscoder takes architecture {' | '.join(ACTIVATIONS)} without "
            f"skip, not {act!r}{' with skip' if dict_cfg.skip else ''}"
        )
    crosscoder = sites_out == sites_in
    if act in ("topk", "batchtopk") and (dict_cfg.k is None or dict_cfg.k > n):
        raise ConfigError(f"a {act} CLT needs 1 <= k <= d_sae per layer ({n}); set dictionary.k")
    if dict_cfg.aux_k is not None and dict_cfg.aux_k > n:
        raise ConfigError(
            f"aux_k={dict_cfg.aux_k} is larger than d_sae ({n}, per layer for a CLT); choose aux_k <= {n}"
        )
    # AuxK picks aux_k dead latents per encoder: per layer for a CLT, over the one space for a crosscoder
    aux_k = dict_cfg.aux_k or default_aux_k(d_in if crosscoder else d_layer, n)
    return CLTMeta(
        architecture="crosscoder" if crosscoder else "clt",
        d_in=d_in,
        d_sae=n if crosscoder else n * L,
        d_out=d_out or d_in,
        k=dict_cfg.k,
        hook_name=dict_cfg.site,
        hook_name_out=dict_cfg.site_out or dict_cfg.site,
        apply_b_dec_to_input=False,
        l1_coefficient=dict_cfg.l1_coefficient,
        l0_coefficient=dict_cfg.l0_coefficient,
        jumprelu_bandwidth=dict_cfg.jumprelu_bandwidth,
        jumprelu_init_threshold=dict_cfg.jumprelu_init_threshold,
        aux_k=aux_k,
        aux_coefficient=dict_cfg.aux_coefficient,
        decoder_init_norm=dict_cfg.decoder_init_norm,
        activation=act,
        layers=layers,
        hook_names=sites_in,
        hook_names_out=sites_out,
    )
