"""A toy architecture, complete in this one file: how a new dictionary joins the pipeline.

f = ReLU(g * (x - b_dec) W_enc + b_enc - shift), with a learned per-latent gain g and a fixed
`shift` that the architecture owns (`[dictionary] architecture = "toy_gain", shift = ...`),
trained with the shared ReLU rule's L1 penalty, whose default coefficient it overrides (2.0).
Its config class lives here, beside it: `[dictionary]` keys it does not declare (`k`,
`jumprelu_bandwidth`) are refused when the config loads. Nothing outside this file names it.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn

from monosemantic.config.dictionary import DictionaryConfig
from monosemantic.dictionaries.activations import ReLU, ReLUSettings
from monosemantic.dictionaries.base import DictionaryMeta, LossOutput, TrainStepState, register_dictionary
from monosemantic.dictionaries.single_site import SingleSiteDictionary
from monosemantic.utils.errors import ConfigError


class ToyGainConfig(ReLUSettings, DictionaryConfig):
    l1_coefficient: float = Field(2.0, ge=0, description="L1 penalty; this architecture's default is 2.0.")
    shift: float = Field(0.1, ge=0, description="Subtracted from every pre-activation.")


@register_dictionary("toy_gain", ToyGainConfig)
class ToyGainDictionary(SingleSiteDictionary):
    penalty = ReLU.penalty

    @classmethod
    def configure(cls, meta: DictionaryMeta) -> None:
        super().configure(meta)
        if meta.d_sae < 2:
            raise ConfigError("toy_gain needs d_sae >= 2")

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        self.activation = ReLU(cfg.settings)
        self.gain = nn.Parameter(torch.ones(cfg.d_sae))

    def encoder_dirs(self, idx: Tensor) -> Tensor:
        return self.W_enc[:, idx].T * self.gain[idx, None]

    def pre_acts(self, x: Tensor) -> Tensor:
        return (self._input(x) @ self.W_enc) * self.gain + self.b_enc - self.settings.shift

    def encode(self, x: Tensor) -> Tensor:
        return self.activation(self.pre_acts(x), self)

    def latent_parameters(self) -> dict[str, int]:
        return {**super().latent_parameters(), "gain": 0}

    @torch.no_grad()
    def reset_latents(self, idx: Tensor, enc: Tensor, dec: Tensor) -> None:
        super().reset_latents(idx, enc, dec)
        self.gain[idx] = 1.0

    def training_loss(self, x: Tensor, y: Tensor, state: TrainStepState | None = None) -> LossOutput:
        state = state or TrainStepState()
        f = self.encode(x)
        x_hat = self.decode(f, x)
        mse = self.mse_per_token(x_hat, self._check_input(y, self.d_out, "target"))
        l1 = (f.float() @ self.W_dec.float().norm(dim=1)).mean()
        loss = mse + self.sparsity_coefficient(state, self.penalty_coefficient()) * l1
        return LossOutput(loss, x_hat, f=f, terms={"mse_per_token": mse.detach(), "l1": l1.detach()})
