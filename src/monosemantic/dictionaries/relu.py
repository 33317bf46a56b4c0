"""ReLU SAE with an L1 penalty (Bricken et al. 2023; Cunningham et al. 2023).

f = ReLU(W_enc^T (x - b_dec) + b_enc). The L1 penalty on f can be cheated by shrinking f and
growing decoder rows, so either the rows are held at unit norm (Towards Monosemanticity,
`l1_decoder_norm = false`) or, as in Anthropic's April 2024 update (the default), each
latent's L1 term is weighted by its decoder row norm and the rows are left free.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from monosemantic.config.dictionary import DictionaryConfig

from .activations import ReLU, ReLUSettings
from .base import (
    DictionaryMeta,
    LossOutput,
    TrainStepState,
    firing_quantile,
    register_dictionary,
    start_density,
)
from .single_site import SingleSiteDictionary


class ReLUConfig(ReLUSettings, DictionaryConfig):
    l1_decoder_norm: bool = Field(
        True,
        description="relu/gated: weight each latent's L1 by its decoder row norm (Anthropic, April 2024); "
        "false holds decoder rows at unit norm instead (Towards Monosemanticity).",
    )


@register_dictionary("relu", ReLUConfig)
class ReLUDictionary(SingleSiteDictionary):
    penalty = ReLU.penalty
    controller_start = ReLU.controller_start
    saelens_name = "standard"

    @classmethod
    def default_decoder_init_norm(cls, meta: DictionaryMeta) -> float:
        return 0.1 if meta.settings.l1_decoder_norm else 1.0

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        self.activation = ReLU(cfg.settings)
        # Per instance: a free decoder when the penalty is decoder-norm weighted.
        self.unit_norm_decoder = not cfg.settings.l1_decoder_norm

    @torch.no_grad()
    def initialize_from_data(
        self, x: Tensor, target_l0: float | None = None, y: Tensor | None = None, max_rows: int = 4096
    ) -> None:
        """With a target L0, shift each encoder bias so that its latent starts firing on
        target_l0 / d_sae of the first tokens: L0 starts at the target with every latent alive,
        instead of at about d_sae / 2 (which the penalty then collapses, killing latents).

        Then scale the encoder (weights and biases, so the same latents fire) until the
        reconstruction is the right size. From the small decoder rows of the default start, the
        target's few latents reconstruct about 1/200 of the input; the encoder then grows for
        tens of steps, L0 rises tenfold while it does, and the controller has to crush it back
        with a large L1 that leaves a poor dictionary (FVU 0.68 and 37% dead against 0.11 and
        none at the reference run's budget: docs/training.md, Target L0)."""
        p = start_density(target_l0, self.d_sae)
        if p is None:
            return
        x = x[:max_rows].to(self.W_enc)
        self.b_enc -= firing_quantile(self.pre_acts(x), p)
        scale = self.encoder_scale_from_data(x, y)
        self.W_enc *= scale
        self.b_enc *= scale

    def encode(self, x: Tensor) -> Tensor:
        return self.activation(self.pre_acts(x), self)

    def sparsity_penalty(self, f: Tensor) -> Tensor:
        """sum_i f_i (||W_dec,i||) per row, averaged over rows."""
        if self.settings.l1_decoder_norm:
            return (f.float() @ self.W_dec.float().norm(dim=1)).mean()
        return f.float().abs().sum(-1).mean()

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        state = state or TrainStepState()
        f = self.encode(x)
        x_hat = self.decode(f, x)
        mse = self.mse_per_token(x_hat, self._check_input(y, self.d_out, "target"))
        l1 = self.sparsity_penalty(f)
        loss = mse + self.sparsity_coefficient(state, self.penalty_coefficient()) * l1
        return LossOutput(loss, x_hat, f=f, terms={"mse_per_token": mse.detach(), "l1": l1.detach()})
