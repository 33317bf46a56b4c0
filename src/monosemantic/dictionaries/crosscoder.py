"""Acausal crosscoder (Anthropic, "Sparse Crosscoders", 2024): one latent space over several layers.

Every latent reads all L layers and reconstructs all of them:

    f = act(sum_l x_l W_enc[l] + b_enc),     x_hat_l = f W_dec[:, l] + b_dec[l]

It is what `site = "blocks.*.hook_resid_post"` without `site_out` trains. To the trainer it is an
SAE on the concatenated sites (x = y = [x_0 | ... | x_{L-1}]); the loss is the squared error
summed over layers. A latent's decoder norm per layer (`decoder_norms`) says where it lives: a
feature present in one layer only has norm there alone, and over two models' sites (model diffing)
the per-model norm ratio finds model-specific features (`decoder_norm_share`).

Activation families as in `clt.py`: relu (L1 weighted by the concatenated decoder norm), jumprelu
(L0), topk / batchtopk (k latents per token over the one latent space; unit concatenated norms;
dead latents get AuxK, `auxk.py`, reconstructing the residual of every layer).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from monosemantic.utils.errors import MonosemanticError

from .auxk import auxk_loss, dead_for_aux
from .base import (
    LossOutput,
    TrainStepState,
    default_aux_k,
    firing_quantile,
    register_dictionary,
    start_density,
)
from .batchtopk import THRESHOLD_RATE, select_batch, smallest_selected
from .clt import CrossLayerTranscoder
from .clt_meta import CLTMeta
from .jumprelu import jumprelu, step
from .sparse_encoder import sparse_decode, topk_dead


@register_dictionary("crosscoder")
class Crosscoder(CrossLayerTranscoder):
    """Shares the CLT's layer bookkeeping (`n_layers`, `d_layer_in`, `_split`, `initialize_b_dec`,
    the unit-norm hook); its weights are W_enc [L, d, n], b_enc [n], W_dec [n, L, d], b_dec [L, d].
    The CLT's per-layer methods (`encode_layer`, `decode_layer`, `decoder`) do not apply to it."""

    multi_site = True
    meta_class = CLTMeta

    def __init__(self, cfg: CLTMeta) -> None:
        nn.Module.__init__(self)
        L = len(cfg.layers)
        if L == 0 or cfg.d_in % L or cfg.d_out != cfg.d_in:
            raise MonosemanticError(
                f"crosscoder widths d_in={cfg.d_in}, d_out={cfg.d_out} must split over {L} layers"
            )
        self.cfg = cfg
        n, d = cfg.d_sae, cfg.d_in // L
        self.W_enc = nn.Parameter(torch.empty(L, d, n))
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.empty(n, L, d))
        self.b_dec = nn.Parameter(torch.zeros(L, d))
        self.W_skip = None
        self.unit_norm_decoder = cfg.activation in ("topk", "batchtopk")
        if cfg.activation == "jumprelu":
            self.log_threshold = nn.Parameter(torch.full((n,), math.log(cfg.jumprelu_init_threshold)))
        if cfg.activation == "batchtopk":
            self.register_buffer("threshold", torch.zeros(n))
            self.register_buffer("threshold_updates", torch.zeros((), dtype=torch.long))
        self.reset_parameters()

    @property
    def n_per_layer(self) -> int:  # one shared latent space
        return self.cfg.d_sae

    @property
    def d_layer_out(self) -> int:
        return self.cfg.d_out // self.n_layers

    def concat_decoder_norms(self) -> Tensor:
        return self.W_dec.flatten(1).norm(dim=1)  # [n]

    def decoder_norms(self) -> Tensor:
        """[n, L]: each latent's decoder norm per layer."""
        return self.W_dec.norm(dim=-1)

    @torch.no_grad()
    def decoder_norm_share(self, layers_a: list[int], training_scale: bool = False) -> Tensor:
        """[n]: the fraction of each latent's decoder norm on the layer-indices `layers_a` (model
        diffing: 1 = only model A, 0 = only model B, 0.5 = shared). Norms are those of the saved,
        raw-scale decoders, or with `training_scale` of the decoders in the scale training saw
        (each layer's block times its `metadata.training.activation_scale`, which puts every layer
        or model at the same mean input norm): use that when the sites' norms differ."""
        norms = self.decoder_norms()
        if training_scale:
            norms = norms * self.training_scales().to(norms)
        return norms[:, layers_a].sum(1) / norms.sum(1).clamp_min(1e-12)

    def training_scales(self) -> Tensor:
        """[L]: the input scale each layer had in training (1 where none was recorded)."""
        scale = ((self.cfg.metadata or {}).get("training") or {}).get("activation_scale", 1.0)
        return torch.as_tensor(scale, dtype=torch.float32).expand(self.n_layers).clone()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.W_enc)
        self.W_enc /= self.W_enc.flatten(0, 1).norm(dim=0).clamp_min(1e-8)
        nn.init.normal_(self.W_dec)
        self._scale_decoders(self.cfg.decoder_init_norm / self.concat_decoder_norms().clamp_min(1e-8))

    def _scale_decoders(self, factor: Tensor) -> None:
        self.W_dec.mul_(factor.to(self.W_dec.dtype)[:, None, None])

    @torch.no_grad()
    def initialize_from_data(self, x: Tensor, target_l0: float | None = None, max_rows: int = 4096) -> None:
        """With a target L0, latents start firing on target_l0 / d_sae of the first tokens (the
        CLT's rule, over the one latent space)."""
        p = start_density(target_l0, self.d_sae)
        if p is None or self.cfg.activation not in ("relu", "jumprelu"):
            return
        q = firing_quantile(self.pre_acts(x[:max_rows]), p)
        if self.cfg.activation == "relu":
            self.b_enc -= q
        else:
            keep = torch.full_like(q, self.cfg.jumprelu_init_threshold)
            self.log_threshold.copy_(torch.where(q > 0, q, keep).log())

    # ---- the model ----------------------------------------------------------------------------
    def pre_acts(self, x: Tensor) -> Tensor:
        xs = self._split(x, self.d_layer_in, "input").to(self.dtype)
        return torch.einsum("...ld,ldn->...n", xs, self.W_enc) + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        z = self.pre_acts(x)
        act = self.cfg.activation
        if act == "relu":
            return F.relu(z)
        if act == "jumprelu":
            return z * ((z > self.log_threshold.exp().to(z.dtype)) & (z > 0)).to(z.dtype)
        if act == "batchtopk":
            return F.relu(z) * (z > self.threshold.to(z.dtype))
        top = z.topk(int(self.cfg.k), dim=-1, sorted=False)
        return torch.zeros_like(z).scatter_(-1, top.indices, F.relu(top.values))

    def decode(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        out = torch.einsum("...n,nld->...ld", f.to(self.dtype), self.W_dec) + self.b_dec
        return out.flatten(-2)

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        state = state or TrainStepState()
        act, eps = self.cfg.activation, self.cfg.jumprelu_bandwidth
        z = self.pre_acts(x)  # [B, n]
        l0 = None
        if act == "relu":
            f = F.relu(z)
        elif act == "jumprelu":
            f = jumprelu(z, self.log_threshold.exp(), eps)
            l0 = step(z, self.log_threshold.exp(), eps).float().sum(-1).mean()
        elif act == "topk":
            top = z.topk(int(self.cfg.k), dim=-1, sorted=False)
            f = torch.zeros_like(z).scatter(-1, top.indices, F.relu(top.values))
        else:
            rows, cols = select_batch(z.detach(), int(self.cfg.k), self.sharding)
            mask = torch.zeros_like(z, dtype=torch.bool)
            mask[rows, cols] = True
            f = F.relu(z) * mask
            self._track_threshold(f.detach())
        y_hat = self.decode(f)
        y = self._check_input(y, self.d_out, "target")
        mse = self.mse(y_hat, y)
        l1 = (f * self.concat_decoder_norms()).sum(-1).mean() if act == "relu" else None
        loss, terms = self._penalised(mse, l1, l0, state)
        sparse = act in ("topk", "batchtopk")
        dead = dead_for_aux(state.dead_mask, self.cfg.aux_coefficient, self.device) if sparse else None
        if dead is not None:
            auxk = self._aux_loss(z, y - y_hat, dead)
            loss = loss + self.cfg.aux_coefficient * auxk
            terms["auxk"] = auxk.detach()
        return LossOutput(loss, y_hat, f=f, terms=terms)

    def _aux_loss(self, z: Tensor, residual: Tensor, dead: Tensor) -> Tensor:
        """AuxK: the aux_k largest dead pre-activations z [B, n] per token (raw, see `auxk.py`),
        decoded into every layer without bias (a gather over W_dec's [n, L*d] rows)."""
        aux_k = self.cfg.aux_k or default_aux_k(self.d_in, self.d_sae)
        rows, cols = topk_dead(z.detach(), dead, aux_k)
        aux = sparse_decode(z[rows, cols], self.W_dec.flatten(1), rows, cols, z.shape[0])
        return auxk_loss(aux, residual, int(dead.sum()), aux_k)

    @torch.no_grad()
    def _track_threshold(self, f: Tensor) -> None:
        if not self.training:
            return
        smallest = smallest_selected(f, self.sharding)  # over every rank's rows (parallel='data')
        if torch.isfinite(smallest):
            rate = max(1.0 / float(self.threshold_updates + 1), THRESHOLD_RATE)
            self.threshold.mul_(1 - rate).add_(rate * smallest)
        self.threshold_updates += 1

    # ---- trainer hooks ------------------------------------------------------------------------
    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self, rows_are_unit: bool = False) -> None:
        if self.W_dec.grad is None:
            return
        unit = self.W_dec / self.concat_decoder_norms().clamp_min(1e-8)[:, None, None]
        self.W_dec.grad -= (self.W_dec.grad * unit).sum((1, 2), keepdim=True) * unit

    @torch.no_grad()
    def fold_decoder_norm(self) -> None:
        norms = self.concat_decoder_norms().clamp_min(1e-8)
        self.W_enc *= norms
        self.b_enc *= norms
        if self.cfg.activation == "jumprelu":
            self.log_threshold += norms.log().to(self.log_threshold.dtype)
        if self.cfg.activation == "batchtopk":
            self.threshold *= norms.to(self.threshold.dtype)
        self._scale_decoders(1.0 / norms)

    @torch.no_grad()
    def fold_activation_scale(
        self, scale_in: float | Tensor, scale_out: float | Tensor | None = None
    ) -> None:
        s = self._layer_scales(scale_in, self.d_layer_in)  # the sites it reads are the ones it writes
        self.W_enc *= s[:, None, None]
        self.W_dec /= s[None, :, None]
        self.b_dec /= s[:, None]

    # ---- serialisation ------------------------------------------------------------------------
    def weights_for_saving(self) -> dict[str, Tensor]:
        """W_enc [L, d, n], b_enc [n], W_dec [n, L, d], b_dec [L, d] (+ threshold [n])."""
        w = {k: getattr(self, k).detach().contiguous() for k in ("W_enc", "b_enc", "W_dec", "b_dec")}
        if self.cfg.activation == "jumprelu":
            w["threshold"] = self.log_threshold.detach().exp()
        if self.cfg.activation == "batchtopk":
            w["threshold"] = self.threshold.detach().clone()
        return w

    def load_saved_weights(self, tensors: dict[str, Tensor]) -> None:
        t = dict(tensors)
        if self.cfg.activation == "jumprelu":
            t["log_threshold"] = t.pop("threshold").float().clamp_min(1e-30).log().to(t["b_enc"].dtype)
        if self.cfg.activation == "batchtopk":
            t["threshold_updates"] = torch.tensor(1, dtype=torch.long)
        self.load_state_dict(t, strict=True)

    def saved_cfg(self) -> dict:
        """The CLT's layout keys, named a crosscoder (one latent space: no per-layer transcoder width)."""
        cfg = super().saved_cfg() | {"architecture": "crosscoder"}
        del cfg["d_transcoder"]
        return cfg

    def extra_repr(self) -> str:
        c = self.cfg
        return f"crosscoder[{c.activation}]: layers={c.layers}, d={self.d_layer_in}, n={c.d_sae}"
