"""A small functional forward pass over a `transformers` model's own weights (GPT-2, GPT-NeoX/Pythia,
Llama family).

Attribution needs to hold attention patterns and norm scales at their clean values, which HF code
cannot do from the outside (the softmax lives inside its attention function). So we re-run the
architecture here, reading the HF parameters directly: in `record` mode it stores every attention
pattern and norm scale of the pass, in `frozen` mode it reuses them (the model is then linear in
its residual stream), otherwise it is the plain model. Tests check the logits equal the HF model's.

Every TransformerLens site is routed through `hooks.site(name, x)`, and each MLP through
`hooks.mlp(layer, x)` (which may return a replacement output, e.g. a transcoder's), so the
replacement model needs no monkey-patching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.activations import ACT2FN

from monosemantic.utils.errors import MonosemanticError

SUPPORTED = {"gpt2": "gpt2", "gpt_neox": "neox", "llama": "llama", "mistral": "llama", "qwen2": "llama"}


class Hooks(Protocol):
    def site(self, name: str, x: Tensor) -> Tensor: ...

    def mlp(self, layer: int, x: Tensor) -> Tensor | None: ...


class NoHooks:
    def site(self, name: str, x: Tensor) -> Tensor:
        return x

    def mlp(self, layer: int, x: Tensor) -> Tensor | None:
        return None


@dataclass
class Freeze:
    """What one clean pass fixes: attention patterns [B, H, T, T], norm scales [B, T, 1], MLP gates.

    A `Freeze` filled by a `record` pass makes later `frozen` passes linear in the residual stream.
    `patterns_only` freezes attention alone (norms and MLPs recomputed), for interventions.
    """

    patterns: dict[int, Tensor] = field(default_factory=dict)
    scales: dict[str, Tensor] = field(default_factory=dict)
    gates: dict[int, Tensor] = field(default_factory=dict)
    patterns_only: bool = False


def _gate(pre: Tensor, act: Tensor) -> Tensor:
    """act(z) / z, with the limit slope at z == 0: holding it fixed makes the MLP linear."""
    safe = torch.where(pre == 0, torch.ones_like(pre), pre)
    return torch.where(pre == 0, torch.full_like(pre, 0.5), act / safe)


class FunctionalLM(nn.Module):
    """The subject model's forward pass, with optional recording/reuse of its nonlinear parts."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        model_type = hf.config.model_type
        if model_type not in SUPPORTED:
            raise MonosemanticError(
                f"circuits support model types {', '.join(SUPPORTED)}, not {model_type!r}; "
                "use a GPT-2, GPT-NeoX (Pythia) or Llama-style model"
            )
        self.hf = hf
        self.kind = SUPPORTED[model_type]
        self.config = hf.config
        self.base = hf.base_model
        self.blocks = self.base.h if self.kind == "gpt2" else self.base.layers
        # Pythia: attention and MLP both read resid_pre and add to it (no resid_mid)
        self.parallel = self.kind == "neox" and bool(getattr(hf.config, "use_parallel_residual", True))
        if self.kind != "gpt2" and not hasattr(self.base, "rotary_emb"):
            raise MonosemanticError(
                "this transformers version keeps rotary embeddings inside attention; upgrade transformers"
            )
        self.n_layers = len(self.blocks)
        self.d_model = int(hf.config.hidden_size)
        self.n_heads = int(hf.config.num_attention_heads)
        self.head_dim = int(getattr(hf.config, "head_dim", None) or self.d_model // self.n_heads)
        self.n_kv = int(getattr(hf.config, "num_key_value_heads", None) or self.n_heads)
        self.act = ACT2FN[hf.config.activation_function if self.kind == "gpt2" else hf.config.hidden_act]
        self.lm_head = hf.get_output_embeddings()

    @property
    def W_U(self) -> Tensor:  # noqa: N802 (TransformerLens name) [d_model, vocab]
        return self.lm_head.weight.T

    # ---- pieces --------------------------------------------------------------------------------
    def _norm(self, key: str, mod: nn.Module, x: Tensor, mode: str, freeze: Freeze | None) -> Tensor:
        """LayerNorm / RMSNorm whose scale (1/sigma) can be recorded and then held fixed."""
        frozen = mode == "frozen" and freeze is not None and not freeze.patterns_only
        if self.kind in ("gpt2", "neox"):  # LayerNorm
            eps = mod.eps
            if frozen:
                centred = x - x.mean(-1, keepdim=True)
                return centred * freeze.scales[key] * mod.weight + mod.bias
            if mode == "record":
                var = x.var(-1, keepdim=True, unbiased=False)
                freeze.scales[key] = torch.rsqrt(var + eps).detach()
            return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, eps)
        eps = mod.variance_epsilon
        if frozen:  # linear, so no float32 round trip (which would make float64 checks inexact)
            return mod.weight * (x * freeze.scales[key].to(x.dtype))
        xf = x.float()
        scale = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        if mode == "record":
            freeze.scales[key] = scale.detach()
        return mod.weight * (xf * scale).to(x.dtype)

    def _attention(self, layer: int, x: Tensor, mode: str, freeze: Freeze | None) -> Tensor:
        blk = self.blocks[layer]
        B, T, _ = x.shape
        if self.kind == "gpt2":
            attn = blk.attn
            q, k, v = attn.c_attn(x).split(self.d_model, dim=2)
            q, k, v = (t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
            scaling = attn.scaling
            out_proj = attn.c_proj
        elif self.kind == "neox":  # fused q,k,v laid out per head
            attn = blk.attention
            qkv = attn.query_key_value(x).view(B, T, self.n_heads, 3 * self.head_dim).transpose(1, 2)
            q, k, v = qkv.chunk(3, dim=-1)
            scaling = getattr(attn, "scaling", self.head_dim**-0.5)
            out_proj = attn.dense
        else:
            attn = blk.self_attn
            q = attn.q_proj(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
            rep = self.n_heads // self.n_kv
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
            scaling = attn.scaling
            out_proj = attn.o_proj
        if mode in ("frozen",) and freeze is not None and layer in freeze.patterns:
            pattern = freeze.patterns[layer]
        else:
            if self.kind != "gpt2":
                if self.kind == "neox":  # rotates only the first rotary_pct of each head
                    from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb
                else:
                    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

                pos = torch.arange(T, device=x.device)[None].expand(B, T)
                cos, sin = self.base.rotary_emb(x, pos)
                q, k = apply_rotary_pos_emb(q, k, cos, sin)
            scores = (q @ k.transpose(-1, -2)) * scaling
            mask = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            # GPT-2's softmax runs in the activation dtype, the others' in float32 (as in HF's eager code).
            soft_dtype = scores.dtype if self.kind == "gpt2" else torch.float32
            pattern = torch.softmax(scores.to(soft_dtype), dim=-1).to(v.dtype)
            if mode == "record":
                freeze.patterns[layer] = pattern.detach()
        if pattern.shape[0] == 1 and B > 1:  # one frozen pattern for the batch: never expand it B times
            H, hd = self.n_heads, self.head_dim
            z = pattern[0] @ v.permute(1, 2, 0, 3).reshape(H, T, B * hd)
            z = z.reshape(H, T, B, hd).permute(2, 0, 1, 3)
        else:
            z = pattern @ v
        z = z.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim)
        return out_proj(z)

    def _mlp(self, layer: int, x: Tensor, mode: str, freeze: Freeze | None) -> Tensor:
        """The MLP; `frozen` holds its activation gates at their clean values (so it is linear)."""
        mlp = self.blocks[layer].mlp
        frozen = mode == "frozen" and freeze is not None and not freeze.patterns_only
        if self.kind in ("gpt2", "neox"):
            fc, proj = (
                (mlp.c_fc, mlp.c_proj) if self.kind == "gpt2" else (mlp.dense_h_to_4h, mlp.dense_4h_to_h)
            )
            pre = fc(x)
            if frozen:
                return proj(pre * freeze.gates[layer])
            post = self.act(pre)
            if mode == "record":
                freeze.gates[layer] = _gate(pre, post).detach()
            return proj(post)
        up = mlp.up_proj(x)
        if frozen:
            return mlp.down_proj(freeze.gates[layer] * up)
        gate = self.act(mlp.gate_proj(x))
        if mode == "record":
            freeze.gates[layer] = gate.detach()
        return mlp.down_proj(gate * up)

    # ---- the pass ------------------------------------------------------------------------------
    def embed(self, input_ids: Tensor, hooks: Hooks) -> Tensor:
        """hook_embed (token embeddings), plus learned positions for GPT-2: the residual at layer 0."""
        if self.kind == "gpt2":
            tok = hooks.site("hook_embed", self.base.wte(input_ids))
            pos = torch.arange(input_ids.shape[-1], device=input_ids.device)
            return tok + self.base.wpe(pos)
        embed = self.base.embed_in if self.kind == "neox" else self.base.embed_tokens
        return hooks.site("hook_embed", embed(input_ids))

    def forward(
        self,
        input_ids: Tensor,
        hooks: Hooks | None = None,
        mode: str = "plain",
        freeze: Freeze | None = None,
        unembed: bool = True,
    ) -> Tensor:
        """Logits [B, T, vocab] (or the final normalised residual when `unembed` is False).

        mode: "plain" (the model), "record" (fill `freeze`), "frozen" (reuse `freeze`).
        """
        if mode not in ("plain", "record", "frozen"):
            raise ValueError(f"mode must be plain, record or frozen, not {mode!r}")
        if mode != "plain" and freeze is None:
            raise ValueError(f"mode {mode!r} needs a Freeze object")
        hooks = hooks or NoHooks()
        if input_ids.ndim == 1:
            input_ids = input_ids[None]
        h = self.embed(input_ids, hooks)
        for L, blk in enumerate(self.blocks):
            ln1, ln2 = (
                (blk.ln_1, blk.ln_2)
                if self.kind == "gpt2"
                else (
                    blk.input_layernorm,
                    blk.post_attention_layernorm,
                )
            )
            h = hooks.site(f"blocks.{L}.hook_resid_pre", h)
            a = self._attention(L, self._norm(f"ln1.{L}", ln1, h, mode, freeze), mode, freeze)
            a = hooks.site(f"blocks.{L}.hook_attn_out", a)
            if not self.parallel:
                h = hooks.site(f"blocks.{L}.hook_resid_mid", h + a)
            m_in = hooks.site(f"blocks.{L}.hook_mlp_in", self._norm(f"ln2.{L}", ln2, h, mode, freeze))
            m = hooks.mlp(L, m_in)
            if m is None:
                m = self._mlp(L, m_in, mode, freeze)
            m = hooks.site(f"blocks.{L}.hook_mlp_out", m)
            # HF's parallel block sums mlp + attn + residual in that order (bitwise equal logits)
            h = hooks.site(f"blocks.{L}.hook_resid_post", m + a + h if self.parallel else h + m)
        if self.kind == "gpt2":
            ln_f = self.base.ln_f
        else:
            ln_f = self.base.final_layer_norm if self.kind == "neox" else self.base.norm
        h = hooks.site("ln_final.hook_normalized", self._norm("ln_f", ln_f, h, mode, freeze))
        return self.lm_head(h) if unembed else h
