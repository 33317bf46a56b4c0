"""Dead latents: the one definition, the training bookkeeping, the AuxK mask, and resampling.

**The definition** (`latent_liveness`, used by train, evaluate, analyze and the viewer): over N
tokens, a latent is *dead* when it fires on none of them, and *near dead* when it fires on fewer
than `NEAR_DEAD_DENSITY` x N of them (less than once in 100,000 tokens: too rare to read or to
score). Every report names its N. Training applies the rule to the last `train.dead_after_tokens`
tokens of the stream (`DeadLatentTracker`, which counts tokens since each latent last fired);
evaluate and analyze to the tokens they read. A sample smaller than `train.dead_after_tokens`
counts rare latents as dead, so compare dead fractions at the same N.

TopK-family dictionaries get the dead mask as an AuxK target (Gao et al. 2024); the others can
instead be *resampled*: pointed at inputs the dictionary reconstructs worst (Bricken et al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from monosemantic.dictionaries.base import Dictionary

NEAR_DEAD_DENSITY = 1e-5  # fires on fewer than 1 in 100,000 tokens


@dataclass(frozen=True)
class Liveness:
    """Which latents are dead or near dead over `tokens` tokens (see the module docstring)."""

    tokens: int
    dead: Tensor  # bool [d_sae]: fired on none of the tokens
    near_dead: Tensor  # bool [d_sae]: fired, on fewer than NEAR_DEAD_DENSITY x tokens

    @property
    def dead_fraction(self) -> float:
        return self.dead.double().mean().item() if self.dead.numel() else 0.0

    @property
    def near_dead_fraction(self) -> float:
        return self.near_dead.double().mean().item() if self.near_dead.numel() else 0.0

    def summary(self) -> dict[str, float | int]:
        """The three numbers every report carries: dead_fraction, near_dead_fraction, dead_tokens."""
        return {
            "dead_fraction": self.dead_fraction,
            "near_dead_fraction": self.near_dead_fraction,
            "dead_tokens": self.tokens,
        }


def latent_liveness(fire_counts: Tensor, tokens: int) -> Liveness:
    """The definition: `fire_counts[i]` = tokens (of `tokens`) on which latent i fired."""
    counts = fire_counts.detach().to(torch.float64)
    dead = counts == 0
    return Liveness(int(tokens), dead, ~dead & (counts < NEAR_DEAD_DENSITY * tokens))


class DeadLatentTracker:
    """Tokens since each latent last fired, plus firing counts for the density histogram."""

    def __init__(self, d_sae: int, dead_after_tokens: int, device: torch.device) -> None:
        self.dead_after_tokens = dead_after_tokens
        self.since_fired = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.fire_counts = torch.zeros(d_sae, dtype=torch.long, device=device)
        self.count_tokens = 0

    def update(self, counts: Tensor, n_tokens: int) -> None:
        """`counts[i]` = tokens of this batch on which latent i fired. No host sync."""
        self.since_fired = torch.where(counts > 0, 0, self.since_fired + n_tokens)
        self.fire_counts += counts
        self.count_tokens += n_tokens

    def dead_mask(self) -> Tensor:
        """Latents silent over the last `dead_after_tokens` tokens (the definition, on the stream)."""
        return self.since_fired >= self.dead_after_tokens

    def near_dead_mask(self) -> Tensor:
        """Live latents firing on fewer than NEAR_DEAD_DENSITY of the counted tokens (those since the
        last `reset_density`; a window shorter than `dead_after_tokens` reports none)."""
        if self.count_tokens < self.dead_after_tokens:
            return torch.zeros_like(self.since_fired, dtype=torch.bool)
        rare = latent_liveness(self.fire_counts, self.count_tokens).near_dead
        return rare & ~self.dead_mask()

    def density(self) -> Tensor:
        """Fraction of counted tokens on which each latent fired."""
        return self.fire_counts.double() / max(self.count_tokens, 1)

    def reset_density(self) -> None:
        self.fire_counts.zero_()
        self.count_tokens = 0

    def state_dict(self) -> dict:
        return {
            "since_fired": self.since_fired.cpu(),
            "fire_counts": self.fire_counts.cpu(),
            "count_tokens": self.count_tokens,
        }

    def load_state_dict(self, state: dict) -> None:
        self.since_fired.copy_(state["since_fired"])
        self.fire_counts.copy_(state["fire_counts"])
        self.count_tokens = int(state["count_tokens"])


@torch.no_grad()
def resample_dead(
    dic: Dictionary,
    optimizer: torch.optim.Optimizer,
    dead: Tensor,
    x: Tensor,
    y: Tensor,
    x_hat: Tensor,
) -> int:
    """Re-point dead latents at badly reconstructed inputs; returns how many were resampled.

    Inputs are drawn with probability proportional to their squared reconstruction loss; the
    decoder row becomes the unit-normalised target, the encoder column the input scaled to 0.2x
    the mean alive encoder norm, biases zero, and Adam's moments for those entries are reset so
    stale statistics do not throw them straight back.
    """
    idx = dead.nonzero().squeeze(1)
    if idx.numel() == 0:
        return 0
    loss = (y.float() - x_hat.float()).pow(2).sum(-1)
    weights = loss.pow(2)
    if not torch.isfinite(weights).all() or weights.sum() <= 0:
        weights = torch.ones_like(weights)
    pick = torch.multinomial(weights, idx.numel(), replacement=idx.numel() > weights.numel())
    x_in, y_out = x[pick].float(), y[pick].float()
    alive = ~dead
    enc_norm = dic.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    dec = y_out / y_out.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    enc = x_in / x_in.norm(dim=-1, keepdim=True).clamp_min(1e-8) * (0.2 * enc_norm)
    dic.reset_latents(idx, enc, dec)
    for name, axis in dic.latent_parameters().items():
        param = getattr(dic, name)
        for moment in optimizer.state.get(param, {}).values():
            if isinstance(moment, Tensor) and moment.shape == param.shape:
                moment.index_fill_(axis, idx, 0.0)
    return int(idx.numel())
