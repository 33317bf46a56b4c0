"""Sub-folder names for a sweep, built from what differs between its dictionaries."""

from __future__ import annotations

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.config.site import Site
from monosemantic.dictionaries.base import dictionary_class
from monosemantic.dictionaries.types import Penalty

# Optional fields worth naming when they differ across the sweep: (field, short prefix).
DIFFERING = (("aux_k", "auxk"), ("aux_coefficient", "auxc"), ("target_l0", "l0t"),
             ("jumprelu_bandwidth", "bw"), ("matryoshka_widths", "mw"))  # fmt: skip


def width_label(d_sae: int) -> str:
    return f"{d_sae // 1024}k" if d_sae % 1024 == 0 else str(d_sae)


def _fmt(value: object) -> str:
    if isinstance(value, list):
        return "_".join(str(v) for v in value)
    return f"{value:g}" if isinstance(value, float) and value != int(value) else str(value)


def _label(site: str | None) -> str:
    return Site.parse(site).label if site is not None else "None"


def dictionary_name(
    cfg: DictionaryConfig,
    others: list[DictionaryConfig],
    d_sae: int,
    coefficient: float | None,
    penalty: Penalty | None = None,
) -> str:
    """E.g. `topk-k32-16k`, `jumprelu-l0c1.0-4k`, `tc-blocks.0.mlp.hook_in-topk-k16-2k`; `penalty`
    (the built dictionary's, else its class's) and its `coefficient` name the sparsity coefficient."""
    if cfg.name:
        return cfg.name
    parts: list[str] = []
    if cfg.site_out is not None:
        parts.append("skiptc" if cfg.skip else "tc")
    if len({o.site for o in others}) > 1 or cfg.site_out is not None:
        parts.append(_label(cfg.site))  # layer globs: no `*` in folder names
    if len({o.site_out for o in others}) > 1 and cfg.site_out is not None:
        parts.append(_label(cfg.site_out))
    parts += cfg.name_parts()
    penalty = penalty or dictionary_class(cfg.architecture).penalty
    if penalty is not None and coefficient is not None:
        parts.append(f"{penalty.short}{float(coefficient)}")
    mine, dumps = cfg.model_dump(), [o.model_dump() for o in others]
    for field, short in DIFFERING:  # among the dictionaries whose architecture has the field
        values = {repr(d[field]) for d in dumps if field in d}
        if len(values) > 1 and mine.get(field) is not None:
            parts.append(f"{short}{_fmt(mine[field])}")
    parts.append(width_label(d_sae))
    return "-".join(parts)


def unique_names(names: list[str]) -> list[str]:
    """Suffix `-1`, `-2`, ... onto repeated names so no two dictionaries share a folder."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        if names.count(name) > 1:
            seen[name] = seen.get(name, 0) + 1
            name = f"{name}-{seen[name]}"
        out.append(name)
    return out


def seed_name(name: str, seed: int) -> str:
    """The folder of one seed's copy of a dictionary (`train.seeds`): `topk-k16-seed0`, ...; the
    name without the suffix is its `seed_group`."""
    return f"{name}-seed{seed}"
