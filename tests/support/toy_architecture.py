"""A toy architecture, complete in this one file: how a new dictionary joins the pipeline.

f = ReLU(g * (x - b_dec) W_enc + b_enc - shift), with a learned per-latent gain g and a fixed
`shift` that the architecture owns (`[dictionary.options] shift = ...`), trained with an L1
penalty whose default coefficient (2.0) it declares. Nothing outside this file names it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from torch import Tensor, nn

from monosemantic.dictionaries.base import (
    Dictionary,
    DictionaryMeta,
    LossOutput,
    Penalty,
    TrainStepState,
    register_dictionary,
)
from monosemantic.utils.errors import ConfigError


class ToyOptions(BaseModel):
    model_config = {"extra": "forbid"}
    shift: float = Field(0.1, ge=0)


@register_dictionary("toy_gain")
class ToyGainDictionary(Dictionary):
    penalty = Penalty("l1_coefficient", "l1c", 2.0)
    Options = ToyOptions

    @classmethod
    def configure(cls, meta: DictionaryMeta) -> None:
        super().configure(meta)
        if meta.d_sae < 2:
            raise ConfigError("toy_gain needs d_sae >= 2")

    def __init__(self, cfg: DictionaryMeta) -> None:
        super().__init__(cfg)
        self.gain = nn.Parameter(torch.ones(cfg.d_sae))

    def encoder_dirs(self, idx: Tensor) -> Tensor:
        return self.W_enc[:, idx].T * self.gain[idx, None]

    def pre_acts(self, x: Tensor) -> Tensor:
        return (self._input(x) @ self.W_enc) * self.gain + self.b_enc - self.option("shift")

    def encode(self, x: Tensor) -> Tensor:
        return F.relu(self.pre_acts(x))

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
        mse = self.mse(x_hat, self._check_input(y, self.d_out, "target"))
        l1 = (f.float() @ self.W_dec.float().norm(dim=1)).mean()
        loss = mse + self.sparsity_coefficient(state, self.penalty_coefficient()) * l1
        return LossOutput(loss, x_hat, f=f, terms={"mse": mse.detach(), "l1": l1.detach()})
