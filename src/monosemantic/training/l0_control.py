"""A multiplicative controller that tunes the sparsity coefficient until the mean L0 hits a target.

Penalty-based dictionaries (relu, jumprelu, gated) do not let you choose L0 directly; sweeping the
coefficient by hand is the usual cost. The controller nudges log(coefficient) by
`gain * log(L0_ema / target)` every step: too dense raises the penalty, too sparse lowers it.
Everything stays a tensor so the step never waits on the device.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class L0Controller:
    def __init__(
        self, target_l0: float, gain: float = 0.02, ema: float = 0.9, device: torch.device | None = None
    ) -> None:
        self.target = float(target_l0)
        self.gain = gain
        self.ema = ema
        self.log_mult = torch.zeros((), dtype=torch.float64, device=device)
        self.l0_ema = torch.full((), math.nan, dtype=torch.float64, device=device)

    def multiplier(self) -> Tensor:
        return self.log_mult.exp()

    def update(self, l0: Tensor) -> None:
        l0 = l0.detach().double()
        self.l0_ema = torch.where(torch.isnan(self.l0_ema), l0, self.ema * self.l0_ema + (1 - self.ema) * l0)
        error = torch.log(self.l0_ema.clamp_min(1e-3) / self.target)
        self.log_mult = (self.log_mult + self.gain * error).clamp(-12.0, 12.0)

    def state_dict(self) -> dict:
        return {"log_mult": self.log_mult.cpu(), "l0_ema": self.l0_ema.cpu(), "target": self.target}

    def load_state_dict(self, state: dict) -> None:
        self.log_mult.copy_(state["log_mult"])
        self.l0_ema.copy_(state["l0_ema"])
