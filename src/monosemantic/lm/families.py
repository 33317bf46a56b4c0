"""One entry per model family: where its TransformerLens sites live and how its blocks compute.

`lm/` reads the site table (hooks on the real `transformers` modules); `circuits/forward.py`
reads the rest to re-run the same architecture with its nonlinear parts held fixed. Adding a
family is one `Family(...)` below plus its `model_type`s in `MODEL_TYPES`.

Sites: a site is read with a forward hook on a module's output ("out") or a forward pre-hook on
its first input ("in"). Module paths are relative to `hf.base_model` with `{L}` for the block
index; the final norm is relative to the full model. Where a site is only an *input* to a module
while the block keeps its own reference to the same value (resid_mid in pre-LN blocks:
`residual = h; h = ln_2(h)`), replacing that input would not reach the residual branch; such sites
carry `edit_via="attn_out"`: an edit adds `fn(resid_mid) - resid_mid` to the attention output.
Parallel-residual blocks (GPT-NeoX/Pythia with `use_parallel_residual`) have no resid_mid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from monosemantic.utils.errors import MonosemanticError


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

    @property
    def block_kinds(self) -> tuple[str, ...]:
        """The per-block site kinds, in forward order (the table's order)."""
        return tuple(k for k in self.sites if k != "hook_embed")


@dataclass(frozen=True)
class Family:
    """A family's site layout plus what the functional forward pass needs to re-run its blocks.

    Block module names are relative to one block. `norm`: "layer" (LayerNorm), "rms" (Llama's
    RMSNorm, w * x_hat) or "rms1p" (Gemma's, x_hat * (1 + w)). Attention scaling, logit
    soft-capping and sliding windows are read from the model's own modules and config.
    """

    name: str
    layout: FamilyLayout
    embed: str  # token embedding, relative to base_model (Gemma's scales its output by sqrt(d))
    pos_embed: str | None = None  # learned absolute positions added after hook_embed (GPT-2)
    norm: Literal["layer", "rms", "rms1p"] = "rms"
    ln1: str = "input_layernorm"
    ln2: str = "post_attention_layernorm"  # the norm in front of the MLP
    attn: str = "self_attn"
    attn_post_norm: str | None = None  # Gemma 2: each sublayer's output is normalised before the add
    mlp_post_norm: str | None = None
    qkv: Literal["gpt2", "neox", "separate"] = "separate"
    mlp: Literal["fc", "gated"] = "gated"
    rotary: bool = True
    # Whether attention and MLP both read resid_pre, when the config does not say (HF's default).
    parallel_residual_default: bool = False
    circuits: bool = True  # the functional forward pass re-implements it
    causal: bool = True  # False for encoders (BERT): no next-token loss, no generation

    def parallel_residual(self, config: Any) -> bool:
        return bool(getattr(config, "use_parallel_residual", self.parallel_residual_default))


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


_LLAMA = FamilyLayout(
    "layers",
    _decoder("layers", "embed_tokens", "self_attn", "post_attention_layernorm", "mlp"),
    "{base}.norm",
)

FAMILY: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "gpt2",
            FamilyLayout("h", _decoder("h", "wte", "attn", "ln_2", "mlp"), "{base}.ln_f"),
            embed="wte",
            pos_embed="wpe",
            norm="layer",
            ln1="ln_1",
            ln2="ln_2",
            attn="attn",
            qkv="gpt2",
            mlp="fc",
            rotary=False,
        ),
        # attention/MLP outputs are read after their dropouts: exactly what enters the residual sum.
        Family(
            "gpt_neox",
            FamilyLayout(
                "layers",
                _decoder(
                    "layers",
                    "embed_in",
                    "post_attention_dropout",
                    "post_attention_layernorm",
                    "post_mlp_dropout",
                ),  # fmt: skip
                "{base}.final_layer_norm",
            ),
            embed="embed_in",
            norm="layer",
            attn="attention",
            qkv="neox",
            mlp="fc",
            parallel_residual_default=True,
        ),
        Family("llama", _LLAMA, embed="embed_tokens"),
        Family("gemma", _LLAMA, embed="embed_tokens", norm="rms1p"),
        # Gemma 2 normalises each sublayer's output before the residual add (TransformerLens reads
        # attn_out/mlp_out after those post-norms); its MLP input comes from pre_feedforward_layernorm.
        Family(
            "gemma2",
            FamilyLayout(
                "layers",
                _decoder(
                    "layers",
                    "embed_tokens",
                    "post_attention_layernorm",
                    "pre_feedforward_layernorm",
                    "post_feedforward_layernorm",
                ),  # fmt: skip
                "{base}.norm",
            ),
            embed="embed_tokens",
            norm="rms1p",
            ln2="pre_feedforward_layernorm",
            attn_post_norm="post_attention_layernorm",
            mlp_post_norm="post_feedforward_layernorm",
        ),
        # BERT is post-LN: resid_mid = LayerNorm(resid_pre + attn_out) is itself the MLP input, so
        # resid_mid and mlp_in read the same tensor; attn_out/mlp_out are the dense projections
        # before the add & norm. Without an MLM head there is no ln_final and no unembedding.
        Family(
            "bert",
            FamilyLayout(
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
            embed="embeddings.word_embeddings",
            norm="layer",
            circuits=False,
            causal=False,
        ),
        # Mamba (a state-space model, no attention and no MLP): each block is
        # resid_post = resid_pre + mixer(norm(resid_pre)). Sites in the same style: the mixer's
        # normalised input `mixer_in` (as mlp_in) and its output `mixer_out` (as mlp_out).
        # Harvest, train, evaluate and analyze work on it; circuits do not (no functional pass).
        Family(
            "mamba",
            FamilyLayout(
                "layers",
                {
                    "hook_embed": SiteSpec("embeddings", "out"),
                    "resid_pre": SiteSpec("layers.{L}", "in"),
                    "mixer_in": SiteSpec("layers.{L}.norm", "out"),
                    "mixer_out": SiteSpec("layers.{L}.mixer", "out"),
                    "resid_post": SiteSpec("layers.{L}", "out"),
                },
                "{base}.norm_f",
            ),
            embed="embeddings",
            circuits=False,
        ),
    )
}

# transformers `model_type` -> the family whose layout and computation it shares.
MODEL_TYPES: dict[str, str] = {
    "gpt2": "gpt2",
    "gpt_neox": "gpt_neox",
    "llama": "llama",
    "mistral": "llama",  # + sliding-window attention (config.sliding_window)
    "qwen2": "llama",  # + q/k/v biases (the projections carry them) and optional sliding layers
    "qwen3": "llama",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "bert": "bert",
    "mamba": "mamba",
}

FAMILIES = tuple(FAMILY)
LAYOUTS: dict[str, FamilyLayout] = {name: f.layout for name, f in FAMILY.items()}


def family_of(model_type: str) -> Family:
    """The family of a transformers `model_type`, or one line listing the supported ones."""
    if model_type not in MODEL_TYPES:
        raise MonosemanticError(
            f"unsupported model type {model_type!r}; supported: {', '.join(sorted(MODEL_TYPES))}"
        )
    return FAMILY[MODEL_TYPES[model_type]]
