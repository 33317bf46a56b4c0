"""TransformerLens hook names mapped onto plain `transformers` modules, one table per family.

A site is read with a forward hook on a module's output ("out") or a forward pre-hook on its
first input ("in"). Module paths are relative to `hf.base_model` with `{L}` for the block index; the final norm and
head are relative to the full model (an encoder loaded without its MLM head has neither).
Every tensor read this way is exactly the tensor the model itself computes, so capturing never
changes numerics.

Where a site is only an *input* to a module while the block keeps its own reference to the
same value (resid_mid in pre-LN blocks: `residual = h; h = ln_2(h)`), replacing that input
would not reach the residual branch. Such sites carry `edit_via="attn_out"`: an edit is applied
by adding `fn(resid_mid) - resid_mid` to the attention output, which moves the residual stream
and everything downstream of it.

Parallel-residual blocks (GPT-NeoX/Pythia with `use_parallel_residual`) have no resid_mid:
attention and MLP both read resid_pre (TransformerLens omits the hook too).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Literal

from monosemantic.utils.errors import MonosemanticError

FAMILIES = ("gpt2", "gpt_neox", "llama", "gemma", "gemma2", "bert")

# transformers `model_type` -> family whose module layout it shares.
MODEL_TYPES: dict[str, str] = {
    "gpt2": "gpt2",
    "gpt_neox": "gpt_neox",
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "llama",
    "qwen3": "llama",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "bert": "bert",
}

BLOCK_KINDS = ("resid_pre", "attn_out", "resid_mid", "mlp_in", "mlp_out", "resid_post")


@dataclass(frozen=True)
class SiteSpec:
    """Where one TransformerLens site lives: a module path and which side of it."""

    module: str
    side: Literal["in", "out"]
    edit_via: Literal["attn_out"] | None = None


@dataclass(frozen=True)
class FamilyLayout:
    """Module layout of one family: the blocks list, the site table and the final norm."""

    blocks: str  # ModuleList path, relative to base_model
    sites: dict[str, SiteSpec]  # "hook_embed" and the per-block kinds, relative to base_model
    # Relative to the full model ({base} = its base_model_prefix); ln_final.hook_normalized is its
    # output. The head is `get_output_embeddings()`.
    final_norm: str


def _decoder(blocks: str, embed: str, attn: str, ln2: str, mlp: str) -> dict[str, SiteSpec]:
    b = blocks + ".{L}"
    return {
        "hook_embed": SiteSpec(embed, "out"),
        "resid_pre": SiteSpec(b, "in"),
        "attn_out": SiteSpec(f"{b}.{attn}", "out"),
        "resid_mid": SiteSpec(f"{b}.{ln2}", "in", edit_via="attn_out"),
        "mlp_in": SiteSpec(f"{b}.{ln2}", "out"),
        "mlp_out": SiteSpec(f"{b}.{mlp}", "out"),
        "resid_post": SiteSpec(b, "out"),
    }


_LLAMA = _decoder("layers", "embed_tokens", "self_attn", "post_attention_layernorm", "mlp")

LAYOUTS: dict[str, FamilyLayout] = {
    "gpt2": FamilyLayout("h", _decoder("h", "wte", "attn", "ln_2", "mlp"), "{base}.ln_f"),
    # attention/MLP outputs are read after their dropouts: exactly what enters the residual sum.
    "gpt_neox": FamilyLayout(
        "layers",
        _decoder(
            "layers",
            "embed_in",
            "post_attention_dropout",
            "post_attention_layernorm",
            "post_mlp_dropout",
        ),
        "{base}.final_layer_norm",
    ),
    "llama": FamilyLayout("layers", _LLAMA, "{base}.norm"),
    "gemma": FamilyLayout("layers", _LLAMA, "{base}.norm"),
    # Gemma 2 normalises each sublayer's output before the residual add (TransformerLens reads
    # attn_out/mlp_out after those post-norms) and its MLP input comes from pre_feedforward_layernorm.
    "gemma2": FamilyLayout(
        "layers",
        _decoder(
            "layers",
            "embed_tokens",
            "post_attention_layernorm",
            "pre_feedforward_layernorm",
            "post_feedforward_layernorm",
        ),
        "{base}.norm",
    ),
    # BERT is post-LN: resid_mid = LayerNorm(resid_pre + attn_out) is itself the MLP input, so
    # resid_mid and mlp_in read the same tensor; attn_out/mlp_out are the dense projections
    # before the add & norm. Without an MLM head there is no ln_final and no unembedding.
    "bert": FamilyLayout(
        "encoder.layer",
        {
            "hook_embed": SiteSpec("embeddings.word_embeddings", "out"),
            "resid_pre": SiteSpec("encoder.layer.{L}", "in"),
            "attn_out": SiteSpec("encoder.layer.{L}.attention.output.dense", "out"),
            "resid_mid": SiteSpec("encoder.layer.{L}.attention.output", "out"),
            "mlp_in": SiteSpec("encoder.layer.{L}.attention.output", "out"),
            "mlp_out": SiteSpec("encoder.layer.{L}.output.dense", "out"),
            "resid_post": SiteSpec("encoder.layer.{L}", "out"),
        },
        "cls.predictions.transform",
    ),
}

_BLOCK_SITE = re.compile(r"^blocks\.(\d+)\.hook_(\w+)$")


def site_names(n_layers: int, parallel_residual: bool = False, has_head: bool = True) -> list[str]:
    """All sites in forward order: hook_embed, each block's sites, ln_final.hook_normalized."""
    kinds = [k for k in BLOCK_KINDS if not (parallel_residual and k == "resid_mid")]
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
