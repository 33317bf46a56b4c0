"""Build a dictionary from its config section; importing this registers every built-in kind.

Adding a kind: write one module with a `Dictionary` subclass and its config class, decorated by
`@register_dictionary("name", NameConfig)` (see `topk.py`, and docs/architectures.md), and import
it below (or anywhere before use).
"""

from __future__ import annotations

from monosemantic.config.dictionary import DictionaryConfig

# importing each kind registers it; ica, neurons, pca, random_basis are the fitted baselines
# (see fitted.py), clt and crosscoder the multi-site dictionaries (multi_site.py),
# lorsa the sequence-level attention dictionary
from . import (  # noqa: F401
    batchtopk,
    clt,
    crosscoder,
    gated,
    ica,
    jumprelu,
    lorsa,
    matryoshka,
    neurons,
    pca,
    random_basis,
    relu,
    topk,
)
from .base import _REGISTRY, Dictionary, DictionaryMeta, dictionary_class


def architectures() -> tuple[str, ...]:
    """Every registered architecture name (including ones registered after import)."""
    return tuple(sorted(_REGISTRY))


ARCHITECTURES = architectures()


def meta_from_config(dict_cfg: DictionaryConfig, d_in: int, d_out: int | None = None) -> DictionaryMeta:
    """The meta of a dictionary for `dict_cfg` on d_in-wide inputs (d_out for transcoders): the kind
    resolves its widths and sites and fills its defaults (`Dictionary.resolve`)."""
    return dictionary_class(dict_cfg.architecture).resolve(dict_cfg, d_in, d_out)


def build_dictionary(dict_cfg: DictionaryConfig, d_in: int, d_out: int | None = None) -> Dictionary:
    """A freshly initialised dictionary for `dict_cfg` on d_in-wide inputs (d_out for transcoders)."""
    meta = meta_from_config(dict_cfg, d_in, d_out)
    return dictionary_class(meta.architecture)(meta)
