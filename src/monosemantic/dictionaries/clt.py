"""Cross-layer transcoder (CLT; Anthropic, "Circuit Tracing", 2025): one dictionary over L layers.

Layer l's encoder reads its MLP input x_l and gives n latents f_l; latent j of layer s writes to
the MLP output of every layer l >= s through its own decoder block, so

    y_hat_l = b_dec_l + sum_{s <= l} f_s W_dec_s[:, l - s]        (W_dec_s: [n, L - s, d_out])

The decoders grow as L(L+1)/2 blocks of [n, d_out]: L^2 / 2 times a per-layer transcoder's.
To the trainer a CLT is a transcoder on concatenated sites: x = [x_0 | ... | x_{L-1}]
([B, L*d_in]), y = [y_0 | ... | y_{L-1}], latent index s*n + j. The squared error summed over
features is therefore summed over output layers.

Activation families, each applied per layer so the model stays causal (layer l's latents never
depend on a later layer, which a full replacement run needs):
- relu: L1 on f_i weighted by the latent's concatenated decoder norm ||W_dec_i|| (over all
  output layers), decoder rows free;
- jumprelu: the JumpReLU of `jumprelu.py` with its L0 penalty (a count, invariant to decoder
  scale); decoder rows free and folded to unit concatenated norm at export;
- topk: k latents per layer per token; batchtopk: k*B per layer over the batch, a per-layer
  JumpReLU threshold at inference. Both hold concatenated decoder norms at 1, so selecting on
  f_i equals selecting on f_i ||W_dec_i||. Dead latents get the AuxK loss (`auxk.py`): each
  layer's aux_k largest dead latents reconstruct the residual of every layer they write to.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosemantic.utils.errors import DataError, MonosemanticError

from .auxk import auxk_loss, dead_for_aux
from .base import (
    Dictionary,
    LossOutput,
    SparseCodes,
    TrainStepState,
    default_aux_k,
    firing_quantile,
    register_dictionary,
    start_density,
)
from .batchtopk import THRESHOLD_RATE, select_batch, smallest_selected
from .clt_meta import ACTIVATIONS, CLTMeta
from .jumprelu import JumpReLUDictionary, jumprelu, step
from .relu import L1
from .sparse_encoder import _sort_order, sparse_decode, sparse_encode, topk_dead, topk_rows


@register_dictionary("clt")
class CrossLayerTranscoder(Dictionary):
    # The loader skips the single-W_dec shape check for dictionaries spanning several sites.
    multi_site = True
    meta_class = CLTMeta

    def __init__(self, cfg: CLTMeta) -> None:
        nn.Module.__init__(self)  # own parameter layout, not the base class's [d_in, d_sae] blocks
        if cfg.activation not in ACTIVATIONS:
            raise MonosemanticError(
                f"a cross-layer transcoder takes activation {' | '.join(ACTIVATIONS)}, not {cfg.activation!r}"
            )
        L = len(cfg.layers)
        if L == 0 or cfg.d_in % L or cfg.d_out % L or cfg.d_sae % L:
            raise MonosemanticError(
                f"CLT widths d_in={cfg.d_in}, d_out={cfg.d_out}, d_sae={cfg.d_sae} must split over {L} layers"
            )
        self.cfg = cfg
        n, d_i, d_o = cfg.d_sae // L, cfg.d_in // L, cfg.d_out // L
        self.W_enc = nn.Parameter(torch.empty(L, d_i, n))  # [L, d_in, n]
        self.b_enc = nn.Parameter(torch.zeros(L, n))
        self.W_dec = nn.ParameterList([nn.Parameter(torch.empty(n, L - s, d_o)) for s in range(L)])
        self.b_dec = nn.Parameter(torch.zeros(L, d_o))
        self.W_skip = None
        self.unit_norm_decoder = cfg.activation in ("topk", "batchtopk")
        # the activation family's penalty (what the target-L0 controller tunes), per instance
        self.penalty = {"relu": L1, "jumprelu": JumpReLUDictionary.penalty}.get(cfg.activation)
        if cfg.activation == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((L, n), math.log(cfg.jumprelu_init_threshold)))
        if cfg.activation == "batchtopk":
            self.register_buffer("threshold", torch.zeros(L, n))
            self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))
        self.reset_parameters()

    # ---- layout -------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.cfg.layers)

    @property
    def n_per_layer(self) -> int:
        return self.cfg.d_sae // self.n_layers

    @property
    def d_layer_in(self) -> int:
        return self.cfg.d_in // self.n_layers

    @property
    def d_layer_out(self) -> int:
        return self.cfg.d_out // self.n_layers

    @property
    def dtype(self) -> torch.dtype:
        return self.b_enc.dtype

    @property
    def device(self) -> torch.device:
        return self.b_enc.device

    def decoder(self, src: int, dst: int) -> Tensor:
        """[n, d_out]: how layer-index `src`'s latents write to layer-index `dst` (dst >= src)."""
        return self.W_dec[src][:, dst - src]

    def decoder_norms(self) -> Tensor:
        """[L*n, L]: each latent's decoder norm per output layer (0 before its home layer)."""
        L, n = self.n_layers, self.n_per_layer
        out = torch.zeros(L, n, L, dtype=self.dtype, device=self.device)
        for s, W in enumerate(self.W_dec):
            out[s, :, s:] = W.norm(dim=-1)
        return out.reshape(L * n, L)

    def concat_decoder_norms(self) -> Tensor:
        """[L, n]: each latent's decoder norm over all the layers it writes to."""
        return torch.stack([W.flatten(1).norm(dim=1) for W in self.W_dec])

    # ---- init ---------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Unit encoder columns; decoders random with concatenated norm `decoder_init_norm`."""
        nn.init.normal_(self.W_enc)
        self.W_enc /= self.W_enc.norm(dim=1, keepdim=True).clamp_min(1e-8)
        for W in self.W_dec:
            nn.init.normal_(W)
        self._scale_decoders(self.cfg.decoder_init_norm / self.concat_decoder_norms().clamp_min(1e-8))

    def _scale_decoders(self, factor: Tensor) -> None:
        for s, W in enumerate(self.W_dec):
            W.mul_(factor[s][:, None, None].to(W.dtype))

    @torch.no_grad()
    def initialize_b_dec(self, value: Tensor) -> None:
        self.b_dec.copy_(value.to(self.b_dec).view_as(self.b_dec))

    # ---- the model ----------------------------------------------------------------------------
    def _split(self, x: Tensor, width: int, what: str) -> Tensor:
        """[..., L*width] -> [..., L, width]."""
        x = self._check_input(x, width * self.n_layers, what)
        return x.view(*x.shape[:-1], self.n_layers, width)

    def pre_acts_layer(self, i: int, x: Tensor) -> Tensor:
        """Layer-index i's pre-activations [..., n] from its input x [..., d_in]."""
        return x.to(self.dtype) @ self.W_enc[i] + self.b_enc[i]

    def activate_layer(self, i: int, z: Tensor) -> Tensor:
        """The inference-time activation of layer-index i's pre-activations."""
        act = self.cfg.activation
        if act == "relu":
            return F.relu(z)
        if act == "jumprelu":
            theta = self.log_threshold[i].exp().to(z.dtype)
            return z * ((z > theta) & (z > 0)).to(z.dtype)
        if act == "batchtopk":
            return F.relu(z) * (z > self.threshold[i].to(z.dtype))
        top = z.topk(int(self.cfg.k), dim=-1, sorted=False)
        return torch.zeros_like(z).scatter_(-1, top.indices, F.relu(top.values))

    def encode_layer(self, i: int, x: Tensor) -> Tensor:
        return self.activate_layer(i, self.pre_acts_layer(i, x))

    def encode(self, x: Tensor) -> Tensor:
        """f [..., L*n] from the concatenated inputs x [..., L*d_in]."""
        xs = self._split(x, self.d_layer_in, "input")
        f = [self.encode_layer(i, xs[..., i, :]) for i in range(self.n_layers)]
        return torch.cat(f, -1)

    def decode_layer(self, dst: int, fs: list[Tensor]) -> Tensor:
        """Layer-index dst's output [..., d_out] from the latents fs[s] [..., n] of layers s <= dst."""
        out = self.b_dec[dst]
        for s in range(dst + 1):
            out = out + fs[s].to(self.dtype) @ self.decoder(s, dst)
        return out

    def decode(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        """y_hat [..., L*d_out] from f [..., L*n]."""
        if f.shape[-1] != self.d_sae:
            raise DataError(f"latents have width {f.shape[-1]} but this CLT has d_sae={self.d_sae}")
        L, n = self.n_layers, self.n_per_layer
        fs = f.to(self.dtype).view(*f.shape[:-1], L, n)
        out = self.b_dec.expand(*f.shape[:-1], L, self.d_layer_out).clone()
        for s, W in enumerate(self.W_dec):
            out[..., s:, :] += torch.einsum("...n,nld->...ld", fs[..., s, :], W)
        return out.flatten(-2)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    # ---- training -----------------------------------------------------------------------------
    @torch.no_grad()
    def _update_threshold(self, i: int, vals: Tensor) -> None:
        """BatchTopK: running mean of layer i's smallest selected positive activation."""
        if not self.training:
            return
        rate = max(1.0 / float(self.threshold_updates + 1), THRESHOLD_RATE)
        smallest = smallest_selected(vals, self.sharding)  # over every rank's rows (parallel='data')
        if torch.isfinite(smallest):
            self.threshold[i].mul_(1 - rate).add_(rate * smallest)
        if i == self.n_layers - 1:
            self.threshold_updates += 1

    def _sparse_loss(self, xs: Tensor, y: Tensor, dead: Tensor | None) -> LossOutput:
        """TopK / BatchTopK: per layer, the fused sparse encoder of `sparse_encoder.py` and a gather
        decoder into all later layers; the dense [B, L, n] activations are never built. With a dead
        mask [L*n], each layer's encoder also picks its aux_k largest dead latents for AuxK."""
        B, L, n, d = xs.shape[0], self.n_layers, self.n_per_layer, self.d_layer_out
        k, aux_k = int(self.cfg.k), self.cfg.aux_k or default_aux_k(self.d_layer_in, n)
        batch = self.cfg.activation == "batchtopk"
        dead_l = None if dead is None else dead.view(L, n)
        n_dead = [0] * L if dead_l is None else dead_l.sum(1).tolist()  # one host sync
        parts, aux_parts, rows_all, cols_all, vals_all = [], [], [], [], []
        for s in range(L):
            layer_dead = dead_l[s] if n_dead[s] else None

            def select(pre: Tensor, layer_dead: Tensor | None = layer_dead) -> list[tuple[Tensor, Tensor]]:
                groups = [select_batch(pre, k, self.sharding) if batch else topk_rows(pre, k)]
                return groups if layer_dead is None else groups + [topk_dead(pre, layer_dead, aux_k)]

            groups = sparse_encode(xs[:, s].contiguous(), self.W_enc[s], self.b_enc[s], select)
            rows, cols, vals = groups[0]
            vals = F.relu(vals)
            if batch:
                self._update_threshold(s, vals.detach())
            W = self.W_dec[s].reshape(n, -1)  # [n, (L - s) * d]: this layer's writes to layers >= s
            parts.append(F.pad(sparse_decode(vals, W, rows, cols, B).view(B, L - s, d), (0, 0, s, 0)))
            if len(groups) > 1:
                a_rows, a_cols, a_vals = groups[1]
                aux = sparse_decode(a_vals, W, a_rows, a_cols, B).view(B, L - s, d)  # raw: auxk.py
                aux_parts.append(F.pad(aux, (0, 0, s, 0)))
            rows_all.append(rows)
            cols_all.append(cols + s * n)
            vals_all.append(vals)
        y_hat = (torch.stack(parts).sum(0) + self.b_dec).flatten(1)
        rows, cols, vals = torch.cat(rows_all), torch.cat(cols_all), torch.cat(vals_all)
        order = _sort_order(rows)
        codes = SparseCodes(rows[order], cols[order], vals[order].detach(), B, self.d_sae)
        mse = self.mse(y_hat, y)
        loss, terms = mse, {"mse": mse.detach()}
        if aux_parts:  # dead latents of layer s reconstruct the residual of every layer >= s
            aux_recon = torch.stack(aux_parts).sum(0).flatten(1)
            auxk = auxk_loss(aux_recon, y - y_hat, sum(n_dead), L * aux_k)
            loss = loss + self.cfg.aux_coefficient * auxk
            terms["auxk"] = auxk.detach()
        return LossOutput(loss, y_hat, terms=terms, codes=codes)

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        state = state or TrainStepState()
        xs = self._split(x, self.d_layer_in, "input")
        y = self._check_input(y, self.d_out, "target")
        act, eps = self.cfg.activation, self.cfg.jumprelu_bandwidth
        if act in ("topk", "batchtopk"):
            dead = dead_for_aux(state.dead_mask, self.cfg.aux_coefficient, self.device)
            return self._sparse_loss(xs.to(self.dtype), y, dead)
        z = torch.einsum("bld,ldn->bln", xs.to(self.dtype), self.W_enc) + self.b_enc  # [B, L, n]
        l0 = None
        if act == "jumprelu":
            theta = self.log_threshold.exp().flatten()
            flat = z.reshape(z.shape[0], -1)
            f = jumprelu(flat, theta, eps).view_as(z)
            l0 = step(flat, theta, eps).float().sum(-1).mean()
        else:
            f = F.relu(z)
        f_flat = f.flatten(1)
        y_hat = self.decode(f_flat)
        mse = self.mse(y_hat, y)
        l1 = (f * self.concat_decoder_norms()).sum((-1, -2)).mean() if act == "relu" else None
        loss, terms = self._penalised(mse, l1, l0, state)
        return LossOutput(loss, y_hat, f=f_flat, terms=terms)

    def _penalised(
        self, mse: Tensor, l1: Tensor | None, l0: Tensor | None, state: TrainStepState
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss and its logged terms: mse plus the activation family's penalty (decoder-norm
        weighted L1 for relu, the L0 count for jumprelu, none for the TopK rules)."""
        loss, terms = mse, {"mse": mse.detach()}
        if l1 is not None:
            loss = loss + self.sparsity_coefficient(state, self.cfg.l1_coefficient) * l1
            terms["l1"] = l1.detach()
        elif l0 is not None:
            loss = loss + self.sparsity_coefficient(state, self.cfg.l0_coefficient) * l0
            terms["l0"] = l0.detach()
        return loss, terms

    # ---- trainer hooks ------------------------------------------------------------------------
    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        self._scale_decoders(1.0 / self.concat_decoder_norms().clamp_min(1e-8))

    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self, rows_are_unit: bool = False) -> None:
        """Project out the radial part of each latent's concatenated decoder gradient."""
        norms = self.concat_decoder_norms().clamp_min(1e-8)
        for s, W in enumerate(self.W_dec):
            if W.grad is None:
                continue
            unit = W / norms[s][:, None, None]
            parallel = (W.grad * unit).sum((1, 2), keepdim=True)
            W.grad -= parallel * unit

    @torch.no_grad()
    def fold_decoder_norm(self) -> None:
        """Unit concatenated decoder norms with the same outputs (pre-activations scale by the norm)."""
        norms = self.concat_decoder_norms().clamp_min(1e-8)  # [L, n]
        self.W_enc *= norms[:, None, :]
        self.b_enc *= norms
        if self.cfg.activation == "jumprelu":
            self.log_threshold += norms.log().to(self.log_threshold.dtype)
        if self.cfg.activation == "batchtopk":
            self.threshold *= norms.to(self.threshold.dtype)
        self._scale_decoders(1.0 / norms)

    def _layer_scales(self, scale: float | Tensor, width: int) -> Tensor:
        """[L]: one scale per layer, from a float or the trainer's per-layer [L*width] vector."""
        if torch.is_tensor(scale):
            return scale.detach().float().cpu().view(self.n_layers, width)[:, 0].to(self.device, self.dtype)
        return torch.full((self.n_layers,), float(scale), device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def fold_activation_scale(
        self, scale_in: float | Tensor, scale_out: float | Tensor | None = None
    ) -> None:
        """Trained on (s_in,l x_l, s_out,l y_l) per layer l: make it work on raw activations."""
        s_in = self._layer_scales(scale_in, self.d_layer_in)
        s_out = s_in if scale_out is None else self._layer_scales(scale_out, self.d_layer_out)
        self.W_enc *= s_in[:, None, None]
        for s, W in enumerate(self.W_dec):
            W /= s_out[s:][None, :, None]
        self.b_dec /= s_out[:, None]

    @torch.no_grad()
    def initialize_from_data(self, x: Tensor, target_l0: float | None = None, max_rows: int = 4096) -> None:
        """With a target L0, every layer's latents start firing on target_l0 / d_sae of the first
        tokens: JumpReLU thresholds, or ReLU encoder biases, at that quantile of their layer's
        pre-activations (as `jumprelu.py` and `relu.py` do; TopK rules need none)."""
        p = start_density(target_l0, self.d_sae)
        if p is None or self.cfg.activation not in ("relu", "jumprelu"):
            return
        xs = self._split(x[:max_rows].to(self.dtype), self.d_layer_in, "input")
        for i in range(self.n_layers):
            q = firing_quantile(self.pre_acts_layer(i, xs[:, i]), p)
            if self.cfg.activation == "relu":
                self.b_enc[i] -= q
            else:
                keep = torch.full_like(q, self.cfg.jumprelu_init_threshold)
                self.log_threshold[i] = torch.where(q > 0, q, keep).log().to(self.log_threshold)

    # ---- serialisation ------------------------------------------------------------------------
    def weights_for_saving(self) -> dict[str, Tensor]:
        """W_enc [L, d_in, n], b_enc [L, n], W_dec_s [n, L - s, d_out], b_dec [L, d_out] (+ threshold [L, n])."""
        w = {
            "W_enc": self.W_enc.detach(),
            "b_enc": self.b_enc.detach(),
            "b_dec": self.b_dec.detach(),
        }
        w |= {f"W_dec_{s}": W.detach() for s, W in enumerate(self.W_dec)}
        if self.cfg.activation == "jumprelu":
            w["threshold"] = self.log_threshold.detach().exp()
        if self.cfg.activation == "batchtopk":
            w["threshold"] = self.threshold.detach()
        return {k: v.contiguous() for k, v in w.items()}

    def load_saved_weights(self, tensors: dict[str, Tensor]) -> None:
        t = dict(tensors)
        state = {"W_enc": t.pop("W_enc"), "b_enc": t.pop("b_enc"), "b_dec": t.pop("b_dec")}
        for s in range(self.n_layers):
            state[f"W_dec.{s}"] = t.pop(f"W_dec_{s}")
        if self.cfg.activation == "jumprelu":
            state["log_threshold"] = (
                t.pop("threshold").float().clamp_min(1e-30).log().to(state["b_enc"].dtype)
            )
        if self.cfg.activation == "batchtopk":
            state["threshold"] = t.pop("threshold")
            state["threshold_updates"] = torch.tensor(1, dtype=torch.long)
        if t:
            raise DataError(f"unexpected CLT weights {sorted(t)}; the checkpoint does not match its cfg.json")
        self.load_state_dict(state, strict=True)

    def saved_cfg(self) -> dict:
        """cfg.json keys that say which layers this CLT reads and writes (merged over the SAELens keys)."""
        c = self.cfg
        return {
            "architecture": "cross_layer_transcoder",
            "activation_function": c.activation,
            "n_layers": self.n_layers,
            "layers": list(c.layers),
            "d_in": self.d_layer_in,
            "d_out": self.d_layer_out,
            "d_transcoder": self.n_per_layer,
            "d_sae": c.d_sae,
            "hook_names": list(c.hook_names),
            "hook_names_out": list(c.hook_names_out),
        }

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"clt[{c.activation}]: layers={c.layers}, d_in={self.d_layer_in}, n={self.n_per_layer}/layer, "
            f"d_out={self.d_layer_out}" + (f", k={c.k}/layer" if c.k else "")
        )
