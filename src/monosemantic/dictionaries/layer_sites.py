"""Layer globs in site names: `blocks.*.mlp.hook_in` names one site per layer of a multi-site dictionary.

A glob becomes concrete as a *stream key* that lists its layers, `blocks.{0,1,2,3}.mlp.hook_in`:
the trainer's activation stream serves that key as the per-token concatenation of the listed
sites, and the dictionary built for it reads the layers back from the key.

Model diffing pairs one site of two models: `{a,b}:blocks.2.hook_resid_post` is a stream key of two
sites, `blocks.2.hook_resid_post` of the `data.activations` cache (model A) and
`b:blocks.2.hook_resid_post` of the `data.activations_b` cache (model B, same token windows); a
crosscoder over it has one latent space over both models (`crosscoder.decoder_norm_share`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from monosemantic.activations.paired import MODEL_B
from monosemantic.utils.errors import ConfigError

# the hook: `hook_X` or a component's `ln2.hook_normalized`, `mlp.hook_in`, ...
_GLOB = re.compile(r"^blocks\.(\*|\{[0-9,]+\})\.((?:\w+\.)?hook_\w+)$")
_SITE = re.compile(r"^blocks\.(\d+)\.((?:\w+\.)?hook_\w+)$")
_PAIR = re.compile(r"^\{a,b\}:(blocks\.(\d+)\.(?:\w+\.)?hook_\w+)$")


def is_model_pair(site: str | None) -> bool:
    """`{a,b}:blocks.N.hook_X`: the same site of two models (model diffing)."""
    return site is not None and _PAIR.match(site) is not None


def is_layer_glob(site: str | None) -> bool:
    return site is not None and (_GLOB.match(site) is not None or _PAIR.match(site) is not None)


def glob_layers(site: str) -> list[int] | None:
    """The layers a stream key lists; None for a bare `*` (a model pair lists its layer twice)."""
    if (pair := _PAIR.match(site)) is not None:
        return [int(pair.group(2))] * 2
    m = _GLOB.match(site)
    if m is None:
        raise ConfigError(f"{site!r} is not a layer glob like blocks.*.mlp.hook_in")
    return None if m.group(1) == "*" else [int(v) for v in m.group(1)[1:-1].split(",") if v]


def stream_key(site: str, layers: Iterable[int]) -> str:
    """`blocks.*.hook_X` over `layers` -> `blocks.{0,1}.hook_X` (a model pair is its own key)."""
    if is_model_pair(site):
        return site
    m = _GLOB.match(site)
    if m is None:
        raise ConfigError(f"{site!r} is not a layer glob like blocks.*.mlp.hook_in")
    return f"blocks.{{{','.join(str(v) for v in layers)}}}.{m.group(2)}"


def expand(site: str, layers: Iterable[int] | None = None, available: Iterable[str] = ()) -> list[str]:
    """The concrete sites of a glob or stream key: its own layers, else `layers`, else every layer
    of `available` with that hook, in layer order; for a model pair, model A's site then model B's."""
    if (pair := _PAIR.match(site)) is not None:
        return [pair.group(1), MODEL_B + pair.group(1)]
    m = _GLOB.match(site)
    if m is None:
        return [site]
    hook = m.group(2)
    listed = glob_layers(site)
    chosen = listed if listed is not None else (list(layers) if layers is not None else None)
    if chosen is None:
        chosen = sorted(
            int(a.group(1)) for a in (_SITE.match(s) for s in available) if a and a.group(2) == hook
        )
        if not chosen:
            raise ConfigError(
                f"site {site!r}: no blocks.N.{hook} among the available sites; harvest them "
                "([sites].names) or list dictionary.layers"
            )
    return [f"blocks.{layer}.{hook}" for layer in chosen]
