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

import torch
from torch import Tensor, nn

from monosemantic.utils.errors import MonosemanticError

from .activations import ReLU
from .auxk import auxk_loss, dead_for_aux
from .base import (
    LossOutput,
    TrainStepState,
    default_aux_k,
    firing_quantile,
    register_dictionary,
    start_density,
)
from .multi_site import MultiSiteConfig, MultiSiteDictionary
from .sparse_encoder import sparse_decode, topk_dead


class CrosscoderConfig(MultiSiteConfig):
    """`site` a layer glob (or list, or a model pair `{a,b}:blocks.N.hook_X`); no distinct site_out."""

    def check_sites(self, *sites) -> None:
        super().check_sites(*sites)
        if self.site_out is not None and self.site_out != self.site:
            raise ValueError(
                "a crosscoder reconstructs the sites it reads; remove site_out, or use "
                'architecture = "clt" to map site to site_out'
            )


@register_dictionary("crosscoder", CrosscoderConfig)
class Crosscoder(MultiSiteDictionary):
    """Weights: W_enc [L, d, n], b_enc [n], W_dec [n, L, d], b_dec [L, d]: every latent reads and
    writes every site, so it cannot be spliced causally."""

    causal = False
    latents_per_site = False

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        if cfg.d_out != cfg.d_in:
            raise MonosemanticError(
                f"a crosscoder writes what it reads: d_out={cfg.d_out} must equal d_in={cfg.d_in}"
            )
        L = self.n_layers
        n, d = cfg.d_sae, cfg.d_in // L
        self.W_enc = nn.Parameter(torch.empty(L, d, n))
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.W_dec = nn.Parameter(torch.empty(n, L, d))
        self.b_dec = nn.Parameter(torch.zeros(L, d))
        self.activation.add_state(self, (n,))  # log_threshold, or threshold
        self.reset_parameters()

    def concat_decoder_norms(self) -> Tensor:
        return self.W_dec.flatten(1).norm(dim=1)  # [n]

    def decoder_norms(self) -> Tensor:
        """[n, L]: each latent's decoder norm per layer."""
        return self.W_dec.norm(dim=-1)

    def site_decoders(self) -> Tensor:
        return self.W_dec

    def site_encoders(self) -> None:
        return None  # every latent reads every site

    def home_sites(self) -> None:
        return None

    def encoder_dirs(self, idx: Tensor) -> Tensor:
        """[m, L*d]: latent j reads every site of the concatenated input."""
        return self.W_enc[:, :, idx].permute(2, 0, 1).flatten(1)

    def encode_site(self, i: int, x: Tensor) -> Tensor:
        raise MonosemanticError(
            "a crosscoder reads later layers to encode earlier ones, so it cannot be spliced into a causal "
            "forward pass; splice transcoders or a cross-layer transcoder"
        )

    decode_site = encode_site  # type: ignore[assignment]

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.normal_(self.W_enc)
        self.W_enc /= self.W_enc.flatten(0, 1).norm(dim=0).clamp_min(1e-8)
        nn.init.normal_(self.W_dec)
        init_norm = self.settings.decoder_init_norm or self.activation.decoder_init_norm  # unset on load
        self._scale_decoders(init_norm / self.concat_decoder_norms().clamp_min(1e-8))

    def _scale_decoders(self, factor: Tensor) -> None:
        self.W_dec.mul_(factor.to(self.W_dec.dtype)[:, None, None])

    @torch.no_grad()
    def initialize_from_data(
        self, x: Tensor, target_l0: float | None = None, y: Tensor | None = None, max_rows: int = 4096
    ) -> None:
        """With a target L0, latents start firing on target_l0 / d_sae of the first tokens (the
        CLT's rule, over the one latent space)."""
        p = start_density(target_l0, self.d_sae)
        if p is None or self.settings.activation not in ("relu", "jumprelu"):
            return
        q = firing_quantile(self.pre_acts(x[:max_rows]), p)
        if self.settings.activation == "relu":
            self.b_enc -= q
        else:
            keep = torch.full_like(q, self.settings.jumprelu_init_threshold)
            self.log_threshold.copy_(torch.where(q > 0, q, keep).log())

    def _scale_encoders(self, factor: Tensor) -> None:
        self.W_enc *= factor
        self.b_enc *= factor

    # ---- the model ----------------------------------------------------------------------------
    def pre_acts(self, x: Tensor) -> Tensor:
        xs = self._split(x, self.d_layer_in, "input").to(self.dtype)
        return torch.einsum("...ld,ldn->...n", xs, self.W_enc) + self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        return self.activation(self.pre_acts(x), self)

    def decode(self, f: Tensor, x: Tensor | None = None) -> Tensor:
        out = torch.einsum("...n,nld->...ld", f.to(self.dtype), self.W_dec) + self.b_dec
        return out.flatten(-2)

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        state = state or TrainStepState()
        z = self.pre_acts(x)  # [B, n]
        l0 = None
        if self.activation.selects:  # TopK / BatchTopK: a dense mask of the selection
            rows, cols = self.activation.select(z.detach(), self.sharding)
            mask = torch.zeros_like(z, dtype=torch.bool)
            mask[rows, cols] = True
            f = torch.relu(z) * mask
            self.activation.observe(self, f.detach())
            if self.training:
                self.activation.count(self)
        else:
            f, l0 = self.activation.train(z, self)
        y_hat = self.decode(f)
        y = self._check_input(y, self.d_out, "target")
        mse = self.mse_per_token(y_hat, y)
        l1 = (f * self.concat_decoder_norms()).sum(-1).mean() if self.penalty is ReLU.penalty else None
        loss, terms = self._penalised(mse, l1, l0, state)
        dead = (
            dead_for_aux(state.dead_mask, self.settings.aux_coefficient, self.device)
            if self.activation.selects
            else None
        )
        if dead is not None:
            auxk = self._aux_loss(z, y - y_hat, dead)
            loss = loss + self.settings.aux_coefficient * auxk
            terms["auxk"] = auxk.detach()
        return LossOutput(loss, y_hat, f=f, terms=terms)

    def _aux_loss(self, z: Tensor, residual: Tensor, dead: Tensor) -> Tensor:
        """AuxK: the aux_k largest dead pre-activations z [B, n] per token (raw, see `auxk.py`),
        decoded into every layer without bias (a gather over W_dec's [n, L*d] rows)."""
        aux_k = self.settings.aux_k or default_aux_k(self.d_in, self.d_sae)
        rows, cols = topk_dead(z.detach(), dead, aux_k)
        aux = sparse_decode(z[rows, cols], self.W_dec.flatten(1), rows, cols, z.shape[0])
        return auxk_loss(aux, residual, int(dead.sum()), aux_k)

    # ---- trainer hooks ------------------------------------------------------------------------
    @torch.no_grad()
    def remove_gradient_parallel_to_decoder_directions(self, rows_are_unit: bool = False) -> None:
        if self.W_dec.grad is None:
            return
        unit = self.W_dec / self.concat_decoder_norms().clamp_min(1e-8)[:, None, None]
        self.W_dec.grad -= (self.W_dec.grad * unit).sum((1, 2), keepdim=True) * unit

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
        return w | self._rule_weights()

    def load_saved_weights(self, tensors: dict[str, Tensor]) -> None:
        t = dict(tensors)
        t |= self._rule_state(t)
        self.load_state_dict(t, strict=True)

    def saved_cfg(self) -> dict:
        """The layout keys, named a crosscoder (one latent space: no per-layer transcoder width)."""
        return super().saved_cfg() | {"architecture": "crosscoder"}
