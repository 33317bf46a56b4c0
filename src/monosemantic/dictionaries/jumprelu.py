"""JumpReLU SAE (Rajamanoharan et al. 2024, "Jumping Ahead").

f_i = z_i H(z_i - theta_i) with a learned per-latent threshold theta = exp(log_threshold), and
an L0 penalty sum_i H(z_i - theta_i). The step function has zero gradient almost everywhere,
so both the activation and the L0 use straight-through estimators with a rectangle kernel of
width `jumprelu_bandwidth` (eps): the threshold receives the pseudo-derivatives

    d JumpReLU / d theta = -(theta / eps) K((z - theta) / eps)
    d H(z - theta) / d theta = -(1 / eps) K((z - theta) / eps),   K(u) = 1[|u| < 1/2]

The L0's pseudo-derivative is also passed to the pre-activation z (+(1/eps) K, as in Anthropic's
January 2025 recipe; the 2024 paper passes none): with only theta learning the sparsity, Adam moves
log(theta) by ~lr per step, so a run of a few hundred steps never sparsifies and L0 ignores the
coefficient. Letting the encoder see the penalty makes L0 track `l0_coefficient` within ~100 steps.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.config.ranges import OpenFraction

from .activations import JumpReLU, JumpReLUSettings, jumprelu, step
from .base import (
    DictionaryMeta,
    LossOutput,
    TrainStepState,
    firing_quantile,
    register_dictionary,
    start_density,
)
from .single_site import SingleSiteDictionary

__all__ = ["JumpReLUConfig", "JumpReLUDictionary", "jumprelu", "step"]


class JumpReLUConfig(JumpReLUSettings, DictionaryConfig):
    jumprelu_init_density: OpenFraction | None = Field(
        None,
        description="If set, each latent's initial threshold is its pre-activation quantile on the first "
        "batches at which it fires on this fraction of tokens (replaces jumprelu_init_threshold); at "
        "large expansion a fixed threshold starts with thousands of latents active per token.",
    )


@register_dictionary("jumprelu", JumpReLUConfig)
class JumpReLUDictionary(SingleSiteDictionary):
    # The L0 penalty does not depend on decoder norms, so rows are left free (as in SAELens): they
    # start small (`decoder_init_norm`, 0.1 by default) so that the many latents above threshold
    # at step 0 do not swamp the reconstruction, and grow as features are learned. Export folds
    # the norms back into the encoder and thresholds (`fold_decoder_norm`).
    unit_norm_decoder = False
    penalty = JumpReLU.penalty
    controller_start = JumpReLU.controller_start

    @classmethod
    def default_decoder_init_norm(cls, meta: DictionaryMeta) -> float:
        return 0.1

    def latent_parameters(self) -> dict[str, int]:
        return {**super().latent_parameters(), "log_threshold": 0}

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        self.activation = JumpReLU(cfg.settings)
        self.activation.add_state(self, (cfg.d_sae,))  # log_threshold

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Decoder rows at `decoder_init_norm`, encoder columns at unit norm.

        With inputs at mean norm sqrt(d_in) (the trainer's normalisation), unit encoder columns
        give pre-activations of order 1, the scale `jumprelu_init_threshold` and
        `jumprelu_bandwidth` are expressed in, whatever the decoder's initial norm.
        """
        super().reset_parameters()
        self.W_enc /= self.W_enc.norm(dim=0, keepdim=True).clamp_min(1e-8)

    @torch.no_grad()
    def initialize_from_data(
        self,
        x: Tensor,
        target_l0: float | None = None,
        y: Tensor | None = None,
        max_rows: int = 4096,
        chunk: int = 4096,
    ) -> None:
        """Place each threshold at its latent's (1 - p) pre-activation quantile on (up to `max_rows`
        of) `x`, so every latent starts firing on a fraction p of tokens and L0 starts at p * d_sae:
        p is `jumprelu_init_density`, else target_l0 / d_sae when the run has a target (a start
        at the target, with every latent alive, is what lets the controller land without killing
        latents: benchmarks/bench_target_l0.py), else the fixed `jumprelu_init_threshold` stays.
        Latents positive on fewer tokens than that keep `jumprelu_init_threshold`. Columns are
        done `chunk` at a time."""
        p = self.settings.jumprelu_init_density
        if p is None:
            p = start_density(target_l0, self.d_sae)
        if p is None:
            return
        x = self._input(x[:max_rows].to(self.W_enc.device, self.W_enc.dtype))
        for lo in range(0, self.d_sae, chunk):
            q = firing_quantile(x @ self.W_enc[:, lo : lo + chunk] + self.b_enc[lo : lo + chunk], p)
            keep = torch.full_like(q, self.settings.jumprelu_init_threshold)
            self.log_threshold[lo : lo + chunk] = torch.where(q > 0, q, keep).log().to(self.log_threshold)

    @torch.no_grad()
    def fold_decoder_norm(self) -> None:
        """Unit-norm decoder rows with the same outputs: z, b_enc and theta scale by ||d_i||."""
        norms = self.W_dec.norm(dim=1).clamp_min(1e-8)
        self.W_enc *= norms
        self.b_enc *= norms
        self.activation.fold(self, norms)
        self.W_dec /= norms[:, None]

    @property
    def threshold(self) -> Tensor:
        return self.log_threshold.exp()

    def encode(self, x: Tensor) -> Tensor:
        return self.activation(self.pre_acts(x), self)

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        state = state or TrainStepState()
        z = self.pre_acts(x)
        f, l0 = self.activation.train(z, self)
        x_hat = self.decode(f, x)
        mse = self.mse_per_token(x_hat, self._check_input(y, self.d_out, "target"))
        loss = mse + self.sparsity_coefficient(state, self.penalty_coefficient()) * l0
        return LossOutput(loss, x_hat, f=f, terms={"mse_per_token": mse.detach(), "l0": l0.detach()})

    def weights_for_saving(self) -> dict[str, Tensor]:
        w = super().weights_for_saving()
        del w["log_threshold"]
        return w | self.activation.saved(self)

    def load_saved_weights(self, tensors: dict[str, Tensor]) -> None:
        tensors = dict(tensors)
        tensors |= self.activation.loaded(tensors, tensors["W_dec"].dtype)
        super().load_saved_weights(tensors)
