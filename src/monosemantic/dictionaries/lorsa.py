"""Lorsa: Low-Rank Sparse Attention (He et al. 2025, "Towards Understanding the Nature of
Attention with Low-Rank Sparse Decomposition"), a dictionary of attention heads.

Lorsa replaces one attention layer by many heads, each with a rank-1 OV circuit: head i reads a
scalar value v_i = x w_V_i + b_V_i at every position, mixes it over earlier positions with its
attention pattern, and writes the result along one output direction w_O_i. Query/key projections
(W_Q, W_K: `n_qk_heads` heads of width `d_qk_head`, rotary where the model family has it) are
shared by groups of d_sae / n_qk_heads consecutive OV heads, as in OpenMOSS's Language-Model-SAEs.
Per token, the k heads with the largest outputs z_i are kept (TopK over heads): the head
activations are the latents.

    A_g     = softmax(causal((x W_Q_g + b_Q_g) rot (x W_K_g + b_K_g)^T * scale))   [T, T]
    z_i     = A_{g(i)} (x w_V_i + b_V_i)                                           [T]
    f       = ReLU(TopK_k(z))                                                      [T, d_sae]
    y_hat   = f W_O + b_D                                                          [T, d_out]

It reads an attention layer's input (`blocks.L.ln1.hook_normalized`, what Language-Model-SAEs
trains on) and writes its output `blocks.L.hook_attn_out`. Because attention mixes positions,
its input is whole sequences: `encode(x)` takes x [..., T, d_in] (one row per position of a
window, in order), and the trainer serves it sequence windows (`sequence_level`). Dead heads are
revived by AuxK on their raw pre-activations z, as for TopK SAEs (`auxk.py`).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.utils.errors import ConfigError, DataError

from .activations import TopKSettings
from .auxk import auxk_loss, dead_for_aux
from .base import Dictionary, DictionaryMeta, LossOutput, TrainStepState, default_aux_k, register_dictionary


class LorsaConfig(TopKSettings, DictionaryConfig):
    REFUSED = frozenset({"target_l0", "skip", "layers"})

    n_qk_heads: int = Field(
        4, gt=0, description="Lorsa: query/key heads; d_sae OV heads share them in equal groups."
    )
    d_qk_head: int = Field(16, gt=0, description="Lorsa: width of each query/key head.")
    rotary_base: float | None = Field(
        None,
        gt=0,
        description="Lorsa: rotary embedding base (the model's rope_theta) for families with rotary "
        "position embeddings (llama, qwen, gemma); unset for learned positions (gpt2).",
    )
    rotary_dim: int | None = Field(
        None, gt=0, description="Lorsa: dimensions of each query/key head that rotate (default d_qk_head)."
    )
    attn_scale: float | None = Field(
        None, gt=0, description="Lorsa: multiplier of the query-key scores (default 1/sqrt(d_qk_head))."
    )

    @model_validator(mode="after")
    def _needs_k(self) -> LorsaConfig:
        if self.k is None:
            raise ValueError("architecture 'lorsa' needs k (active heads per token); set dictionary.k")
        if self.rotary_dim is not None and (self.rotary_dim > self.d_qk_head or self.rotary_dim % 2):
            raise ValueError(
                f"rotary_dim={self.rotary_dim} must be even and at most d_qk_head={self.d_qk_head}"
            )
        return self

    def name_parts(self) -> list[str]:
        return [self.architecture, f"k{self.k}", f"qk{self.n_qk_heads}"]


def rotate(x: Tensor, base: float, dim: int) -> Tensor:
    """Rotary position embedding (GPT-NeoX / Llama layout: the first half of the rotating dims pairs
    with the second half) of x [..., heads, T, d] at positions 0..T-1."""
    T = x.shape[-2]
    inv = base ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=x.device) / dim)
    angles = torch.arange(T, dtype=torch.float32, device=x.device)[:, None] * inv  # [T, dim/2]
    cos, sin = angles.cos().repeat(1, 2).to(x.dtype), angles.sin().repeat(1, 2).to(x.dtype)
    r, rest = x[..., :dim], x[..., dim:]
    half = torch.cat([-r[..., dim // 2 :], r[..., : dim // 2]], -1)
    return torch.cat([r * cos + half * sin, rest], -1)


@register_dictionary("lorsa", LorsaConfig)
class Lorsa(Dictionary):
    """Low-rank sparse attention: d_sae rank-1 OV heads over n_qk_heads shared QK heads."""

    unit_norm_decoder = True
    # Trains on normalised activations (the default): attention outputs range over orders of
    # magnitude between models and layers, and a fixed learning rate must suit them all.
    # Attention mixes positions: the trainer serves whole sequence windows (rows in order).
    sequence_level: ClassVar[bool] = True
    saelens_name = "lorsa"

    @classmethod
    def configure(cls, meta: DictionaryMeta) -> None:
        super().configure(meta)
        s = meta.settings
        if meta.d_sae % s.n_qk_heads:
            raise ConfigError(
                f"lorsa needs d_sae ({meta.d_sae}) divisible by n_qk_heads ({s.n_qk_heads}) so OV heads "
                "share QK heads in equal groups; change one of them"
            )
        if s.k > meta.d_sae:
            raise ConfigError(f"k={s.k} is larger than d_sae={meta.d_sae}; choose k <= {meta.d_sae}")
        if s.aux_k is None:
            s.fill(aux_k=default_aux_k(meta.d_in, meta.d_sae))
        meta.apply_b_dec_to_input = False

    @classmethod
    def sparse_training(cls, cfg: DictionaryConfig) -> bool:
        return True

    @classmethod
    def saelens_architecture(cls, meta: DictionaryMeta) -> str:
        return "lorsa"  # it reads one site and writes another, but is no transcoder

    @classmethod
    def saelens_fields(cls, meta: DictionaryMeta) -> dict[str, Any]:
        s = meta.settings
        return {"k": s.k, "n_qk_heads": s.n_qk_heads, "d_qk_head": s.d_qk_head, "rotary_base": s.rotary_base}

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        s = self.settings
        d_in, H, d_out, G, dq = cfg.d_in, cfg.d_sae, cfg.d_out, s.n_qk_heads, s.d_qk_head
        self.W_Q = nn.Parameter(torch.empty(G, d_in, dq))
        self.b_Q = nn.Parameter(torch.zeros(G, dq))
        self.W_K = nn.Parameter(torch.empty(G, d_in, dq))
        self.b_K = nn.Parameter(torch.zeros(G, dq))
        self.W_V = nn.Parameter(torch.empty(H, d_in))
        self.b_V = nn.Parameter(torch.zeros(H))
        self.W_O = nn.Parameter(torch.empty(H, d_out))
        self.b_D = nn.Parameter(torch.zeros(d_out))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Xavier-uniform QK, uniform(+-1/sqrt(d_sae)) values, unit random output directions
        (the initialisation of Language-Model-SAEs, whose output rows are then normalised)."""
        for w in (self.W_Q, self.W_K):
            bound = math.sqrt(6 / (w.shape[1] + w.shape[2]))
            w.uniform_(-bound, bound)
        self.W_V.uniform_(-1 / math.sqrt(self.d_sae), 1 / math.sqrt(self.d_sae))
        o = torch.randn_like(self.W_O)
        self.W_O.copy_(o / o.norm(dim=1, keepdim=True))

    # ---- the pipeline's names for the decoder ----------------------------------------------------
    @property
    def W_dec(self) -> Tensor:
        """[d_sae, d_out]: each head's output direction (what analysis and steering read)."""
        return self.W_O

    @property
    def b_dec(self) -> Tensor:
        return self.b_D

    @property
    def group_size(self) -> int:
        return self.d_sae // self.settings.n_qk_heads

    # ---- the model ------------------------------------------------------------------------------
    def _sequences(self, x: Tensor) -> Tensor:
        x = self._check_input(x, self.d_in)
        if x.dim() < 2:
            raise DataError(f"lorsa reads sequences [..., T, {self.d_in}]; got shape {tuple(x.shape)}")
        return x

    def patterns(self, x: Tensor) -> Tensor:
        """Attention patterns [..., n_qk_heads, T, T] (query, key) of each QK head on x [..., T, d_in]."""
        x = self._sequences(x)
        s = self.settings
        q = torch.einsum("...td,gde->...gte", x, self.W_Q) + self.b_Q[:, None, :]
        k = torch.einsum("...td,gde->...gte", x, self.W_K) + self.b_K[:, None, :]
        if s.rotary_base is not None:
            dim = s.rotary_dim or s.d_qk_head
            q, k = rotate(q, s.rotary_base, dim), rotate(k, s.rotary_base, dim)
        scale = s.attn_scale if s.attn_scale is not None else 1 / math.sqrt(s.d_qk_head)
        scores = (q @ k.transpose(-1, -2)).float() * scale
        T = x.shape[-2]
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        return scores.masked_fill(~causal, float("-inf")).softmax(-1).to(x.dtype)

    def head_outputs(self, x: Tensor, pattern: Tensor | None = None) -> Tensor:
        """Every head's pre-activation z [..., T, d_sae]: its value mixed by its group's pattern."""
        x = self._sequences(x)
        A = self.patterns(x) if pattern is None else pattern  # [..., G, T, T]
        v = x @ self.W_V.T + self.b_V  # [..., T, H]
        v = v.unflatten(-1, (self.settings.n_qk_heads, self.group_size)).movedim(-3, -2)  # [..., G, T, g]
        z = A @ v  # [..., G, T, g]
        return z.movedim(-3, -2).flatten(-2)

    def top_keys(self, x: Tensor, head: int, position: int, n: int = 3) -> tuple[Tensor, Tensor]:
        """The n key positions head `head` attends to most from query `position` of one window
        x [T, d_in], and their attention weights (what a head's top example shows beside its value)."""
        if x.dim() != 2 or not 0 <= head < self.d_sae or not 0 <= position < x.shape[0]:
            raise DataError(
                f"top_keys takes one window [T, {self.d_in}], a head < {self.d_sae} and a position < T; "
                f"got x {tuple(x.shape)}, head {head}, position {position}"
            )
        row = self.patterns(x)[head // self.group_size, position, : position + 1]
        weights, keys = row.topk(min(n, position + 1))
        return keys, weights

    def attended_keys(self, x: Tensor, latents: Tensor, positions: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """`top_keys` for many (head, query position) pairs of one window x [T, d_in] at once (one
        pattern computation): keys and weights [m, min(n, T)], future keys with weight 0 last."""
        rows = self.patterns(x)[latents.long() // self.group_size, positions.long()]  # [m, T]
        weights, keys = rows.topk(min(n, x.shape[0]), dim=-1)
        return keys, weights

    def _select(self, z: Tensor) -> Tensor:
        vals, idx = z.topk(self.settings.k, dim=-1)
        return torch.zeros_like(z).scatter(-1, idx, F.relu(vals))

    def encode(self, x: Tensor) -> Tensor:
        """Head activations f [..., T, d_sae]: ReLU of each position's k largest head outputs."""
        return self._select(self.head_outputs(x))

    def decode(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        if f.shape[-1] != self.d_sae:
            raise DataError(f"latents have width {f.shape[-1]} but this Lorsa has d_sae={self.d_sae}")
        return f.to(self.W_O.dtype) @ self.W_O + self.b_D

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        """x [n_seq, T, d_in] (or [n_seq*T, d_in] rows of whole windows with `state.seq_len` = T),
        y the attention output at the same positions; the AuxK term revives dead heads."""
        state = state or TrainStepState()
        seq_len = state.seq_len
        rows = x.dim() == 2 and seq_len is not None
        if rows:
            if x.shape[0] % seq_len:
                raise DataError(f"lorsa got {x.shape[0]} rows, not whole windows of {seq_len} positions")
            x, y = x.reshape(-1, seq_len, x.shape[-1]), y.reshape(-1, seq_len, y.shape[-1])
        z = self.head_outputs(x)
        f = self._select(z)
        y_hat = self.decode(f)
        mse = self.mse_per_token(y_hat, y)
        loss, terms = mse, {"mse_per_token": mse.detach()}
        dead = dead_for_aux(state.dead_mask, self.settings.aux_coefficient, z.device)
        if dead is not None:
            aux_k = min(self.settings.aux_k, int(dead.sum()))
            dz = z.masked_fill(~dead, float("-inf"))
            vals, idx = dz.topk(aux_k, dim=-1)
            aux_f = torch.zeros_like(z).scatter(-1, idx, vals)
            aux = auxk_loss(aux_f @ self.W_O, y - y_hat, int(dead.sum()), self.settings.aux_k)
            loss = loss + self.settings.aux_coefficient * aux
            terms["auxk"] = aux.detach()
        if rows:
            y_hat, f = y_hat.flatten(0, 1), f.flatten(0, 1)
        return LossOutput(loss, y_hat, f=f, terms=terms)

    def encoder_dirs(self, idx: Tensor) -> Tensor:
        """[n, d_in]: each head's value direction (its pre-activation is this, mixed over positions)."""
        return self.W_V[idx]

    # ---- the pipeline's site views ----------------------------------------------------------------
    def site_decoders(self) -> Tensor:
        return self.W_O[:, None, :]

    def site_encoders(self) -> Tensor:
        return self.W_V.T

    # ---- hooks for the trainer ------------------------------------------------------------------
    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        self.W_O /= self.W_O.norm(dim=1, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self, rows_are_unit: bool = False) -> None:
        grad = self.W_O.grad
        if grad is None:
            return
        unit = self.W_O / self.W_O.norm(dim=1, keepdim=True).clamp_min(1e-8)
        grad -= (grad * unit).sum(dim=1, keepdim=True) * unit

    @torch.no_grad()
    def fold_decoder_norm(self) -> None:
        """Unit output directions: a head's output is linear in its value, so scaling w_V_i, b_V_i by
        ||w_O_i|| and w_O_i by its inverse keeps each head's contribution; the TopK ranking changes
        with it unless the rows were unit already, as training keeps them (then this is exact)."""
        norms = self.W_O.norm(dim=1).clamp_min(1e-8)
        self.W_V *= norms[:, None]
        self.b_V *= norms
        self.W_O /= norms[:, None]

    @torch.no_grad()
    def initialize_b_dec(self, value: Tensor) -> None:
        self.b_D.copy_(value.to(self.b_D))

    @torch.no_grad()
    def fold_activation_scale(
        self, scale_in: float | Tensor, scale_out: float | Tensor | None = None
    ) -> None:
        """Trained on (s_in x, s_out y), run on raw (x, y): every map reading x absorbs s_in (so the
        patterns and head outputs are unchanged, biases included), the output divides by s_out."""
        s_out = scale_in if scale_out is None else scale_out
        for w in (self.W_Q, self.W_K, self.W_V):
            w *= scale_in
        self.W_O /= s_out
        self.b_D /= s_out

    def latent_parameters(self) -> dict[str, int]:
        return {"W_V": 0, "b_V": 0, "W_O": 0}

    # ---- serialisation: the output map under the SAELens names W_dec / b_dec ----------------------
    SAVED_AS: ClassVar[dict[str, str]] = {"W_O": "W_dec", "b_D": "b_dec"}

    def weights_for_saving(self) -> dict[str, Tensor]:
        return {self.SAVED_AS.get(k, k): v for k, v in super().weights_for_saving().items()}

    def load_saved_weights(self, tensors: dict[str, Tensor]) -> None:
        back = {v: k for k, v in self.SAVED_AS.items()}
        super().load_saved_weights({back.get(k, k): v for k, v in tensors.items()})

    def extra_repr(self) -> str:
        s = self.settings
        return (
            f"d_in={self.d_in}, heads={self.d_sae}, qk_heads={s.n_qk_heads}x{s.d_qk_head}, k={s.k}, "
            f"rotary_base={s.rotary_base}"
        )
