"""Where each TransformerLens site lives in a family's `transformers` modules, and its width.

A site is read with a forward hook on a module's output ("out") or a forward pre-hook on its first
input ("in"), then turned into TransformerLens' value by a `view`:

- None: the tensor itself.
- "norm_scale" / "norm_hat": from a norm module's input x, TransformerLens' `hook_scale`
  (sqrt(var(x) + eps) for LayerNorm, of the centred x; sqrt(mean(x^2) + eps) for RMSNorm) and
  `hook_normalized` (x_hat: the centred/scaled x, *before* the norm's weight and bias). Editing
  `hook_normalized` replaces the norm's output by weight * x_hat' (+ bias).
- "qkv:LAYOUT:q|k|v": one of q, k, v as [B, T, heads, head_dim] from a projection's output
  (separate projections, or a fused one in GPT-2's, GPT-NeoX's or Phi-3's layout); before rotary
  embeddings and q/k norms, as TransformerLens' `hook_q/k/v`.
- "heads": [B, T, heads * head_dim] -> [B, T, heads, head_dim] (`hook_z`, the output projection's input).
- "pattern": the attention weights [B, heads, T, T] the attention module returns (eager attention).
- "scores": the pre-softmax scores [B, heads, T, T] the attention module formed (`attn_scores.py`).
- "half:0" / "half:1": the first / second half of a fused gate|up projection's output (Phi-3).
- "router": a mixture-of-experts router's logits [B*T, experts] -> [B, T, experts].

Sites whose edit cannot be written back (scales, patterns, router logits) are capture-only.
Where a site is only an *input* to a module while the block keeps its own reference to the same
value (resid_mid in pre-LN blocks: `residual = h; h = ln_2(h)`), replacing that input would not
reach the residual branch; such sites carry `edit_via="attn_out"`: an edit adds
`fn(resid_mid) - resid_mid` to the attention output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from .families import Family

CAPTURE_ONLY = ("norm_scale", "pattern", "scores", "router")


@dataclass(frozen=True)
class SiteSpec:
    """Where one TransformerLens site lives: a module path, which side of it, and its view."""

    module: str
    side: Literal["in", "out"]
    edit_via: Literal["attn_out"] | None = None
    view: str | None = None

    @property
    def capture_only(self) -> bool:
        return self.view in CAPTURE_ONLY


@dataclass(frozen=True)
class FamilyLayout:
    """Module layout of one family: the blocks list, the per-block site table and the final norm."""

    blocks: str  # ModuleList path, relative to base_model
    sites: dict[str, SiteSpec]  # "hook_embed" and each block's sites by suffix, in forward order
    # Relative to the full model ({base} = its base_model_prefix); the ln_final.* sites read it.
    # The head is `get_output_embeddings()`.
    final_norm: str
    final_norm_sites: bool = True  # False where the "final norm" is not a plain norm (BERT's MLM transform)

    @property
    def block_kinds(self) -> tuple[str, ...]:
        """The per-block site suffixes (`hook_resid_pre`, `ln2.hook_normalized`, ...), in forward order."""
        return tuple(k for k in self.sites if k != "hook_embed")

    def final_sites(self) -> dict[str, SiteSpec]:
        """ln_final's sites: the final norm's scale, x_hat, and its output (the unembedding's input)."""
        if not self.final_norm_sites:
            return {}
        return {
            "ln_final.hook_scale": SiteSpec(self.final_norm, "in", view="norm_scale"),
            "ln_final.hook_normalized": SiteSpec(self.final_norm, "in", view="norm_hat"),
            "ln_final.hook_out": SiteSpec(self.final_norm, "out"),
        }


def _norm_sites(name: str, module: str) -> dict[str, SiteSpec]:
    return {
        f"{name}.hook_scale": SiteSpec(module, "in", view="norm_scale"),
        f"{name}.hook_normalized": SiteSpec(module, "in", view="norm_hat"),
    }


def _attention_sites(f: Family, attn: str) -> dict[str, SiteSpec]:
    if f.qkv == "separate":
        qkv = {f"attn.hook_{x}": SiteSpec(f"{attn}.{x}_proj", "out", view=f"qkv:separate:{x}") for x in "qkv"}
    else:
        fused = {"gpt2": "c_attn", "neox": "query_key_value", "phi3": "qkv_proj"}[f.qkv]
        qkv = {f"attn.hook_{x}": SiteSpec(f"{attn}.{fused}", "out", view=f"qkv:{f.qkv}:{x}") for x in "qkv"}
    return {
        **qkv,
        "attn.hook_attn_scores": SiteSpec(attn, "out", view="scores"),
        "attn.hook_pattern": SiteSpec(attn, "out", view="pattern"),
        "attn.hook_z": SiteSpec(f"{attn}.{f.o_proj}", "in", view="heads"),
    }


def _mlp_sites(f: Family, mlp: str) -> dict[str, SiteSpec]:
    if f.mlp == "moe":
        assert f.moe is not None
        return {"mlp.hook_router_logits": SiteSpec(f"{mlp}.{f.moe.router}", "out", view="router")}
    if f.mlp == "gated_fused":
        return {
            "mlp.hook_pre": SiteSpec(f"{mlp}.{f.mlp_in_proj}", "out", view="half:0"),
            "mlp.hook_pre_linear": SiteSpec(f"{mlp}.{f.mlp_in_proj}", "out", view="half:1"),
            "mlp.hook_post": SiteSpec(f"{mlp}.{f.mlp_out_proj}", "in"),
        }
    sites = {"mlp.hook_pre": SiteSpec(f"{mlp}.{f.mlp_in_proj}", "out")}
    if f.mlp_up_proj is not None:
        sites["mlp.hook_pre_linear"] = SiteSpec(f"{mlp}.{f.mlp_up_proj}", "out")
    sites["mlp.hook_post"] = SiteSpec(f"{mlp}.{f.mlp_out_proj}", "in")
    return sites


def decoder_sites(f: Family) -> dict[str, SiteSpec]:
    """The site table of a decoder block (pre-LN, Gemma's sandwich norms or OLMo 2's post-norms)."""
    b = f"{f.blocks}.{{L}}"
    attn, mlp = f"{b}.{f.attn}", f"{b}.mlp"
    attn_out = f"{b}.{f.attn_out or f.attn_post_norm or f.attn}"
    mlp_out = f"{b}.{f.mlp_out or f.mlp_post_norm or 'mlp'}"
    # the MLP branch's entry: ln2's input, or the MLP's own input where no norm precedes it
    branch = f"{b}.{f.ln2}" if f.ln2 is not None else mlp
    sites = {"hook_embed": SiteSpec(f.embed, "out"), "hook_resid_pre": SiteSpec(b, "in")}
    if f.ln1 is not None:
        sites |= _norm_sites("ln1", f"{b}.{f.ln1}")
    sites |= _attention_sites(f, attn)
    sites["hook_attn_out"] = SiteSpec(attn_out, "out")
    sites["hook_resid_mid"] = SiteSpec(branch, "in", edit_via="attn_out")
    sites["hook_mlp_in"] = SiteSpec(branch, "in")
    if f.ln2 is not None:
        sites |= _norm_sites("ln2", f"{b}.{f.ln2}")
    sites["mlp.hook_in"] = SiteSpec(mlp, "in")
    sites |= _mlp_sites(f, mlp)
    sites["hook_mlp_out"] = SiteSpec(mlp_out, "out")
    sites["hook_resid_post"] = SiteSpec(b, "out")
    return sites


def site_width(f: Family, config: Any, suffix: str) -> int | None:
    """Per-token width of a site (the last dims flattened), None where a site is not per token
    (attention scores and patterns)."""
    d = int(config.hidden_size)
    heads = int(getattr(config, "num_attention_heads", 1) or 1)
    hd = int(getattr(config, "head_dim", None) or d // heads)
    kv = int(getattr(config, "num_key_value_heads", None) or heads)
    if suffix.endswith("hook_scale"):
        return 1
    if suffix in ("attn.hook_attn_scores", "attn.hook_pattern"):
        return None
    if suffix in ("attn.hook_q", "attn.hook_z"):
        return heads * hd
    if suffix in ("attn.hook_k", "attn.hook_v"):
        return kv * hd
    if suffix in ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post"):
        return int(getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d)
    if suffix == "mlp.hook_router_logits":
        assert f.moe is not None
        return int(getattr(config, f.moe.n_experts))
    return d
