"""TransformerLens site names: listing, parsing, and errors that name the closest valid site.

The tables of where each site lives in each family's modules are built in `family_sites.py` from
the entries of `families.py`.
"""

from __future__ import annotations

import dataclasses
import difflib

from monosemantic.config.site import Site, SiteError
from monosemantic.utils.errors import MonosemanticError

from .families import FAMILIES, LAYOUTS, MODEL_TYPES
from .family_sites import FamilyLayout, SiteSpec

__all__ = ["FAMILIES", "LAYOUTS", "MODEL_TYPES", "FamilyLayout", "SiteSpec", "BLOCK_KINDS", "site_names",
           "parse_site", "final_norm_path", "unknown_site_error"]  # fmt: skip

# A transformer block's residual-stream sites (the sites circuits can splice dictionaries at).
BLOCK_KINDS = ("resid_pre", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")


def site_names(
    n_layers: int,
    parallel_residual: bool = False,
    has_head: bool = True,
    kinds: tuple[str, ...] = tuple(f"hook_{k}" for k in BLOCK_KINDS),
    final: tuple[str, ...] = ("ln_final.hook_scale", "ln_final.hook_normalized", "ln_final.hook_out"),
) -> list[str]:
    """All sites in forward order: hook_embed, each block's sites (`kinds`: suffixes such as
    `hook_resid_pre` or `ln2.hook_normalized`), then the final norm's sites (with a head)."""
    kinds = tuple(k for k in kinds if not (parallel_residual and k == "hook_resid_mid"))
    names = ["hook_embed"]
    names += [f"blocks.{layer}.{kind}" for layer in range(n_layers) for kind in kinds]
    if has_head:
        names += list(final)
    return names


def _block_site(site: str) -> Site | None:
    """The parsed site when it is one block site of one model (`config/site.py`), else None."""
    try:
        parsed = Site.parse(site)
    except SiteError:
        return None
    return parsed if parsed.block and not parsed.is_group and parsed.models == ("a",) else None


def parse_site(site: str) -> tuple[str, int | None]:
    """`blocks.3.hook_mlp_out` -> ("mlp_out", 3); `blocks.3.ln2.hook_normalized` ->
    ("ln2.hook_normalized", 3); `hook_embed` -> ("hook_embed", None)."""
    parsed = _block_site(site)
    if parsed is None:
        return site, None
    return parsed.hook.removeprefix("hook_"), parsed.layer


def site_suffix(site: str) -> str:
    """`blocks.3.hook_mlp_out` -> `hook_mlp_out`; a site outside the blocks is its own suffix."""
    parsed = _block_site(site)
    return site if parsed is None else parsed.hook


def final_norm_path(model: object, layout: FamilyLayout) -> str:
    return layout.final_norm.replace("{base}", getattr(model, "base_model_prefix", ""))


def unknown_site_error(site: str, valid: list[str]) -> MonosemanticError:
    """One line naming the bad site, the closest valid ones first, then the rest."""
    near = difflib.get_close_matches(site, valid, n=3, cutoff=0.0)
    rest = [v for v in valid if v not in near]
    shown = near + rest[:8]
    more = f", ... ({len(valid)} in all)" if len(valid) > len(shown) else ""
    return MonosemanticError(f"unknown site {site!r}; valid sites: {', '.join(shown)}{more}")


# ---- files written before the site names meant exactly what TransformerLens means ------------
# New caches and checkpoints record HOOK_NAMES (manifest `hook_names`, cfg.json metadata
# `hook_names`). Older ones used `blocks.L.hook_mlp_in` for the MLP's normalised input (now
# `blocks.L.mlp.hook_in`; TransformerLens' `hook_mlp_in` is the residual before ln2) and
# `ln_final.hook_normalized` for the final norm's output (now `ln_final.hook_out`; TransformerLens'
# is x_hat, before the weight). BERT's old resid_mid / resid_post were its LayerNorm outputs.
HOOK_NAMES = "transformer_lens"
_OLD_SUFFIX = {"hook_mlp_in": "mlp.hook_in"}
_OLD_BERT_SUFFIX = {"hook_mlp_in": "mlp.hook_in", "hook_resid_mid": "mlp.hook_in",
                    "hook_resid_post": "hook_normalized_resid_post"}  # fmt: skip
_OLD_GLOBAL = {"ln_final.hook_normalized": "ln_final.hook_out"}


def migrate_site(site: str, model_type: str | None = None) -> str:
    """The current name of a site written under the old names (layer globs and stream keys too)."""
    if site in _OLD_GLOBAL:
        return _OLD_GLOBAL[site]
    try:
        parsed = Site.parse(site)
    except SiteError:
        return site
    table = _OLD_BERT_SUFFIX if model_type == "bert" else _OLD_SUFFIX
    if not parsed.block or parsed.hook not in table:
        return site
    return str(dataclasses.replace(parsed, hook=table[parsed.hook]))


def migration_note(renamed: dict[str, str], where: str) -> str:
    """One line saying which old names were read as which new ones, and why."""
    pairs = ", ".join(f"{old} -> {new}" for old, new in list(renamed.items())[:4])
    more = f" (+{len(renamed) - 4} more)" if len(renamed) > 4 else ""
    return (
        f"{where} predates TransformerLens-exact hook names; reading its sites as {pairs}{more} "
        "(same activations, today's names)"
    )
