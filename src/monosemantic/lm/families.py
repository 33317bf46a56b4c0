"""One entry per model family: its modules, its TransformerLens sites, how its blocks compute,
its tiny test configs and how it is loaded.

Everything that differs between families is read from here: `lm/` builds the site table (hooks
on the real `transformers` modules, see `family_sites.py`), `circuits/forward.py` re-runs the
same architecture with its nonlinear parts held fixed, `lm/tiny.py` builds tiny random test
models from `tiny`, `lm/params.py` counts parameters (experts included) for `plan`. Adding a family
is one `Family(...)` below.

Site names mean exactly what TransformerLens means (`docs/families.md` has the definitions):
`hook_mlp_in` is the residual entering the MLP branch (before ln2), `ln2.hook_normalized` the norm's
output before its weight and bias, `mlp.hook_in` the MLP module's own input (the norm's output
with its weight: circuit-tracer's and TransformerLens' bridge name for it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from monosemantic.utils.errors import MonosemanticError

from .family_sites import FamilyLayout, SiteSpec, decoder_sites

__all__ = ["FAMILY", "FAMILIES", "LAYOUTS", "MODEL_TYPES", "TINY", "Family", "FamilyLayout", "MoE",
           "SiteSpec", "family_of"]  # fmt: skip

# Tiny configs: a function of (vocab, d_model, ctx) giving transformers config kwargs (model_type
# included). Two layers, four heads, GQA where the family has it.
Tiny = Callable[[int, int, int], dict[str, Any]]


def _rope(vocab: int, d: int, ctx: int, **extra: Any) -> dict[str, Any]:
    return dict(vocab_size=vocab, hidden_size=d, intermediate_size=2 * d, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=ctx, **extra)  # fmt: skip


@dataclass(frozen=True)
class MoE:
    """A mixture-of-experts MLP: the router module (returns logits, top-k weights, top-k indices),
    the experts module (3-D weights, one slice per expert) and how an expert computes.

    `expert`: "gated" (Qwen3-MoE, Mixtral: gate|up = x W_gu[e]^T split in halves, act(gate) * up,
    then W_down[e]) or "gpt_oss" (x W_gu[e] + b, gate/up interleaved, clamped, (up + 1) * glu(gate)).
    """

    router: str = "gate"
    experts: str = "experts"
    expert: Literal["gated", "gpt_oss"] = "gated"
    n_experts: str = "num_experts"  # config keys
    top_k: str = "num_experts_per_tok"
    d_expert: str = "moe_intermediate_size"


@dataclass(frozen=True)
class Family:
    """A family's modules and what the functional forward pass needs to re-run its blocks.

    Block module names are relative to one block (None: the block has no such module). `norm`:
    "layer" (LayerNorm), "rms" (Llama's RMSNorm, w * x_hat) or "rms1p" (Gemma's, x_hat * (1 + w)).
    `qk_norm`: RMSNorm of queries and keys, per head ("head": Qwen 3, Gemma 3) or over all heads
    ("full": OLMo 2). Attention scaling, soft-capping, sliding windows, rotary bases and sinks are
    read from the model's own modules and config.
    """

    name: str
    model_types: tuple[str, ...]
    tiny: dict[str, Tiny]  # tiny-config variant name -> config kwargs (model_type included)
    blocks: str = "layers"  # ModuleList path, relative to base_model
    embed: str = "embed_tokens"  # relative to base_model (Gemma's scales its output by sqrt(d))
    final_norm: str = "{base}.norm"  # relative to the full model ({base} = base_model_prefix)
    pos_embed: str | None = None  # learned absolute positions added after hook_embed (GPT-2)
    norm: Literal["layer", "rms", "rms1p"] = "rms"
    ln1: str | None = "input_layernorm"
    ln2: str | None = "post_attention_layernorm"  # the norm in front of the MLP
    attn: str = "self_attn"
    attn_post_norm: str | None = None  # Gemma 2/3, OLMo 2: a sublayer's output is normed before the add
    mlp_post_norm: str | None = None
    attn_out: str | None = None  # module whose output is hook_attn_out when not attn/post-norm (dropouts)
    mlp_out: str | None = None
    qkv: Literal["gpt2", "neox", "phi3", "separate"] = "separate"
    o_proj: str = "o_proj"  # relative to the attention module
    qk_norm: Literal["head", "full"] | None = None
    mlp: Literal["fc", "gated", "gated_fused", "moe"] = "gated"
    mlp_in_proj: str = "gate_proj"  # hook_pre: its output (the gate for gated MLPs); relative to mlp
    mlp_up_proj: str | None = "up_proj"  # hook_pre_linear (gated MLPs)
    mlp_out_proj: str = "down_proj"  # hook_post: its input
    moe: MoE | None = None
    rotary: bool = True
    # Whether attention and MLP both read resid_pre, when the config does not say (HF's default).
    parallel_residual_default: bool = False
    circuits: bool = True  # the functional forward pass re-implements it
    causal: bool = True  # False for encoders (BERT): no next-token loss, no generation
    eager: bool = False  # load with eager attention (sdpa lacks its soft-capping or sinks)
    sites: dict[str, SiteSpec] | None = None  # a hand-written table (encoders, state-space models)
    final_norm_sites: bool = True  # ln_final.* sites (False: BERT's head transform is no plain norm)
    layout: FamilyLayout = field(init=False)

    def __post_init__(self) -> None:
        sites = self.sites if self.sites is not None else decoder_sites(self)
        object.__setattr__(
            self, "layout", FamilyLayout(self.blocks, sites, self.final_norm, self.final_norm_sites)
        )

    def parallel_residual(self, config: Any) -> bool:
        return bool(getattr(config, "use_parallel_residual", self.parallel_residual_default))


_GEMMA2_NORMS = dict(ln2="pre_feedforward_layernorm", attn_post_norm="post_attention_layernorm",
                     mlp_post_norm="post_feedforward_layernorm", norm="rms1p")  # fmt: skip

FAMILY: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "gpt2",
            ("gpt2",),
            {
                "gpt2": lambda v, d, c: dict(
                    model_type="gpt2",
                    vocab_size=v,
                    n_positions=c,
                    n_embd=d,
                    n_layer=2,
                    n_head=4,
                    bos_token_id=None,
                    eos_token_id=None,
                )
            },  # fmt: skip
            blocks="h",
            embed="wte",
            final_norm="{base}.ln_f",
            pos_embed="wpe",
            norm="layer",
            ln1="ln_1",
            ln2="ln_2",
            attn="attn",
            qkv="gpt2",
            o_proj="c_proj",
            mlp="fc",
            mlp_in_proj="c_fc",
            mlp_up_proj=None,
            mlp_out_proj="c_proj",
            rotary=False,
        ),  # fmt: skip
        # attention/MLP outputs are read after their dropouts: exactly what enters the residual sum.
        Family(
            "gpt_neox",
            ("gpt_neox",),
            {
                "gpt_neox": lambda v, d, c: dict(
                    model_type="gpt_neox",
                    vocab_size=v,
                    hidden_size=d,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    intermediate_size=4 * d,
                    max_position_embeddings=c,
                    rotary_pct=0.25,
                    use_parallel_residual=True,
                ),
                "gpt_neox_serial": lambda v, d, c: dict(
                    model_type="gpt_neox",
                    vocab_size=v,
                    hidden_size=d,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    intermediate_size=4 * d,
                    max_position_embeddings=c,
                    rotary_pct=0.25,
                    use_parallel_residual=False,
                ),
            },  # fmt: skip
            embed="embed_in",
            final_norm="{base}.final_layer_norm",
            norm="layer",
            attn="attention",
            attn_out="post_attention_dropout",
            mlp_out="post_mlp_dropout",
            qkv="neox",
            o_proj="dense",
            mlp="fc",
            mlp_in_proj="dense_h_to_4h",
            mlp_up_proj=None,
            mlp_out_proj="dense_4h_to_h",
            parallel_residual_default=True,
        ),  # fmt: skip
        # Mistral adds sliding-window attention, Qwen 2 q/k/v biases; Llama 3.1/3.2 scale their
        # rotary frequencies (rope_scaling "llama3"), which the model's own rotary module applies.
        Family(
            "llama",
            ("llama", "mistral", "qwen2"),
            {
                "llama": lambda v, d, c: _rope(v, d, c, model_type="llama"),
                "llama3": lambda v, d, c: _rope(
                    v,
                    d,
                    c,
                    model_type="llama",
                    rope_theta=500000.0,
                    rope_scaling={
                        "rope_type": "llama3",
                        "factor": 8.0,
                        "low_freq_factor": 1.0,
                        "high_freq_factor": 4.0,
                        "original_max_position_embeddings": 16,
                    },
                ),
                "mistral": lambda v, d, c: _rope(v, d, c, model_type="mistral", sliding_window=c),
                "qwen2": lambda v, d, c: _rope(v, d, c, model_type="qwen2"),
            },  # fmt: skip
        ),
        Family(
            "qwen3",
            ("qwen3",),
            {"qwen3": lambda v, d, c: _rope(v, d, c, model_type="qwen3", head_dim=d // 4)},
            qk_norm="head",
        ),
        Family(
            "phi3",
            ("phi3",),
            {"phi3": lambda v, d, c: _rope(v, d, c, model_type="phi3", pad_token_id=None)},
            attn_out="resid_attn_dropout",
            mlp_out="resid_mlp_dropout",
            qkv="phi3",
            mlp="gated_fused",
            mlp_in_proj="gate_up_proj",
            mlp_up_proj=None,
        ),  # fmt: skip
        # OLMo 2 normalises each sublayer's output (post-norm placement) and has no pre-norms: the
        # MLP reads the residual stream itself; q and k are RMS-normed over all heads.
        Family(
            "olmo2",
            ("olmo2",),
            {"olmo2": lambda v, d, c: _rope(v, d, c, model_type="olmo2")},
            ln1=None,
            ln2=None,
            attn_post_norm="post_attention_layernorm",
            mlp_post_norm="post_feedforward_layernorm",
            qk_norm="full",
        ),  # fmt: skip
        Family(
            "gemma",
            ("gemma",),
            {"gemma": lambda v, d, c: _rope(v, d, c, model_type="gemma", head_dim=d // 4)},
            norm="rms1p",
        ),
        # Gemma 2 normalises each sublayer's output before the residual add (TransformerLens reads
        # attn_out/mlp_out after those post-norms); its MLP input comes from pre_feedforward_layernorm.
        Family(
            "gemma2",
            ("gemma2",),
            {
                "gemma2": lambda v, d, c: _rope(
                    v,
                    d,
                    c,
                    model_type="gemma2",
                    head_dim=d // 4,
                    sliding_window=16,
                    query_pre_attn_scalar=d // 4,
                    attn_logit_softcapping=50.0,
                    final_logit_softcapping=30.0,
                )
            },  # fmt: skip
            eager=True,  # sdpa has no attention-logit soft-capping
            **_GEMMA2_NORMS,
        ),
        # Gemma 3: Gemma 2's norms plus q/k RMSNorm per head, sliding and global layers with two
        # rotary bases (rope_local_base_freq and rope_theta), soft-capping only where configured.
        Family(
            "gemma3",
            ("gemma3_text",),
            {
                "gemma3": lambda v, d, c: _rope(
                    v,
                    d,
                    c,
                    model_type="gemma3_text",
                    head_dim=d // 4,
                    sliding_window=4,
                    query_pre_attn_scalar=d // 4,
                    layer_types=["sliding_attention", "full_attention"],
                    rope_parameters={
                        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
                        "full_attention": {"rope_type": "default", "rope_theta": 1000000.0},
                    },
                )
            },  # fmt: skip
            qk_norm="head",
            **_GEMMA2_NORMS,
        ),
        Family(
            "qwen3_moe",
            ("qwen3_moe",),
            {
                "qwen3_moe": lambda v, d, c: _rope(
                    v,
                    d,
                    c,
                    model_type="qwen3_moe",
                    head_dim=d // 4,
                    num_experts=4,
                    num_experts_per_tok=2,
                    moe_intermediate_size=d,
                    norm_topk_prob=True,
                )
            },  # fmt: skip
            qk_norm="head",
            mlp="moe",
            moe=MoE(),
        ),  # fmt: skip
        Family(
            "mixtral",
            ("mixtral",),
            {
                "mixtral": lambda v, d, c: _rope(
                    v, d, c, model_type="mixtral", num_local_experts=4, num_experts_per_tok=2
                )
            },  # fmt: skip
            mlp="moe",
            moe=MoE(n_experts="num_local_experts", d_expert="intermediate_size"),
        ),
        # GPT-OSS: attention sinks (a learned logit per head in the softmax), alternating sliding and
        # full layers, q/k/v/o biases; its experts use a clamped SwiGLU with biases.
        Family(
            "gpt_oss",
            ("gpt_oss",),
            {
                "gpt_oss": lambda v, d, c: _rope(
                    v,
                    d,
                    c,
                    model_type="gpt_oss",
                    head_dim=d // 4,
                    num_local_experts=4,
                    num_experts_per_tok=2,
                    sliding_window=4,
                    layer_types=["sliding_attention", "full_attention"],
                )
            },  # fmt: skip
            mlp="moe",
            moe=MoE(
                router="router", expert="gpt_oss", n_experts="num_local_experts", d_expert="intermediate_size"
            ),
            eager=True,  # sdpa has no attention sinks
        ),  # fmt: skip
        # BERT is post-LN. As in TransformerLens' BERT: resid_mid = resid_pre + attn_out (the sum
        # entering attention's LayerNorm) is also the MLP input; resid_post = normalized resid_mid +
        # mlp_out (the sum entering the output LayerNorm); the block's output (the next resid_pre)
        # is `hook_normalized_resid_post`. Without an MLM head there is no ln_final and no unembedding.
        Family(
            "bert",
            ("bert",),
            {
                "bert": lambda v, d, c: dict(
                    model_type="bert",
                    vocab_size=v,
                    hidden_size=d,
                    num_hidden_layers=2,
                    num_attention_heads=4,
                    intermediate_size=4 * d,
                    max_position_embeddings=c,
                )
            },  # fmt: skip
            blocks="encoder.layer",
            embed="embeddings.word_embeddings",
            final_norm="cls.predictions.transform",
            pos_embed="embeddings.position_embeddings",
            norm="layer",
            circuits=False,
            causal=False,
            final_norm_sites=False,
            sites={
                "hook_embed": SiteSpec("embeddings.word_embeddings", "out"),
                "hook_resid_pre": SiteSpec("encoder.layer.{L}", "in"),
                "hook_attn_out": SiteSpec("encoder.layer.{L}.attention.output.dense", "out"),
                "hook_resid_mid": SiteSpec("encoder.layer.{L}.attention.output.LayerNorm", "in"),
                "hook_mlp_in": SiteSpec("encoder.layer.{L}.attention.output.LayerNorm", "in"),
                "mlp.hook_in": SiteSpec("encoder.layer.{L}.attention.output", "out"),
                "hook_mlp_out": SiteSpec("encoder.layer.{L}.output.dense", "out"),
                "hook_resid_post": SiteSpec("encoder.layer.{L}.output.LayerNorm", "in"),
                "hook_normalized_resid_post": SiteSpec("encoder.layer.{L}", "out"),
            },
        ),  # fmt: skip
        # Mamba (a state-space model, no attention and no MLP): each block is
        # resid_post = resid_pre + mixer(norm(resid_pre)). Sites in the same style: the mixer's
        # normalised input `mixer_in` (as mlp.hook_in) and its output `mixer_out` (as mlp_out).
        # Harvest, train, evaluate and analyze work on it; circuits do not (no functional pass).
        Family(
            "mamba",
            ("mamba",),
            {
                "mamba": lambda v, d, c: dict(
                    model_type="mamba",
                    vocab_size=v,
                    hidden_size=d,
                    num_hidden_layers=2,
                    state_size=8,
                    expand=2,
                    conv_kernel=4,
                )
            },  # fmt: skip
            embed="embeddings",
            final_norm="{base}.norm_f",
            circuits=False,
            sites={
                "hook_embed": SiteSpec("embeddings", "out"),
                "hook_resid_pre": SiteSpec("layers.{L}", "in"),
                "hook_mixer_in": SiteSpec("layers.{L}.norm", "out"),
                "hook_mixer_out": SiteSpec("layers.{L}.mixer", "out"),
                "hook_resid_post": SiteSpec("layers.{L}", "out"),
            },
        ),  # fmt: skip
    )
}

# transformers `model_type` -> the family whose layout and computation it shares.
MODEL_TYPES: dict[str, str] = {t: f.name for f in FAMILY.values() for t in f.model_types}
# tiny-config variant -> its family (the variants `lm/tiny.py` builds and the family tests run)
TINY: dict[str, str] = {v: f.name for f in FAMILY.values() for v in f.tiny}

FAMILIES = tuple(FAMILY)
LAYOUTS: dict[str, FamilyLayout] = {name: f.layout for name, f in FAMILY.items()}


def family_of(model_type: str) -> Family:
    """The family of a transformers `model_type`, or one line listing the supported ones."""
    if model_type not in MODEL_TYPES:
        raise MonosemanticError(
            f"unsupported model type {model_type!r}; supported: {', '.join(sorted(MODEL_TYPES))}"
        )
    return FAMILY[MODEL_TYPES[model_type]]
