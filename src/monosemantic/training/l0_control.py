"""A controller that tunes the sparsity coefficient until the mean L0 hits a target.

Penalty-based dictionaries (relu, jumprelu, gated, and the CLT/crosscoder with those rules) do not
let you choose L0 directly; sweeping the coefficient by hand is the usual cost. The controller sets

    log(multiplier) = log(start) + I + KP * (e + KD * slope),   I += KI * e,   e = log(L0 / target)

with L0 an exponential average and `slope` the smoothed per-step change of log L0. Why each term:
the encoder answers a change of coefficient tens of steps late, and while it is still learning L0
rises whatever the penalty is. An integral alone (the first controller, `I += 0.02 e`) wound the
coefficient up about 27x in that phase and then overshot: a Gated SAE ended at 3x its target L0, a
JumpReLU 30% below with a fifth of its latents dead (a latent pushed under its threshold on every
token gets no gradient back). The proportional term answers at once and lets go as the error
closes; the slope term brakes when L0 is already falling towards the target fast enough; the
integral, slow, removes what is left. `start` is where the multiplier begins, a fraction of the
configured coefficient that each architecture (or its activation rule) declares as
`controller_start`, measured to sit below its equilibrium so that L0 approaches from denser codes
(`benchmarks/bench_target_l0.py`). Everything stays a tensor so the step never waits on the device.

`landing` is the end-of-run check: a run whose L0 ends more than `TOLERANCE` from its target, or
with more than `MAX_DEAD` of its latents dead, says so in one line with what to change.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

KP = 1.0  # proportional gain on the log error
KI = 0.01  # integral gain per step
KD = 500.0  # steps of the current trend added to the error (brakes an approach that would overshoot)
L0_EMA = 0.9  # smoothing of the measured L0
SLOPE_EMA = 0.98  # smoothing of its per-step change (the trend must not follow batch noise)
LIMIT = 12.0  # |log multiplier| at most this


class L0Controller:
    def __init__(self, target_l0: float, start: float = 0.01, device: torch.device | None = None) -> None:
        self.target = float(target_l0)
        self.start = math.log(start)
        kw = {"dtype": torch.float64, "device": device}
        self.log_mult = torch.full((), self.start, **kw)
        self.integral = torch.zeros((), **kw)
        self.l0_ema = torch.full((), math.nan, **kw)
        self.slope = torch.zeros((), **kw)

    def multiplier(self) -> Tensor:
        return self.log_mult.exp()

    def update(self, l0: Tensor) -> None:
        l0 = l0.detach().double()
        first = torch.isnan(self.l0_ema)
        previous = torch.log(torch.where(first, l0, self.l0_ema).clamp_min(1e-3))
        self.l0_ema = torch.where(first, l0, L0_EMA * self.l0_ema + (1 - L0_EMA) * l0)
        log_l0 = torch.log(self.l0_ema.clamp_min(1e-3))
        self.slope = SLOPE_EMA * self.slope + (1 - SLOPE_EMA) * (log_l0 - previous)
        error = log_l0 - math.log(self.target)
        self.integral = (self.integral + KI * error).clamp(-LIMIT, LIMIT)
        self.log_mult = (self.start + self.integral + KP * (error + KD * self.slope)).clamp(-LIMIT, LIMIT)

    def state_dict(self) -> dict:
        return {
            "log_mult": self.log_mult.cpu(),
            "integral": self.integral.cpu(),
            "l0_ema": self.l0_ema.cpu(),
            "slope": self.slope.cpu(),
            "target": self.target,
        }

    def load_state_dict(self, state: dict) -> None:
        self.log_mult.copy_(state["log_mult"])
        self.l0_ema.copy_(state["l0_ema"])
        if "integral" in state:
            self.integral.copy_(state["integral"])
            self.slope.copy_(state["slope"])
        else:  # a checkpoint of the integral-only controller: its multiplier was all integral
            self.integral.copy_(self.log_mult - self.start)


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
