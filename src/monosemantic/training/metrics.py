"""Per-latent firing counts (every step, cheap) and the logged batch metrics (every `log_every` steps)."""

from __future__ import annotations

import torch
from torch import Tensor

from monosemantic.dictionaries.base import LossOutput


@torch.no_grad()
def latent_counts(out: LossOutput) -> Tensor:
    """Tokens of the batch on which each latent fired, [d_sae] int64.

    Sparse codes give this from their k*B coordinates; only dense architectures pay one pass
    over [B, d_sae], which also yields L0 (sum / B) and the dead-latent update.
    """
    if out.codes is not None:
        c = out.codes
        return torch.bincount(c.cols[c.vals > 0], minlength=c.d_sae)
    f = out.f.detach()
    return (f > 0).flatten(0, -2).sum(0)


@torch.no_grad()
def batch_metrics(out: LossOutput, y: Tensor, counts: Tensor, dead: Tensor) -> dict[str, float]:
    """loss, its terms, L0, fraction of variance unexplained and dead fraction (host syncs happen here)."""
    y = y.float()
    resid = (y - out.x_hat.detach().float()).pow(2).sum()
    total = (y - y.mean(0)).pow(2).sum().clamp_min(1e-12)
    row = {"loss": out.loss.detach().float()}
    row |= {name: value.detach().float() for name, value in out.terms.items()}
    row |= {
        "l0": counts.sum().double() / y.shape[0],
        "fvu": resid / total,
        "dead_fraction": dead.float().mean(),
    }
    return {k: float(v) for k, v in row.items()}
