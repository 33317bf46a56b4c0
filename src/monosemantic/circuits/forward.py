"""A small functional forward pass over a `transformers` model's own weights, for every family whose
`lm.families.Family` entry says `circuits=True` (GPT-2, GPT-NeoX/Pythia, Llama 2/3/3.1/3.2, Mistral,
Qwen 2/3, Phi-3, OLMo 2, Gemma 1/2/3, and the mixtures of experts Qwen3-MoE, Mixtral, GPT-OSS).

Attribution needs to hold attention patterns and norm scales at their clean values, which HF code
cannot do from the outside (the softmax lives inside its attention function). So we re-run the
architecture here, reading the HF parameters directly: in `record` mode it stores every attention
pattern and norm scale of the pass, in `frozen` mode it reuses them (the model is then linear in
its residual stream), otherwise it is the plain model. Tests check the logits equal the HF model's.

Every TransformerLens site is routed through `hooks.site(name, x)`, and each MLP through
`hooks.mlp(layer, x)` (which may return a replacement output, e.g. a transcoder's), so the
replacement model needs no monkey-patching.

What differs between families (norm type, missing pre-norms, sublayer post-norms, q/k norms, fused
q/k/v layout, gated or fused or mixture-of-experts MLP, learned positions) comes from the family
table; what a model configures (attention scaling, soft-capping of attention and final logits,
sliding windows, rotary bases and scaling, attention sinks) from its own modules and config. A MoE
block's router choices are held like attention patterns (`moe.py`).
Attribution reads the final normalised residual, i.e. the logits before any final soft-capping.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosemantic.lm.families import FAMILY, MODEL_TYPES, family_of
from monosemantic.utils.errors import MonosemanticError

from .moe import moe_forward

SUPPORTED = tuple(t for t, f in MODEL_TYPES.items() if FAMILY[f].circuits)


class Hooks(Protocol):
    def site(self, name: str, x: Tensor) -> Tensor: ...

    def wants(self, name: str) -> bool: ...

    def mlp(self, layer: int, x: Tensor) -> Tensor | None: ...


class NoHooks:
    def site(self, name: str, x: Tensor) -> Tensor:
        return x

    def wants(self, name: str) -> bool:
        """Whether the read-only sites computed off the main path (a norm's x_hat) are needed."""
        return False

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
    gates: dict[int, Tensor | dict[int, Tensor]] = field(default_factory=dict)  # MoE: per selected expert
    # mixtures of experts: per layer the router's top-k (weights [N, k], indices [N, k]), held like patterns
    routes: dict[int, tuple[Tensor, Tensor]] = field(default_factory=dict)
    patterns_only: bool = False


def _gate(pre: Tensor, act: Tensor) -> Tensor:
    """act(z) / z, with the limit slope at z == 0: holding it fixed makes the MLP linear."""
    safe = torch.where(pre == 0, torch.ones_like(pre), pre)
    return torch.where(pre == 0, torch.full_like(pre, 0.5), act / safe)


class _FrozenLayerNorm(torch.autograd.Function):
    """(x - mean(x)) * sw + b with sw = frozen 1/sigma x weight: linear in x. Autograd through the
    plain expression spends five passes over [B, T, d] per norm in every attribution backward
    pass (two products, the centring's negation, the mean's division, the sum); this needs two."""

    @staticmethod
    def forward(ctx, x: Tensor, sw: Tensor, b: Tensor) -> Tensor:
        ctx.save_for_backward(sw)
        return (x - x.mean(-1, keepdim=True)) * sw + b

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        (sw,) = ctx.saved_tensors
        g = grad * sw
        return g - g.mean(-1, keepdim=True), None, None


class FunctionalLM(nn.Module):
    """The subject model's forward pass, with optional recording/reuse of its nonlinear parts."""

    def __init__(self, hf: nn.Module) -> None:
        super().__init__()
        model_type = hf.config.model_type
        if model_type not in SUPPORTED:
            raise MonosemanticError(
                f"circuits support model types {', '.join(SUPPORTED)}, not {model_type!r}; "
                "use a model of a family whose entry in lm/families.py says circuits=True"
            )
        self.hf = hf
        self.family = family_of(model_type)
        self.config = hf.config
        self.base = hf.base_model
        self.blocks = self.base.get_submodule(self.family.layout.blocks)
        # Pythia: attention and MLP both read resid_pre and add to it (no resid_mid)
        self.parallel = self.family.parallel_residual(hf.config)
        if self.family.rotary and not hasattr(self.base, "rotary_emb"):
            raise MonosemanticError(
                "this transformers version keeps rotary embeddings inside attention; upgrade transformers"
            )
        self.n_layers = len(self.blocks)
        self.d_model = int(hf.config.hidden_size)
        self.n_heads = int(hf.config.num_attention_heads)
        self.head_dim = int(getattr(hf.config, "head_dim", None) or self.d_model // self.n_heads)
        self.n_kv = int(getattr(hf.config, "num_key_value_heads", None) or self.n_heads)
        self.attn_softcap = getattr(hf.config, "attn_logit_softcapping", None)
        self.final_softcap = getattr(hf.config, "final_logit_softcapping", None)
        self.lm_head = hf.get_output_embeddings()
        rotary = getattr(self.base, "rotary_emb", None)
        self._rotary_by_type = (
            rotary is not None and "layer_type" in inspect.signature(rotary.forward).parameters
        )

    @property
    def W_U(self) -> Tensor:  # noqa: N802 (TransformerLens name) [d_model, vocab]
        return self.lm_head.weight.T

    def sliding_window(self, layer: int) -> int | None:
        """Keys further back than this many positions are masked (Mistral; Gemma 2's local layers)."""
        window = getattr(self.config, "sliding_window", None)
        types = getattr(self.config, "layer_types", None)
        if types is not None and types[layer] != "sliding_attention":
            return None
        return int(window) if window else None

    # ---- pieces --------------------------------------------------------------------------------
    def _norm(self, key: str, mod: nn.Module, x: Tensor, mode: str, freeze: Freeze | None) -> Tensor:
        """LayerNorm / RMSNorm whose scale (1/sigma) can be recorded and then held fixed."""
        frozen = mode == "frozen" and freeze is not None and not freeze.patterns_only
        kind = self.family.norm
        if kind == "layer":
            eps = mod.eps
            if frozen:
                return _FrozenLayerNorm.apply(x, freeze.scales[key] * mod.weight, mod.bias)
            if mode == "record":
                var = x.var(-1, keepdim=True, unbiased=False)
                freeze.scales[key] = torch.rsqrt(var + eps).detach()
            return F.layer_norm(x, (x.shape[-1],), mod.weight, mod.bias, eps)
        eps = getattr(mod, "variance_epsilon", None) or mod.eps
        if frozen:  # linear, so no float32 round trip (which would make float64 checks inexact)
            w = 1.0 + mod.weight if kind == "rms1p" else mod.weight
            return w * (x * freeze.scales[key].to(x.dtype))
        xf = x.float()
        scale = torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        if mode == "record":
            freeze.scales[key] = scale.detach()
        if kind == "rms1p":  # Gemma: (x_hat * (1 + w)) in float32, then cast
            return ((xf * scale) * (1.0 + mod.weight.float())).type_as(x)
        return mod.weight * (xf * scale).to(x.dtype)

    def _norm_hat(self, key: str, mod: nn.Module, x: Tensor, mode: str, freeze: Freeze | None) -> Tensor:
        """TransformerLens' `hook_normalized`: the norm's x_hat, before its weight and bias (with the
        scale held in `frozen` mode, so it is linear in x)."""
        frozen = mode == "frozen" and freeze is not None and not freeze.patterns_only
        if self.family.norm == "layer":
            xc = x - x.mean(-1, keepdim=True)
            if frozen:
                return xc * freeze.scales[key]
            return xc / (xc.pow(2).mean(-1, keepdim=True) + mod.eps).sqrt()
        if frozen:
            return x * freeze.scales[key].to(x.dtype)
        eps = getattr(mod, "variance_epsilon", None) or mod.eps
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)

    def _qkv(
        self, layer: int, attn: nn.Module, x: Tensor, mode: str, freeze: Freeze | None
    ) -> tuple[Tensor, Tensor, Tensor, nn.Module]:
        """q, k, v [B, H, T, head_dim] (k, v repeated over grouped heads) and the output projection."""
        B, T, _ = x.shape
        layout = self.family.qkv
        if layout == "gpt2":
            q, k, v = attn.c_attn(x).split(self.d_model, dim=2)  # 3 x (B, T, d)
            q, k, v = (
                t.view(B, T, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v)
            )  # (B, H, T, hd)
            return q, k, v, attn.c_proj
        if layout == "neox":  # fused q,k,v laid out per head
            qkv = attn.query_key_value(x).view(B, T, self.n_heads, 3 * self.head_dim).transpose(1, 2)
            q, k, v = qkv.chunk(3, dim=-1)  # (B, H, T, hd)
            return q, k, v, attn.dense
        H, kv, hd = self.n_heads, self.n_kv, self.head_dim
        if layout == "phi3":  # fused rows: q (H * hd) | k (kv * hd) | v (kv * hd)
            q, k, v = attn.qkv_proj(x).split([H * hd, kv * hd, kv * hd], dim=-1)
        else:
            q, k, v = attn.q_proj(x), attn.k_proj(x), attn.v_proj(x)
        if self.family.qk_norm == "full":  # OLMo 2: RMSNorm over all heads, before the head split
            q, k = (
                self._qk_norm(f"q_norm.{layer}", attn.q_norm, q, mode, freeze),
                self._qk_norm(f"k_norm.{layer}", attn.k_norm, k, mode, freeze),
            )
        q, k, v = q.view(B, T, H, hd), k.view(B, T, kv, hd), v.view(B, T, kv, hd)
        if self.family.qk_norm == "head":  # Qwen 3, Gemma 3: RMSNorm of each head
            q, k = (
                self._qk_norm(f"q_norm.{layer}", attn.q_norm, q, mode, freeze),
                self._qk_norm(f"k_norm.{layer}", attn.k_norm, k, mode, freeze),
            )
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H or H_kv, T, hd)
        o_proj = attn.get_submodule(self.family.o_proj)
        return q, k.repeat_interleave(H // kv, dim=1), v.repeat_interleave(H // kv, dim=1), o_proj

    def _qk_norm(self, key: str, mod: nn.Module, x: Tensor, mode: str, freeze: Freeze | None) -> Tensor:
        """A query or key RMSNorm: the model's own module, its scale recorded in `record` mode and held
        in `frozen` mode, where q and k are computed only for QK attribution (which needs them linear)."""
        eps = getattr(mod, "variance_epsilon", None) or mod.eps
        if mode == "frozen" and freeze is not None and key in freeze.scales:
            w = 1.0 + mod.weight if self.family.norm == "rms1p" else mod.weight
            return w * (x * freeze.scales[key].to(x.dtype))
        if mode == "record":
            freeze.scales[key] = torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + eps).detach()
        return mod(x)

    def _values(self, attn: nn.Module, x: Tensor) -> tuple[Tensor, nn.Module]:
        """v [B, H, T, hd] alone, for a frozen pattern: q and k would be computed and back-propagated
        through (zeros, for the fused layouts) for nothing; attribution's backward passes are mostly this."""
        B, T, _ = x.shape
        layout, H, hd = self.family.qkv, self.n_heads, self.head_dim
        if layout == "gpt2":  # Conv1D: weight [d, 3d], columns q | k | v
            d = self.d_model
            v = torch.addmm(attn.c_attn.bias[2 * d :], x.reshape(B * T, -1), attn.c_attn.weight[:, 2 * d :])
            return v.view(B, T, H, hd).transpose(1, 2), attn.c_proj
        if layout == "neox":  # Linear rows laid out per head as (q, k, v)
            lin = attn.query_key_value
            W = lin.weight.view(H, 3, hd, -1)[:, 2].reshape(H * hd, -1)
            b = lin.bias.view(H, 3, hd)[:, 2].reshape(H * hd) if lin.bias is not None else None
            return F.linear(x, W, b).view(B, T, H, hd).transpose(1, 2), attn.dense
        if layout == "phi3":  # the v rows of the fused projection
            lin, start = attn.qkv_proj, (H + self.n_kv) * hd
            v = F.linear(x, lin.weight[start:], lin.bias[start:] if lin.bias is not None else None)
        else:
            v = attn.v_proj(x)
        v = v.view(B, T, self.n_kv, hd).transpose(1, 2)
        return v.repeat_interleave(H // self.n_kv, dim=1), attn.get_submodule(self.family.o_proj)

    def queries_keys(
        self, layer: int, x: Tensor, mode: str = "plain", freeze: Freeze | None = None
    ) -> tuple[Tensor, Tensor, Tensor, nn.Module]:
        """q, k (rotary applied, k repeated over grouped heads) and v [B, H, T, hd], and the output
        projection, from the normalised attention input x [B, T, d]. Linear in x given the frozen
        norm scales, which is what QK attribution (`circuits.qk`) pushes its components through."""
        attn = self.blocks[layer].get_submodule(self.family.attn)
        q, k, v, out_proj = self._qkv(layer, attn, x, mode, freeze)
        if self.family.rotary:
            cos, sin = self._rotary(layer, x)
            # the model's own function (partial rotary in GPT-NeoX and Phi-3, GPT-OSS's halves)
            q, k = importlib.import_module(type(attn).__module__).apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v, out_proj

    def score_scale(self, layer: int) -> float:
        """The factor on q . k before the softmax (and before any soft-capping)."""
        attn = self.blocks[layer].get_submodule(self.family.attn)
        return getattr(attn, "scaling", self.head_dim**-0.5)

    def attention_mask(self, layer: int, T: int, device: torch.device) -> Tensor:
        """[T, T] bool: which keys (columns) each query (row) may attend to (causal, windowed)."""
        i = torch.arange(T, device=device)
        mask = i[None, :] <= i[:, None]  # (T, T): key position <= query position
        window = self.sliding_window(layer)
        if window is not None:
            mask &= i[None, :] > i[:, None] - window
        return mask

    def attn_in(self, layer: int, h: Tensor, mode: str = "plain", freeze: Freeze | None = None) -> Tensor:
        """The attention's input: ln1 of the residual h [B, T, d] (scale held in `frozen` mode); the
        residual itself where the family has no pre-norm (OLMo 2)."""
        if self.family.ln1 is None:
            return h
        return self._norm(f"ln1.{layer}", self.blocks[layer].get_submodule(self.family.ln1), h, mode, freeze)

    def _attention(self, layer: int, x: Tensor, mode: str, freeze: Freeze | None) -> tuple[Tensor, nn.Module]:
        """Each head's mixed values z [B, T, H, hd] (TransformerLens's hook_z) and the output projection."""
        attn = self.blocks[layer].get_submodule(self.family.attn)
        B, T, _ = x.shape
        if mode == "frozen" and freeze is not None and layer in freeze.patterns:
            pattern = freeze.patterns[layer]
            v, out_proj = self._values(attn, x)
        else:
            q, k, v, out_proj = self.queries_keys(layer, x, mode, freeze)
            scores = (q @ k.transpose(-1, -2)) * self.score_scale(layer)  # (B, H, T, T)
            if self.attn_softcap is not None:  # Gemma 2, before the mask as in HF
                scores = torch.tanh(scores / self.attn_softcap) * self.attn_softcap
            mask = self.attention_mask(layer, T, x.device)
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            pattern = self._softmax(attn, scores).to(v.dtype)
            if mode == "record":
                freeze.patterns[layer] = pattern.detach()
        if pattern.shape[0] == 1 and B > 1:  # one frozen pattern for the batch: never expand it B times
            H, hd = self.n_heads, self.head_dim
            z = pattern[0] @ v.permute(1, 2, 0, 3).reshape(H, T, B * hd)
            z = z.reshape(H, T, B, hd).permute(2, 0, 1, 3)
        else:
            z = pattern @ v  # (B, H, T, hd)
        return z.transpose(1, 2), out_proj  # (B, T, H, hd)

    def _rotary(self, layer: int, x: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin of the rotary embedding for `layer`: Gemma 3's rotary module takes the layer's type
        (sliding layers use the local base frequency, global ones rope_theta)."""
        B, T = x.shape[:2]
        pos = torch.arange(T, device=x.device)[None].expand(B, T)
        if self._rotary_by_type:
            return self.base.rotary_emb(x, pos, self.config.layer_types[layer])
        return self.base.rotary_emb(x, pos)

    def _softmax(self, attn: nn.Module, scores: Tensor) -> Tensor:
        """The attention softmax as HF's eager code computes it: GPT-2's in the activation dtype,
        GPT-OSS's with one learned sink logit per head (dropped after the softmax), the others' in
        float32."""
        sinks = getattr(attn, "sinks", None)
        if sinks is not None:
            B, H, T, _ = scores.shape
            logits = torch.cat(
                [scores, sinks.reshape(1, -1, 1, 1).expand(B, H, T, 1).to(scores.dtype)], dim=-1
            )
            logits = logits - logits.max(dim=-1, keepdim=True).values
            return torch.softmax(logits, dim=-1, dtype=logits.dtype)[..., :-1]
        soft_dtype = scores.dtype if self.family.qkv == "gpt2" else torch.float32
        return torch.softmax(scores.to(soft_dtype), dim=-1)

    def _mlp(self, layer: int, x: Tensor, mode: str, freeze: Freeze | None) -> Tensor:
        """The MLP; `frozen` holds its activation gates at their clean values (so it is linear)."""
        mlp = self.blocks[layer].mlp
        frozen = mode == "frozen" and freeze is not None and not freeze.patterns_only
        if self.family.mlp == "fc":
            fc, proj = (
                (mlp.c_fc, mlp.c_proj) if hasattr(mlp, "c_fc") else (mlp.dense_h_to_4h, mlp.dense_4h_to_h)
            )
            pre = fc(x)
            if frozen:
                return proj(pre * freeze.gates[layer])
            post = mlp.act(pre)
            if mode == "record":
                freeze.gates[layer] = _gate(pre, post).detach()
            return proj(post)
        if self.family.mlp == "moe":
            return moe_forward(self, layer, mlp, x, mode, freeze)
        if self.family.mlp == "gated_fused":  # Phi-3: gate | up from one projection
            g, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
            act = mlp.activation_fn
        else:
            g, up, act = mlp.gate_proj(x), mlp.up_proj(x), mlp.act_fn
        if frozen:
            return mlp.down_proj(freeze.gates[layer] * up)
        gate = act(g)
        if mode == "record":
            freeze.gates[layer] = gate.detach()
        return mlp.down_proj(gate * up)

    def _post_norm(self, name: str | None, key: str, blk: nn.Module, x: Tensor, mode: str, freeze) -> Tensor:
        """Gemma 2's normalisation of a sublayer's output before the residual add (else identity)."""
        return x if name is None else self._norm(key, blk.get_submodule(name), x, mode, freeze)

    # ---- the pass ------------------------------------------------------------------------------
    def embed(self, input_ids: Tensor, hooks: Hooks) -> Tensor:
        """hook_embed (token embeddings, scaled in Gemma's embedding module), plus learned positions
        for GPT-2: the residual at layer 0."""
        tok = hooks.site("hook_embed", self.base.get_submodule(self.family.embed)(input_ids))
        if self.family.pos_embed is None:
            return tok
        pos = torch.arange(input_ids.shape[-1], device=input_ids.device)
        return tok + self.base.get_submodule(self.family.pos_embed)(pos)

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
        fam = self.family
        h = self.embed(input_ids, hooks)
        for L, blk in enumerate(self.blocks):
            ln2 = blk.get_submodule(fam.ln2) if fam.ln2 is not None else None
            h = hooks.site(f"blocks.{L}.hook_resid_pre", h)
            if fam.ln1 is not None and hooks.wants(f"blocks.{L}.ln1.hook_normalized"):  # read-only: x_hat
                ln1 = blk.get_submodule(fam.ln1)
                hooks.site(
                    f"blocks.{L}.ln1.hook_normalized", self._norm_hat(f"ln1.{L}", ln1, h, mode, freeze)
                )
            z, out_proj = self._attention(L, self.attn_in(L, h, mode, freeze), mode, freeze)
            z = hooks.site(f"blocks.{L}.attn.hook_z", z)  # head loadings cut and read attention here
            a = out_proj(z.flatten(2))  # (B, T, H * hd) -> (B, T, d)
            a = self._post_norm(fam.attn_post_norm, f"attn_post.{L}", blk, a, mode, freeze)
            a = hooks.site(f"blocks.{L}.hook_attn_out", a)
            if not self.parallel:
                h = hooks.site(f"blocks.{L}.hook_resid_mid", h + a)
            m_in = hooks.site(f"blocks.{L}.hook_mlp_in", h)  # the residual entering the MLP branch
            if ln2 is not None and hooks.wants(f"blocks.{L}.ln2.hook_normalized"):  # read-only: x_hat
                hooks.site(
                    f"blocks.{L}.ln2.hook_normalized", self._norm_hat(f"ln2.{L}", ln2, m_in, mode, freeze)
                )
            normed = m_in if ln2 is None else self._norm(f"ln2.{L}", ln2, m_in, mode, freeze)
            normed = hooks.site(f"blocks.{L}.mlp.hook_in", normed)
            m = hooks.mlp(L, normed)  # a transcoder replaces the MLP and its post-norm (-> hook_mlp_out)
            if m is None:
                m = self._mlp(L, normed, mode, freeze)
                m = self._post_norm(fam.mlp_post_norm, f"mlp_post.{L}", blk, m, mode, freeze)
            m = hooks.site(f"blocks.{L}.hook_mlp_out", m)
            # HF's parallel block sums mlp + attn + residual in that order (bitwise equal logits)
            h = hooks.site(f"blocks.{L}.hook_resid_post", m + a + h if self.parallel else h + m)
        ln_f = self.hf.get_submodule(
            self.family.layout.final_norm.replace("{base}", self.hf.base_model_prefix)
        )
        if hooks.wants("ln_final.hook_normalized"):
            hooks.site("ln_final.hook_normalized", self._norm_hat("ln_f", ln_f, h, mode, freeze))
        h = hooks.site("ln_final.hook_out", self._norm("ln_f", ln_f, h, mode, freeze))
        return self.unembed(h) if unembed else h

    def unembed(self, h: Tensor) -> Tensor:
        """Logits from the final normalised residual, soft-capped where the model does (Gemma 2;
        the cap is monotone, and attribution targets the logits before it)."""
        logits = self.lm_head(h)
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits
