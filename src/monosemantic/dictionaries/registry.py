"""Build a dictionary from its config section; importing this registers every architecture."""

from __future__ import annotations

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.utils.errors import ConfigError

# registration; ica, neurons, pca, random_basis are the fitted baselines (see fitted.py)
from . import batchtopk, gated, ica, jumprelu, matryoshka, neurons, pca, random_basis, relu, topk  # noqa: F401
from .base import _REGISTRY, Dictionary, DictionaryMeta, dictionary_class
from .matryoshka import default_widths

ARCHITECTURES = tuple(sorted(_REGISTRY))


def meta_from_config(dict_cfg: DictionaryConfig, d_in: int, d_out: int | None = None) -> DictionaryMeta:
    """Resolve defaults (d_sae from expansion, aux_k, widths, init scale) and check consistency."""
    arch = dict_cfg.architecture
    if dict_cfg.d_sae is not None:
        d_sae = dict_cfg.d_sae
    elif dict_cfg.expansion is not None:
        d_sae = dict_cfg.expansion * d_in
    else:
        raise ConfigError("[dictionary] needs d_sae or expansion (d_sae = expansion x d_in); set one of them")
    d_out = d_in if d_out is None else d_out
    k = dict_cfg.k
    if arch in ("topk", "batchtopk", "matryoshka"):
        if k is None:
            raise ConfigError(f"architecture {arch!r} needs k (active latents per token); set dictionary.k")
        if k > d_sae:
            raise ConfigError(f"k={k} is larger than d_sae={d_sae}; choose k <= d_sae")
    widths = None
    if arch == "matryoshka":
        widths = list(dict_cfg.matryoshka_widths or default_widths(d_sae))
        if (
            widths[-1] != d_sae
            or any(a >= b for a, b in zip(widths[:-1], widths[1:], strict=True))
            or widths[0] <= 0
        ):
            raise ConfigError(
                f"matryoshka_widths {widths} must be increasing positive widths ending at d_sae={d_sae}"
            )
    l1_decoder_norm = dict_cfg.l1_decoder_norm
    init_norm = dict_cfg.decoder_init_norm
    if init_norm is None:
        free_decoder = arch == "jumprelu" or (arch in ("relu", "gated") and l1_decoder_norm)
        init_norm = 0.1 if free_decoder else 1.0
    is_transcoder = d_out != d_in or (dict_cfg.site_out is not None and dict_cfg.site_out != dict_cfg.site)
    return DictionaryMeta(
        architecture=arch,
        d_in=d_in,
        d_sae=d_sae,
        d_out=d_out,
        k=k,
        hook_name=dict_cfg.site,
        hook_name_out=dict_cfg.site_out if is_transcoder else None,
        skip=dict_cfg.skip,
        apply_b_dec_to_input=not is_transcoder,
        l1_coefficient=5.0 if dict_cfg.l1_coefficient is None else dict_cfg.l1_coefficient,
        l1_decoder_norm=l1_decoder_norm,
        l0_coefficient=1.0 if dict_cfg.l0_coefficient is None else dict_cfg.l0_coefficient,
        jumprelu_bandwidth=dict_cfg.jumprelu_bandwidth,
        jumprelu_init_threshold=dict_cfg.jumprelu_init_threshold,
        jumprelu_init_density=dict_cfg.jumprelu_init_density,
        matryoshka_widths=widths,
        aux_k=min(dict_cfg.aux_k or max(d_in // 2, 1), d_sae),
        aux_coefficient=dict_cfg.aux_coefficient,
        decoder_init_norm=init_norm,
    )


def build_dictionary(dict_cfg: DictionaryConfig, d_in: int, d_out: int | None = None) -> Dictionary:
    """A freshly initialised dictionary for `dict_cfg` on d_in-wide inputs (d_out for transcoders)."""
    meta = meta_from_config(dict_cfg, d_in, d_out)
    return dictionary_class(meta.architecture)(meta)
