"""Data-dependent initialisation: the activation norm scale and the decoder bias.

Both are computed once on the first batches of the stream, before the first optimiser step.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


@torch.no_grad()
def geometric_median(x: Tensor, max_iter: int = 100, tol: float = 1e-6, eps: float = 1e-8) -> Tensor:
    """The point minimising the sum of Euclidean distances to the rows of `x` (Weiszfeld's algorithm).

    Robust to the heavy-tailed outlier tokens of LM activations, unlike the mean, which is why
    Towards Monosemanticity and SAELens start `b_dec` here.
    """
    x = x.double()
    median = x.mean(0)
    for _ in range(max_iter):
        dist = (x - median).norm(dim=1).clamp_min(eps)
        weights = 1.0 / dist
        new = (weights[:, None] * x).sum(0) / weights.sum()
        shift = (new - median).norm()
        median = new
        if shift <= tol * (median.norm() + eps):
            break
    return median.float()


@torch.no_grad()
def decoder_bias_init(y: Tensor, method: str) -> Tensor:
    """The `b_dec` starting point for targets `y` [N, d_out]: geometric_median | mean | zeros."""
    if method == "geometric_median":
        return geometric_median(y)
    if method == "mean":
        return y.float().mean(0)
    if method == "zeros":
        return torch.zeros(y.shape[1])
    raise ValueError(f"unknown b_dec_init {method!r}")


@torch.no_grad()
def norm_scale(x: Tensor, target: float | None = None) -> float:
    """The scalar s with mean ||s * x|| = target, sqrt(d) by default: makes one set of
    hyper-parameters fit every model.

    (Anthropic's April 2024 update and SAELens' `expected_average_only_in` use sqrt(d).)
    """
    mean_norm = x.float().norm(dim=-1).mean().item()
    if not math.isfinite(mean_norm) or mean_norm <= 0:
        return 1.0
    return (math.sqrt(x.shape[-1]) if target is None else target) / mean_norm
