"""A multiplicative controller that tunes the sparsity coefficient until the mean L0 hits a target.

Penalty-based dictionaries (relu, jumprelu, gated) do not let you choose L0 directly; sweeping the
coefficient by hand is the usual cost. The controller nudges log(coefficient) by
`gain * log(L0_ema / target)` every step: too dense raises the penalty, too sparse lowers it.
Everything stays a tensor so the step never waits on the device.

`landing` is the end-of-run check: a run whose L0 ends more than `TOLERANCE` from its target, or
with more than `MAX_DEAD` of its latents dead, says so in one line with what to change.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

GAIN = 0.02
START = 0.01


class L0Controller:
    def __init__(
        self,
        target_l0: float,
        gain: float | None = None,
        ema: float = 0.9,
        device: torch.device | None = None,
        start: float | None = None,
    ) -> None:
        gain = GAIN if gain is None else gain
        start = START if start is None else start
        self.target = float(target_l0)
        self.gain = gain
        self.ema = ema
        self.log_mult = torch.full((), math.log(start), dtype=torch.float64, device=device)
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


TOLERANCE = 0.1  # a target L0 counts as reached within 10%
MAX_DEAD = 0.1  # more dead latents than this is reported


def landing(
    name: str, target: float | None, l0: float, dead: float, dead_tokens: int, architecture: str
) -> str | None:
    """One line when the run missed its target L0 (by more than TOLERANCE) or left more than
    MAX_DEAD of its latents dead, saying by how much and what to change; None when it landed."""
    problems = []
    if target is not None and abs(l0 / target - 1) > TOLERANCE:
        problems.append(f"L0 ended at {l0:.1f}, {l0 / target - 1:+.0%} from target_l0 {target:g}")
    if dead > MAX_DEAD:
        problems.append(f"{dead:.0%} of latents are dead (silent over the last {dead_tokens:,} tokens)")
    if not problems:
        return None
    if dead > MAX_DEAD:
        advice = (
            'train longer (train.tokens) or with a lower train.lr, and keep train.dead_latents = "auxk" '
            "(the default) so dead latents are pulled back"
        )
    elif target is not None and l0 > target:
        advice = "train longer (train.tokens) or start from a larger sparsity coefficient, so the controller can settle"
    else:
        advice = "train longer (train.tokens) or start from a smaller sparsity coefficient, so the controller can settle"
    return f"{name} ({architecture}): " + " and ".join(problems) + f"; {advice}"
