"""Build a dictionary from its config section; importing this registers every architecture.

Adding an architecture: write one module with a `Dictionary` subclass decorated by
`@register_dictionary("name")` (see `topk.py`), and import it below (or anywhere before use).
"""

from __future__ import annotations

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.utils.errors import ConfigError

# importing each architecture registers it; ica, neurons, pca, random_basis are the fitted
# baselines (see fitted.py), clt and crosscoder the multi-layer dictionaries (clt_meta.py)
from . import (  # noqa: F401
    batchtopk,
    clt,
    clt_meta,
    crosscoder,
    gated,
    ica,
    jumprelu,
    matryoshka,
    neurons,
    pca,
    random_basis,
    relu,
    topk,
)
from .base import _REGISTRY, Dictionary, DictionaryMeta, dictionary_class
from .layer_sites import is_layer_glob


def architectures() -> tuple[str, ...]:
    """Every registered architecture name (including ones registered after import)."""
    return tuple(sorted(_REGISTRY))


ARCHITECTURES = architectures()


def meta_from_config(dict_cfg: DictionaryConfig, d_in: int, d_out: int | None = None) -> DictionaryMeta:
    """Resolve the shared fields (d_sae from expansion, transcoder or SAE), then let the
    architecture fill its defaults and check its own settings (`Dictionary.configure`)."""
    if is_layer_glob(dict_cfg.site):
        return clt_meta.meta_from_config(dict_cfg, d_in, d_out)
    try:
        cls = dictionary_class(dict_cfg.architecture)
    except Exception as e:
        raise ConfigError(str(e)) from None
    if dict_cfg.d_sae is not None:
        d_sae = dict_cfg.d_sae
    elif dict_cfg.expansion is not None:
        d_sae = dict_cfg.expansion * d_in
    else:
        raise ConfigError("[dictionary] needs d_sae or expansion (d_sae = expansion x d_in); set one of them")
    d_out = d_in if d_out is None else d_out
    is_transcoder = d_out != d_in or (dict_cfg.site_out is not None and dict_cfg.site_out != dict_cfg.site)
    meta = DictionaryMeta(
        architecture=dict_cfg.architecture,
        d_in=d_in,
        d_sae=d_sae,
        d_out=d_out,
        k=dict_cfg.k,
        hook_name=dict_cfg.site,
        hook_name_out=dict_cfg.site_out if is_transcoder else None,
        skip=dict_cfg.skip,
        apply_b_dec_to_input=not is_transcoder,
        l1_coefficient=dict_cfg.l1_coefficient,
        l1_decoder_norm=dict_cfg.l1_decoder_norm,
        l0_coefficient=dict_cfg.l0_coefficient,
        jumprelu_bandwidth=dict_cfg.jumprelu_bandwidth,
        jumprelu_init_threshold=dict_cfg.jumprelu_init_threshold,
        jumprelu_init_density=dict_cfg.jumprelu_init_density,
        matryoshka_widths=dict_cfg.matryoshka_widths,
        aux_k=dict_cfg.aux_k,
        aux_coefficient=dict_cfg.aux_coefficient,
        decoder_init_norm=dict_cfg.decoder_init_norm,
        options=dict(dict_cfg.options),
    )
    cls.configure(meta)
    return meta


def build_dictionary(dict_cfg: DictionaryConfig, d_in: int, d_out: int | None = None) -> Dictionary:
    """A freshly initialised dictionary for `dict_cfg` on d_in-wide inputs (d_out for transcoders)."""
    meta = meta_from_config(dict_cfg, d_in, d_out)
    return dictionary_class(meta.architecture)(meta)
