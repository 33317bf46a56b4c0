"""TransformerLens site names: listing, parsing, and errors that name the closest valid site.

The tables of where each site lives in each family's modules are in `families.py`.
"""

from __future__ import annotations

import difflib
import re

from monosemantic.utils.errors import MonosemanticError

from .families import FAMILIES, LAYOUTS, MODEL_TYPES, FamilyLayout, SiteSpec

__all__ = ["FAMILIES", "LAYOUTS", "MODEL_TYPES", "FamilyLayout", "SiteSpec", "BLOCK_KINDS", "site_names",
           "parse_site", "final_norm_path", "unknown_site_error"]  # fmt: skip

BLOCK_KINDS = ("resid_pre", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")

_BLOCK_SITE = re.compile(r"^blocks\.(\d+)\.hook_(\w+)$")


def site_names(
    n_layers: int,
    parallel_residual: bool = False,
    has_head: bool = True,
    kinds: tuple[str, ...] = BLOCK_KINDS,
) -> list[str]:
    """All sites in forward order: hook_embed, each block's sites (`kinds`: the family's, a
    transformer's by default), ln_final.hook_normalized."""
    kinds = tuple(k for k in kinds if not (parallel_residual and k == "resid_mid"))
    names = ["hook_embed"]
    names += [f"blocks.{layer}.hook_{kind}" for layer in range(n_layers) for kind in kinds]
    if has_head:
        names.append("ln_final.hook_normalized")
    return names


def parse_site(site: str) -> tuple[str, int | None]:
    """`blocks.3.hook_mlp_out` -> ("mlp_out", 3); `hook_embed` -> ("hook_embed", None)."""
    m = _BLOCK_SITE.match(site)
    if m:
        return m.group(2), int(m.group(1))
    return site, None


def final_norm_path(model: object, layout: FamilyLayout) -> str:
    return layout.final_norm.replace("{base}", getattr(model, "base_model_prefix", ""))


def unknown_site_error(site: str, valid: list[str]) -> MonosemanticError:
    """One line naming the bad site, the closest valid ones first, then the rest."""
    near = difflib.get_close_matches(site, valid, n=3, cutoff=0.0)
    rest = [v for v in valid if v not in near]
    shown = near + rest[:8]
    more = f", ... ({len(valid)} in all)" if len(valid) > len(shown) else ""
    return MonosemanticError(f"unknown site {site!r}; valid sites: {', '.join(shown)}{more}")
